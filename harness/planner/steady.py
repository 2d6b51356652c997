"""Steady questions, no grid signal needed: at a fixed site power, what each setting makes and costs.

Two fleets per setting: the installed one (its GPU count, as many running as the budget powers) and
one sized to the power (as many GPUs as the budget powers at that setting: capacity at Max-Q vs
Max-P). Energy is billed at the mean draw; capacity is counted at the provisioned draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.planner.fleet import Fleet, WorkloadFleet
from harness.planner.site import Site


@dataclass(frozen=True)
class SteadyRow:
    workload: str
    setting: float
    gpu_w: float  # provisioned per-GPU draw
    site_kw_per_gpu: float
    tokens_per_s_per_gpu: float
    mtok_per_mwh: float  # at the meter, mean draw
    installed_running: int
    installed_tokens_per_s: float
    sized_gpus: int | None  # GPUs the budget powers at this setting
    sized_tokens_per_s: float | None
    usd_per_mtok_energy: float
    usd_per_mtok_with_capex: float | None
    tags: tuple[str, ...]


def _rows(site: Site, wf: WorkloadFleet, budget_mw: float | None) -> list[SteadyRow]:
    rows = []
    named = (("max-p", wf.max_p_index), ("max-q", wf.max_q_index), ("default", wf.default_index))
    for i, s in enumerate(wf.settings):
        tps = float(wf.tokens_per_s[i])
        fits = int(budget_mw * 1e6 // wf.site_w[i]) if budget_mw is not None else None
        running = wf.gpus if fits is None else min(wf.gpus, fits)
        mtok_per_h = tps * 3600 / 1e6
        energy_usd_h = site.price_per_mwh * float(wf.site_mean_w[i]) * 1e-6  # per GPU-hour
        per_mtok = energy_usd_h / mtok_per_h if mtok_per_h > 0 else float("inf")
        capex = (energy_usd_h + wf.capex_per_gpu_h) / mtok_per_h if site.capex and mtok_per_h > 0 else None
        rows.append(
            SteadyRow(
                workload=wf.label,
                setting=float(s),
                gpu_w=float(wf.gpu_w[i]),
                site_kw_per_gpu=float(wf.site_w[i] / 1e3),
                tokens_per_s_per_gpu=tps,
                mtok_per_mwh=tps * 3600 / 1e6 / (float(wf.site_mean_w[i]) * 1e-6),
                installed_running=running,
                installed_tokens_per_s=running * tps,
                sized_gpus=fits,
                sized_tokens_per_s=None if fits is None else fits * tps,
                usd_per_mtok_energy=per_mtok,
                usd_per_mtok_with_capex=capex,
                tags=tuple(t for t, j in named if j == i),
            )
        )
    return rows


def steady_table(site: Site, fleet: Fleet) -> list[SteadyRow]:
    """One row per (workload, setting); each workload gets its GPU share of the budget."""
    out: list[SteadyRow] = []
    total = fleet.gpus
    for wf in fleet.workloads:
        budget = None if fleet.budget_mw is None else fleet.budget_mw * wf.gpus / total
        out.extend(_rows(site, wf, budget))
    return out


def best_settings(rows: list[SteadyRow]) -> dict[str, dict[str, float]]:
    """Per workload: the setting that makes the most with the installed GPUs, and with GPUs sized
    to the power (which may add GPUs at a lower setting)."""
    out: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(r.workload for r in rows):
        mine = [r for r in rows if r.workload == label]
        inst = max(mine, key=lambda r: (r.installed_tokens_per_s, -r.setting))
        entry = {"installed_setting": inst.setting, "installed_tokens_per_s": inst.installed_tokens_per_s}
        if mine[0].sized_gpus is not None:
            sized = max(mine, key=lambda r: (r.sized_tokens_per_s or 0.0, -r.setting))
            entry |= {
                "sized_setting": sized.setting,
                "sized_gpus": float(sized.sized_gpus or 0),
                "sized_tokens_per_s": float(sized.sized_tokens_per_s or 0.0),
            }
        cheapest = min(mine, key=lambda r: r.usd_per_mtok_energy)
        entry |= {"cheapest_setting": cheapest.setting, "usd_per_mtok_energy": cheapest.usd_per_mtok_energy}
        out[label] = entry
    return out


def rows_as_dicts(rows: list[SteadyRow]) -> list[dict]:
    return [
        {
            k: (
                list(v)
                if isinstance(v, tuple)
                else (None if isinstance(v, float) and not np.isfinite(v) else v)
            )
            for k, v in r.__dict__.items()
        }
        for r in rows
    ]
