"""`tokbench plan`: site + curves (+ grid signal) → steady answers, a schedule, and what it is worth.

The schedule is compared with three fixed policies run on the same battery (every GPU at Max-P, at
Max-Q, or at the default setting, GPUs switched off to fit the power): the one at Max-P re-solved
from the plan's basis in the plan's model, the others in a smaller model without the hull's columns
on a second thread while the plan solves.
Curtailments are the intervals where the grid and on-site generation offer less than the fleet
draws at its default setting; for each the report splits the shortfall into what the battery
covered and what lower settings or parked GPUs covered, and counts the tokens lost. A surplus is
power offered beyond that draw; its worth is what the plan gains from it, found by solving again
with the surplus taken away (a what-if that cannot reach the plan's token target says so: the
surplus is needed for it).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from harness.errors import UsageError
from harness.planner.capacity import Fleet, build_fleet
from harness.planner.grid import load_grid
from harness.planner.horizon import Horizon, Scenario, ScenarioResult, build_horizon, check_objective
from harness.planner.lp import ScheduleModel
from harness.planner.schedule import scenario_result
from harness.planner.site import Site, load_site
from harness.planner.steady import SteadyRow, best_settings, steady_table

if TYPE_CHECKING:
    from highspy import HighsBasis

BASELINES = ("max_p", "max_q", "default")
MAIN = "plan"
NO_SURPLUS = "no_surplus"


@dataclass(frozen=True)
class Curtailment:
    start: pd.Timestamp
    hours: float
    shortfall_mwh: float
    battery_mwh: float  # net battery discharge during the event
    settings_mwh: float  # GPU power given up (lower settings or parked GPUs) against the default draw
    tokens_lost_gtok: float  # against the whole fleet at its default setting
    tokens_lost_default_gtok: float  # what the fixed default-setting policy lost in the same intervals


@dataclass(frozen=True)
class PlanResult:
    site: Site
    fleet: Fleet
    steady: list[SteadyRow]
    best: dict[str, dict[str, float]]
    objective: str = "tokens"
    target_gtok: float | None = None
    horizon: Horizon | None = None
    schedule: ScenarioResult | None = None
    baselines: dict[str, ScenarioResult] = field(default_factory=dict)
    curtailments: list[Curtailment] = field(default_factory=list)
    surplus: dict[str, float] = field(default_factory=dict)
    whatif: ScenarioResult | None = None  # the plan with the surplus taken away
    model: ScheduleModel | None = None
    reference_mw: float = 0.0


def reference_draw_mw(fleet: Fleet) -> float:
    """The fleet at its default setting, capped by the facility budget: the draw a curtailment cuts into."""
    d = fleet.draw_mw("default")
    return min(d, fleet.budget_mw) if fleet.budget_mw is not None else d


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def curtailments(h: Horizon, fleet: Fleet, sched: ScenarioResult, default: ScenarioResult | None) -> list[Curtailment]:
    ref_mw = reference_draw_mw(fleet)
    ref_rate = sum(wf.gpus * wf.tokens_per_s[wf.default_index] for wf in fleet.workloads) * 3600 / 1e9
    # a fleet capped by its budget makes proportionally less at its default setting
    ref_rate *= ref_mw / fleet.draw_mw("default")
    f = sched.frame
    supply = f["import_available_mw"].to_numpy() + h.generation_mw
    short = np.clip(ref_mw - supply, 0.0, None)
    batt = (f["battery_dispatch_mw"] - f["battery_store_mw"]).clip(lower=0).to_numpy() if "soc_mwh" in f else 0 * short
    settings = np.clip(ref_mw - f["gpu_mw"].to_numpy(), 0.0, None)
    tokens = f["tokens_gtok"].to_numpy()
    base = default.frame["tokens_gtok"].to_numpy() if default is not None else np.full(len(tokens), np.nan)
    out = []
    for a, b in _runs(short > 1e-6 * max(ref_mw, 1e-9)):
        hrs = h.step_h
        out.append(
            Curtailment(
                start=h.index[a],
                hours=(b - a) * hrs,
                shortfall_mwh=float(short[a:b].sum() * hrs),
                battery_mwh=float(batt[a:b].sum() * hrs),
                settings_mwh=float(settings[a:b].sum() * hrs),
                tokens_lost_gtok=float(ref_rate * (b - a) * hrs - tokens[a:b].sum()),
                tokens_lost_default_gtok=float(ref_rate * (b - a) * hrs - base[a:b].sum()),
            )
        )
    return out


def _gain(r: ScenarioResult, value_per_mtok: float | None, target: float | None) -> float:
    """What a schedule is worth in its objective's unit, higher is better: tokens; minus cost (plus
    the tokens' value when they are priced instead of targeted); minus carbon."""
    if r.objective == "tokens":
        return r.totals["tokens_gtok"]
    if r.objective == "cost":
        value = r.totals["tokens_gtok"] * 1e3 * value_per_mtok if value_per_mtok and target is None else 0.0
        return value - r.totals["energy_cost_usd"]
    return -r.totals["carbon_kg"]


def _settings(fleet: Fleet, which: str) -> tuple[int, ...]:
    return tuple(wf.index(which) for wf in fleet.workloads)


def surplus_use(h: Horizon, ref_mw: float, sched: ScenarioResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per interval: power offered beyond the reference draw, the part of it the GPUs drew above that
    draw, and the part that charged the battery (only what the surplus left after the GPUs)."""
    f = sched.frame
    surplus = np.clip(h.supply_mw - ref_mw, 0.0, None)
    extra = np.minimum(np.clip(f["gpu_mw"].to_numpy() - ref_mw, 0.0, None), surplus)
    store = f["battery_store_mw"].to_numpy() if "battery_store_mw" in f else np.zeros(len(f))
    return surplus, extra, np.minimum(store, surplus - extra)


def _surplus(h, ref_mw, mask, sched, without, value_per_mtok, target, objective) -> dict[str, float | str | None]:
    surplus, extra, stored = surplus_use(h, ref_mw, sched)
    hrs = h.step_h
    short = without.totals.get("target_shortfall_gtok", 0.0)
    met = short <= 1e-6 * max(target or 0.0, 1.0)
    return {
        "surplus_mwh": float(surplus.sum() * hrs),
        "intervals": int(mask.sum()),
        "stored_mwh": float(stored.sum() * hrs),
        "extra_gpu_mwh": float(extra.sum() * hrs),
        # what the plan gains from the surplus: more tokens, or less cost or carbon; none when the
        # target cannot be reached without it (then the shortfall says how much it is needed)
        "worth": float(_gain(sched, value_per_mtok, target) - _gain(without, value_per_mtok, target)) if met else None,
        "worth_unit": {"tokens": "Gtok", "cost": "USD", "carbon": "kg CO2"}[objective],
        "shortfall_without_gtok": 0.0 if met else float(short),
    }


def _solve(model: ScheduleModel, sc: Scenario, start: HighsBasis | None = None) -> ScenarioResult:
    return scenario_result(model, sc, model.solve(sc, start))


def _policy(key: str) -> Scenario:
    return Scenario(key, "tokens", only=key)


def _split_policies(
    fleet: Fleet, done: dict[str, ScenarioResult], integer: bool
) -> tuple[list[str], list[str], dict[str, str]]:
    """Which fixed policies to solve where: those at Max-P's settings from the plan's basis in the
    plan's model (where power is ample the plan runs mostly at Max-P, so that is a few thousand
    dual simplex iterations: a quarter of a cold solve), the others cold in the fixed policies'
    smaller model, as every policy of a MIP (no basis to start from). A policy at the same settings
    as another (Max-P is often the default) is that one."""
    warm: list[str] = []
    cold: list[str] = []
    same: dict[str, str] = {}
    for k in BASELINES:
        if k in done:
            continue
        twin = [j for j in (*done, *warm, *cold) if _settings(fleet, j) == _settings(fleet, k)]
        if twin:
            same[k] = twin[0]
        elif not integer and _settings(fleet, k) == _settings(fleet, "max_p"):
            warm.append(k)
        else:
            cold.append(k)
    return warm, cold, same


def _solve_each(model: ScheduleModel, keys: list[str]) -> dict[str, ScenarioResult]:
    return {k: _solve(model, _policy(k)) for k in keys}


def plan(
    site_path: Path,
    grid_path: Path | None = None,
    objective: str = "tokens",
    token_target_gtok: float | None = None,
    compare: bool = True,
    background: Callable[[], object] | None = None,
) -> PlanResult:
    """Answer the steady questions and, given a grid signal, plan the schedule over its horizon.

    ``background`` is work the caller needs next (the CLI imports its plotting library), run on the
    comparison thread once its solves are done, while the plan's own solves still run."""
    check_objective(objective)
    site = load_site(site_path)
    fleet = build_fleet(site)
    rows = steady_table(site, fleet)
    result = PlanResult(site=site, fleet=fleet, steady=rows, best=best_settings(rows), objective=objective)
    grid_path = grid_path or site.grid.file
    if grid_path is None:
        return result
    grid = load_grid(grid_path, tuple(g.column for g in site.generation if g.column))
    h = build_horizon(site, fleet, grid)
    model = ScheduleModel(site, fleet, h)
    target = token_target_gtok or site.token_target_gtok
    needs_target = objective == "carbon" or (objective == "cost" and not site.token_value_per_mtok)
    done: dict[str, ScenarioResult] = {}
    warm, cold, same = _split_policies(fleet, {}, model.integer) if compare else ([], [], {})
    # the policies not started from the plan's basis solve faster in a model without the hull's columns
    fixed = ScheduleModel(site, fleet, h, hull=False) if cold or (target is None and needs_target) else None
    if target is None and needs_target:
        # same tokens as the default setting makes, at least cost or carbon
        done["default"] = _solve(fixed, _policy("default"))
        target = done["default"].totals["tokens_gtok"] * (1 - 1e-9)
        if compare:
            warm, cold, same = _split_policies(fleet, done, model.integer)
    ref_mw = reference_draw_mw(fleet)
    surplus_mask = h.supply_mw > ref_mw * (1 + 1e-6)
    surplus: dict = {}
    without = None
    # the cold policies solve on a second thread while the plan does (HiGHS lets go of the GIL); not
    # for MIPs, whose solver runs its own parallel tasks
    with ThreadPoolExecutor(max_workers=1) as pool:
        policies = None
        if cold and not model.integer:
            policies = pool.submit(_solve_each, fixed, cold)
        elif cold:
            done |= _solve_each(fixed, cold)
        if background is not None:
            pool.submit(background)  # a failure shows where the caller does the work itself
        sched = _solve(model, Scenario(MAIN, objective, target_gtok=target))
        start = None if model.integer else model.basis()
        for k in warm:
            done[k] = _solve(model, _policy(k), start)
        if compare and surplus_mask.any():
            clipped = np.where(surplus_mask, np.clip(ref_mw - h.generation_mw, 0.0, h.import_mw), h.import_mw)
            whatif = Scenario(NO_SURPLUS, objective, target_gtok=target, import_mw=clipped, soft=True)
            without = _solve(model, whatif, start)
            surplus = _surplus(h, ref_mw, surplus_mask, sched, without, site.token_value_per_mtok, target, objective)
        if policies is not None:
            done |= policies.result()
    done |= {k: replace(done[j], key=k) for k, j in same.items()}
    bases = {k: done[k] for k in BASELINES if k in done}
    return PlanResult(
        site=site,
        fleet=fleet,
        steady=rows,
        best=result.best,
        objective=objective,
        target_gtok=target,
        horizon=h,
        schedule=sched,
        baselines=bases,
        curtailments=curtailments(h, fleet, sched, bases.get("default")),
        surplus=surplus,
        whatif=without,
        model=model,
        reference_mw=ref_mw,
    )


def export_network(result: PlanResult, path: Path) -> None:
    """Write the plan as a solved PyPSA network (NetCDF), so a utility can load the factory's
    flexibility into its own study with ``pypsa.Network(path)``; its objective is the plan's."""
    import warnings

    from harness.planner.network import PYPSA_OPTIONS, solve_reference, unsupported

    if result.model is None:
        raise UsageError("there is no network to export: the plan had no grid signal")
    missing = unsupported(result.site)
    if missing:
        raise UsageError(f"--export-network writes the continuous PyPSA model, which lacks {', '.join(missing)}")
    import pypsa

    main = Scenario(MAIN, result.objective, target_gtok=result.target_gtok)
    n = solve_reference(result.site, result.fleet, result.horizon, [main])
    with pypsa.option_context(*PYPSA_OPTIONS), warnings.catch_warnings():
        # pandas deprecation notices raised inside PyPSA's own export code
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        model = getattr(n, "model", None)
        if model is not None:
            model.solver_model = None
        try:
            n.export_to_netcdf(str(path))
        except OSError as e:
            raise UsageError(f"cannot write {path}: {e.strerror or e}") from e
