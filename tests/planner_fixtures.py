"""Small builders for the planner tests: curves, sites and grid signals in a few lines each."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.planner.capacity import build_fleet
from harness.planner.grid import GridSignal
from harness.planner.horizon import Scenario, build_horizon
from harness.planner.schedule import solve
from harness.planner.site import Site
from harness.records.curves import CurveFile, CurveFit, CurvePoint, PartIdentity, Provenance, WorkloadIdentity


def make_curve(settings, tokens, mean, p99=None, max_1s=None, default=None, name="toy") -> CurveFile:
    settings = [float(s) for s in settings]
    points = [
        CurvePoint(
            setting=s,
            phase="train",
            batch_size=8,
            tokens_per_s=float(t),
            tokens_per_j=float(t) / float(m),
            power_mean_w=float(m),
        )
        for s, t, m in zip(settings, tokens, mean, strict=True)
    ]
    fit = CurveFit(
        phase="train",
        batch_size=8,
        method="test",
        settings=settings,
        tokens_per_s=[float(t) for t in tokens],
        power_mean_w=[float(m) for m in mean],
        power_p99_w=None if p99 is None else [float(x) for x in p99],
        power_max_1s_w=None if max_1s is None else [float(x) for x in max_1s],
    )
    return CurveFile(
        knob="power_limit_w",
        part=PartIdentity(
            name="toy",
            power_limit_min_w=settings[0],
            power_limit_max_w=settings[-1],
            power_limit_default_w=settings[-1] if default is None else default,
        ),
        workload=WorkloadIdentity(
            name=name, kind="training", engine="test", model="toy", precision="bf16", batch_size=8
        ),
        points=points,
        fits=[fit],
        provenance=Provenance(tool_version="test", run_ids=["test"], created="2026-01-01T00:00:00Z"),
    )


def make_site(**over) -> Site:
    raw = {"name": "toy", "pue": 1.0, "provision": "mean", "workloads": [{"curve": "unused.json"}]}
    raw.update(over)
    return Site.model_validate(raw)


def make_grid(available_mw, step_h=1.0, **cols) -> GridSignal:
    idx = pd.date_range("2026-01-01", periods=len(available_mw), freq=pd.Timedelta(hours=step_h), name="timestamp")
    data = {"available_mw": np.asarray(available_mw, dtype=float)}
    data.update({k: np.asarray(v, dtype=float) for k, v in cols.items()})
    return GridSignal(frame=pd.DataFrame(data, index=idx), step_h=step_h, source="test")


def run(site: Site, curve: CurveFile, grid: GridSignal, scenarios=None):
    """Solve the scenarios (default: one max-tokens plan); returns fleet, horizon and results."""
    fleet = build_fleet(site, [curve])
    h = build_horizon(site, fleet, grid)
    _n, res = solve(site, fleet, h, scenarios or [Scenario("plan")])
    return fleet, h, res
