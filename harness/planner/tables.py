"""The plan as rich tables (steady answers, policies compared, curtailments) and a surplus line."""

from __future__ import annotations

from rich.table import Table

from harness.planner.plan import PlanResult
from harness.planner.schedule import per_kind
from harness.planner.steady import SteadyRow


def _num(x: float | None, fmt: str = ",.0f") -> str:
    return "—" if x is None or x != x else format(x, fmt)


def _table(title: str, columns: list[str], left: tuple[str, ...]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="left" if c in left else "right")
    return t


def shown_rows(rows: list[SteadyRow], most: int = 12) -> list[SteadyRow]:
    """An exported fit has a setting every few watts: print an even spread of them per workload,
    plus every tagged row (Max-P, Max-Q, default, latency targets)."""
    out = []
    for label in dict.fromkeys(r.workload for r in rows):
        mine = [r for r in rows if r.workload == label]
        step = max(1, -(-len(mine) // most))
        out += [r for i, r in enumerate(mine) if r.tags or i % step == 0 or i == len(mine) - 1]
    return out


def steady(r: PlanResult) -> Table:
    multi = len(r.fleet.workloads) > 1
    labels = ", ".join(w.label for w in r.fleet.workloads)
    cols = (["workload"] if multi else []) + [
        "setting",
        "GPU W",
        "site W/GPU",
        "tok/s/GPU",
        "Mtok/MWh",
        "site Mtok/s",
        "GPUs on budget",
        "Mtok/s on budget",
        "$/Mtok",
        "$/Mtok +capex",
        "",
    ]
    t = _table(
        f"{r.site.name}: {r.fleet.gpus:,} GPUs ({labels}), provisioned at {r.site.provision} draw",
        cols,
        ("workload", ""),
    )
    shown = shown_rows(r.steady)
    if len(shown) < len(r.steady):
        t.caption = (
            f"{len(shown)} of {len(r.steady)} rows shown (the tagged ones and an even spread); summary.json has all"
        )
    for row in shown:
        sized = None if row.sized_tokens_per_s is None else row.sized_tokens_per_s / 1e6
        t.add_row(
            *([row.workload] if multi else []),
            f"{row.setting:g}",
            _num(row.gpu_w),
            _num(row.site_kw_per_gpu * 1e3),
            _num(row.tokens_per_s_per_gpu),
            _num(row.mtok_per_mwh),
            _num(row.installed_tokens_per_s / 1e6, ",.1f"),
            _num(row.sized_gpus),
            _num(sized, ",.1f"),
            _num(row.usd_per_mtok_energy, ".2g"),
            _num(row.usd_per_mtok_with_capex, ".2g"),
            " ".join(row.tags),
        )
    return t


def policies(r: PlanResult) -> Table:
    title = f"schedule over {len(r.schedule.frame)} intervals of {r.horizon.step_h:g} h, objective {r.objective}"
    if r.objective != "tokens":
        title += f", target {r.target_gtok:,.0f} Gtok"
    cols = [
        "policy",
        "Gtok",
        "GPU MWh",
        "import MWh",
        "export MWh",
        "energy $",
        "$/Mtok",
        "$/Mtok +capex",
        "t CO2",
    ]
    t = _table(title, cols, ("policy",))
    for name, res in {"plan": r.schedule, **{f"fixed {k}": v for k, v in r.baselines.items()}}.items():
        x = res.totals
        t.add_row(
            name,
            _num(x["tokens_gtok"]),
            _num(x["gpu_energy_mwh"], ",.1f"),
            _num(x["grid_import_mwh"], ",.1f"),
            _num(x["export_mwh"], ",.1f"),
            _num(x["energy_cost_usd"]),
            _num(x["usd_per_mtok"], ".2g"),
            _num(x["usd_per_mtok_with_capex"], ".2g"),
            _num(x["carbon_kg"] / 1e3, ",.1f"),
        )
    gap = r.schedule.totals["relaxation_gap"]
    if r.model is not None and r.model.integer:
        t.caption = "whole units solved exactly (HiGHS MIP)"
    elif gap > 0:
        t.caption = (
            f"whole GPUs{' (by unit)' if r.site.schedule_unit == 'unit' else ''}: the plan makes {gap:.2g} "
            f"less than its LP relaxation ({r.schedule.totals['lp_tokens_gtok']:,.0f} Gtok)"
        )
    return t


def kinds(r: PlanResult) -> Table:
    """Per GPU kind (workload): which the plan runs at Max-P, which at Max-Q, which it parks in stress."""
    cols = ["kind", "GPUs", "Gtok", "GPU MWh", "Mtok/MWh", "at Max-P", "at Max-Q", "parked", "parked in stress"]
    t = _table("per kind, share of GPU-hours", cols, ("kind",))
    pct = lambda x: "—" if x is None or x != x else f"{x:.0%}"  # noqa: E731
    for k in per_kind(r.fleet, r.schedule.frame, r.horizon.step_h):
        t.add_row(
            k["workload"], _num(k["gpus"]), _num(k["tokens_gtok"]), _num(k["gpu_energy_mwh"], ",.1f"),
            _num(k["mtok_per_mwh"]), pct(k["max_p_share"]), pct(k["max_q_share"]), pct(k["parked_share"]),
            pct(k["parked_share_in_stress"]),
        )  # fmt: skip
    return t


def curtailments(r: PlanResult, most: int = 12) -> Table:
    cols = ["start", "hours", "short MWh", "battery MWh", "settings MWh", "Gtok lost", "Gtok lost, default"]
    t = _table(f"curtailments (offered power below the default draw, {r.reference_mw:.2f} MW)", cols, ("start",))
    shown = r.curtailments
    if len(shown) > most:  # a year has hundreds: the largest, and the count and totals of all
        shown = sorted(sorted(shown, key=lambda e: -e.shortfall_mwh)[:most], key=lambda e: e.start)
        every = r.curtailments
        t.caption = (
            f"the {most} largest of {len(every)} events ({sum(e.hours for e in every):,.0f} h, "
            f"{sum(e.shortfall_mwh for e in every):,.0f} MWh short, "
            f"{sum(e.tokens_lost_gtok for e in every):,.0f} Gtok lost against "
            f"{sum(e.tokens_lost_default_gtok for e in every):,.0f} at the default setting); curtailments.csv has all"
        )
    for e in shown:
        t.add_row(
            str(e.start),
            f"{e.hours:g}",
            f"{e.shortfall_mwh:.1f}",
            f"{e.battery_mwh:.1f}",
            f"{e.settings_mwh:.1f}",
            _num(e.tokens_lost_gtok),
            _num(e.tokens_lost_default_gtok),
        )
    return t


def render(r: PlanResult) -> list[Table | str]:
    """Everything the command prints, in order."""
    out: list[Table | str] = [steady(r)]
    if r.schedule is None:
        return out
    out.append(policies(r))
    if len(r.fleet.workloads) > 1:
        out.append(kinds(r))
    if r.curtailments:
        out.append(curtailments(r))
    if r.surplus:
        x = r.surplus
        worth = (
            f"worth {x['worth']:,.0f} {x['worth_unit']} to the plan"
            if x["worth"] is not None
            else f"needed for the target: without it the plan falls {x['shortfall_without_gtok']:,.0f} Gtok short"
        )
        out.append(
            f"surplus: {x['surplus_mwh']:.1f} MWh offered beyond the default draw in {x['intervals']} "
            f"intervals; {x['extra_gpu_mwh']:.1f} MWh drawn by the GPUs above it, {x['stored_mwh']:.1f} MWh "
            f"stored; {worth}"
        )
    return out
