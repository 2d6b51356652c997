"""`--dry-run`'s device-time estimate against the simulated device time of the same plan (issue 13):
warm-ups follow the parts' thermal settling, not a fixed multiple of the minimum."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.sweep.run import SweepOptions, run_sweep

PLAN = dict(repeats=1, window_s=10.0, warmup_min_s=5.0, warmup_max_s=60.0, backend="sim")


@pytest.mark.parametrize(("profile", "values"), [("train-llama-1b", (700, 450, 250)), ("prefill-llama-8b", (700, 400))])
def test_dry_run_estimate_within_15_percent_of_simulated_device_time(tmp_path, profile, values):
    opts = dict(profile=profile, values=values, batch_sizes=(16,) if "prefill" in profile else None, **PLAN)
    estimate = run_sweep(SweepOptions(dry_run=True, out=str(tmp_path / "dry"), **opts)).estimate_s
    result = run_sweep(SweepOptions(out=str(tmp_path / "run"), **opts))
    df = pd.DataFrame([p.__dict__ for p in result.points])
    device_s = float((df.seconds + df.warmup_s).sum())
    assert estimate == pytest.approx(device_s, rel=0.15)
