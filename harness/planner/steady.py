"""Steady questions, no grid signal needed: at a fixed site power, what each setting makes and costs.

Two fleets per setting: the installed one (its GPU count, as many running as the budget powers) and
one sized to the power (as many GPUs as the budget powers at that setting: capacity at Max-Q vs
Max-P). Energy is billed at the mean draw; capacity is counted at the provisioned draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.planner.capacity import Fleet, WorkloadFleet
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


def _row(site: Site, wf: WorkloadFleet, budget_mw: float | None, setting: float, tps: float, gpu_w: float,
         site_w: float, site_mean_w: float, tags: tuple[str, ...], label: str) -> SteadyRow:  # fmt: skip
    fits = int(budget_mw * 1e6 // site_w) if budget_mw is not None else None
    running = wf.gpus if fits is None else min(wf.gpus, fits)
    mtok_per_h = tps * 3600 / 1e6
    energy_usd_h = site.price_per_mwh * site_mean_w * 1e-6  # per GPU-hour
    per_mtok = energy_usd_h / mtok_per_h if mtok_per_h > 0 else float("inf")
    capex = (energy_usd_h + wf.capex_per_gpu_h) / mtok_per_h if site.capex and mtok_per_h > 0 else None
    return SteadyRow(
        workload=label,
        setting=float(setting),
        gpu_w=float(gpu_w),
        site_kw_per_gpu=float(site_w / 1e3),
        tokens_per_s_per_gpu=float(tps),
        mtok_per_mwh=mtok_per_h / (site_mean_w * 1e-6),
        installed_running=running,
        installed_tokens_per_s=running * float(tps),
        sized_gpus=fits,
        sized_tokens_per_s=None if fits is None else fits * float(tps),
        usd_per_mtok_energy=per_mtok,
        usd_per_mtok_with_capex=capex,
        tags=tags,
    )


def _rows(site: Site, wf: WorkloadFleet, budget_mw: float | None) -> list[SteadyRow]:
    named = (("max-p", wf.max_p_index), ("max-q", wf.max_q_index), ("default", wf.default_index))
    rows = [
        _row(
            site,
            wf,
            budget_mw,
            wf.settings[i],
            wf.tokens_per_s[i],
            wf.gpu_w[i],
            float(wf.site_w[i]),
            float(wf.site_mean_w[i]),
            tuple(t for t, j in named if j == i),
            wf.label,
        )  # fmt: skip
        for i in range(len(wf.settings))
    ]
    oh = site.it_overhead_w_per_gpu
    for lo in wf.latency:  # Max-Q under each latency target the curve file holds
        rows.append(
            _row(
                site,
                wf,
                budget_mw,
                lo.setting,
                lo.tokens_per_s,
                lo.gpu_w,
                site.pue * (lo.gpu_w + oh),
                site.pue * (lo.gpu_mean_w + oh),
                (lo.label,),
                wf.label,
            )  # fmt: skip
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
        # the curve's own settings; latency-target rows answer a different question
        mine = [r for r in rows if r.workload == label and not any(t.startswith("tpot") for t in r.tags)]
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
            k: (list(v) if isinstance(v, tuple) else (None if isinstance(v, float) and not np.isfinite(v) else v))
            for k, v in r.__dict__.items()
        }
        for r in rows
    ]
