"""From a solved model to the schedule: whole-unit counts per setting, and totals summed from them.

The LP may run a fraction of a GPU (or node). Counts are made whole by rounding each setting's
count down and passing the remainder to the next lower setting (the last remainder is parked), so
the whole schedule never draws more than the LP did; the power it no longer draws is not imported
(or not generated; where neither was, as when the battery alone feeds the GPUs, it is
``unused_mw``). Every column and total of the schedule comes from these whole counts; the LP's own
tokens are kept beside them and their difference is the relaxation gap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.planner.horizon import Scenario, ScenarioResult
from harness.planner.lp import ScheduleModel, Solution


def whole_units(y: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Round vertices × intervals counts (vertices in rising power) to whole units, pushing each
    fraction down to the next lower allowed setting."""
    out = np.zeros_like(y)
    carry = np.zeros(y.shape[1])
    for v in np.flatnonzero(allowed)[::-1]:
        c = y[v] + carry
        out[v] = np.floor(c + 1e-6)
        carry = np.clip(c - out[v], 0.0, None)
    return out


def count_column(setting: float) -> str:
    return f"gpus@{setting:g}"


def _take(amount: np.ndarray, supplies: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Remove ``amount`` from the supplies in order (power the whole counts no longer draw); what
    none of them can shed is returned as the remainder."""
    left = amount.copy()
    out = []
    for s in supplies:
        cut = np.minimum(left, s)
        out.append(s - cut)
        left -= cut
    return out, left


def scenario_result(m: ScheduleModel, sc: Scenario, sol: Solution) -> ScenarioResult:
    site, fleet, h = m.site, m.fleet, m.h
    T, dt = m.T, h.step_h
    multi = len(fleet.workloads) > 1
    cols: dict[str, np.ndarray] = {}
    released = np.zeros(T)
    tokens = np.zeros(T)
    lp_tokens = np.zeros(T)
    gpu_mw = np.zeros(T)
    gpu_mean = np.zeros(T)
    work: dict[str, np.ndarray] = {}
    for k, wf in enumerate(fleet.workloads):
        g, v, y = m.units[k], m.verts[k], sol.y[k]
        whole = whole_units(y, sol.allowed[k])
        gpus = whole * g.gpus
        pre = f"w{k}_" if multi else ""
        for j in np.flatnonzero(sol.allowed[k]):
            work[pre + count_column(wf.settings[v[j]])] = gpus[j]
        running = gpus.sum(axis=0)
        unit_mw = g.gpus * wf.site_w[v] * 1e-6
        unit_gtok_h = g.gpus * wf.tokens_per_s[v] * 3600e-9
        mw = (whole * unit_mw[:, None]).sum(axis=0)
        tok = (whole * unit_gtok_h[:, None]).sum(axis=0) * dt
        mean = (gpus * wf.site_mean_w[v][:, None]).sum(axis=0) * 1e-6
        weighted = (gpus * wf.settings[v][:, None]).sum(axis=0)
        work[pre + "gpus_running"] = running
        work[pre + "gpus_off"] = wf.gpus - running
        work[pre + "setting_mean"] = np.where(running > 0, weighted / np.maximum(running, 1), np.nan)
        work[pre + "gpu_mw"] = mw
        work[pre + "gpu_mean_mw"] = mean
        work[pre + "tokens_gtok"] = tok
        work[pre + "lp_tokens_gtok"] = (y * unit_gtok_h[:, None]).sum(axis=0) * dt
        released += (y * unit_mw[:, None]).sum(axis=0) - mw
        tokens += tok
        lp_tokens += work[pre + "lp_tokens_gtok"]
        gpu_mw += mw
        gpu_mean += mean
    if multi:
        work |= {"gpu_mw": gpu_mw, "gpu_mean_mw": gpu_mean, "tokens_gtok": tokens, "lp_tokens_gtok": lp_tokens}
    (grid, *gens), spill = _take(np.clip(released, 0.0, None), [sol.grid, *sol.generation])
    cols["import_available_mw"] = h.import_mw if sc.import_mw is None else sc.import_mw
    cols["grid_import_mw"] = grid
    cols["export_mw"] = sol.export
    for (name, *_rest), gen in zip(h.generation, gens, strict=True):
        cols[f"generation_{name}_mw"] = gen
    cols["generation_mw"] = sum(gens, np.zeros(T))
    cols["generation_available_mw"] = h.generation_mw
    cols["price_per_mwh"] = h.price
    cols["carbon_kg_per_mwh"] = h.carbon
    cols["stress"] = h.stress.astype(int)
    # a fractional GPU the battery (or required export) fed, which the whole schedule leaves unused
    cols["unused_mw"] = spill
    if sol.soc is not None:
        b = site.battery
        cols["battery_dispatch_mw"] = sol.dispatch
        cols["battery_store_mw"] = sol.store
        cols["soc_mwh"] = sol.soc + b.energy_mwh * b.soc_min
    frame = pd.DataFrame(cols | work, index=h.index)
    frame = frame.mask(frame.abs() < 1e-9, 0.0)
    totals = schedule_totals(frame, site, fleet, h.generation, dt)
    if sc.soft and sc.target_gtok is not None:
        totals["target_shortfall_gtok"] = sol.shortfall_gtok
    return ScenarioResult(sc.key, sc.objective, frame, totals, sol.objective_value)


def schedule_totals(f: pd.DataFrame, site, fleet, generation, dt: float) -> dict[str, float]:
    """The totals of a schedule, from its columns alone (and the site's prices): what summary.json
    reports, and what a reader of schedule.csv can re-derive."""
    export_value = f["price_per_mwh"] if site.grid.export_value_per_mwh is None else site.grid.export_value_per_mwh
    gen_cost = sum((f[f"generation_{g[0]}_mw"] * g[2]).sum() for g in generation)
    gen_carbon = sum((f[f"generation_{g[0]}_mw"] * g[3]).sum() for g in generation)
    cost = float((f["grid_import_mw"] * f["price_per_mwh"] - f["export_mw"] * export_value).sum() + gen_cost) * dt
    carbon = float(((f["grid_import_mw"] - f["export_mw"]) * f["carbon_kg_per_mwh"]).sum() + gen_carbon) * dt
    tok = float(f["tokens_gtok"].sum())
    lp_tok = float(f["lp_tokens_gtok"].sum())
    capex = sum(wf.capex_per_gpu_h * wf.gpus for wf in fleet.workloads) * len(f) * dt
    return {
        "tokens_gtok": tok,
        "lp_tokens_gtok": lp_tok,
        "relaxation_gap": 1.0 - tok / lp_tok if lp_tok > 0 else 0.0,
        "gpu_energy_mwh": float(f["gpu_mw"].sum() * dt),
        "gpu_energy_mean_mwh": float(f["gpu_mean_mw"].sum() * dt),
        "grid_import_mwh": float(f["grid_import_mw"].sum() * dt),
        "export_mwh": float(f["export_mw"].sum() * dt),
        "generation_mwh": float(f["generation_mw"].sum() * dt),
        "energy_cost_usd": cost,
        "carbon_kg": carbon,
        "usd_per_mtok": cost / (tok * 1e3) if tok > 0 else float("nan"),
        "usd_per_mtok_with_capex": (cost + capex) / (tok * 1e3) if tok > 0 and capex > 0 else float("nan"),
        "g_co2_per_mtok": carbon * 1e3 / (tok * 1e3) if tok > 0 else float("nan"),
    }


def solve(site, fleet, h, scenarios: list[Scenario]) -> tuple[ScheduleModel, dict[str, ScenarioResult]]:
    """Build the model once and solve each scenario in order (each from the previous basis)."""
    m = ScheduleModel(site, fleet, h)
    return m, {sc.key: scenario_result(m, sc, m.solve(sc)) for sc in scenarios}


def _kind(wf, frame: pd.DataFrame, pre: str, dt: float, stress: np.ndarray) -> dict:
    n = len(frame)

    def share(setting: float) -> float:
        c = pre + count_column(setting)
        return float(frame[c].sum() / (wf.gpus * n)) if c in frame else 0.0

    tok = float(frame[pre + "tokens_gtok"].sum())
    mwh = float(frame[pre + "gpu_mw"].sum() * dt)
    off = frame[pre + "gpus_off"].to_numpy()
    return {
        "workload": wf.label,
        "gpus": wf.gpus,
        "tokens_gtok": tok,
        "gpu_energy_mwh": mwh,
        "mtok_per_mwh": tok * 1e3 / mwh if mwh > 0 else float("nan"),
        "max_p_share": share(wf.settings[wf.max_p_index]),
        "max_q_share": share(wf.settings[wf.max_q_index]),
        "parked_share": float(off.sum() / (wf.gpus * n)),
        "parked_share_in_stress": float(off[stress].sum() / (wf.gpus * stress.sum())) if stress.any() else None,
    }


def per_kind(fleet, frame: pd.DataFrame, dt: float) -> list[dict]:
    """Per workload (GPU kind): what it made and drew, and how its GPU-hours split between Max-P,
    Max-Q and parked, overall and in stress intervals: which kind the plan runs hard, which it
    runs efficiently, which it parks when the grid is short."""
    multi = len(fleet.workloads) > 1
    stress = frame["stress"].to_numpy() == 1
    return [_kind(wf, frame, f"w{k}_" if multi else "", dt, stress) for k, wf in enumerate(fleet.workloads)]
