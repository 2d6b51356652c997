"""`--dry-run`'s device-time estimate against the simulated device time of the same plan (issues 13
and 14), on every shipped profile: warm-ups follow the loop's settling rule and the part's thermal
response, and warm-ups and windows end on whole workload steps, whose length the simulated part
tells from its physics (a decode step of 8B at batch 128 is a whole 256-token request, ~14 s).

Short plans keep it fast: each profile's largest batch (its longest step) at the part's highest and
lowest limit, 4 s windows. scripts/bench_estimate.py runs the profiles' own plans, the endpoint
profile (serve-vllm-8b, on the serving twin) included: its warm-ups last until the users' queue
settles after a setting change, which the estimate covers only on the profile's own windows and
warm-ups (a few users: to the maximum), not on plans this short."""

from __future__ import annotations

import pytest

from harness.devices.catalog import load_part
from harness.profiles import list_profiles, load_profile
from harness.sweep.loop import LiveStatus
from harness.sweep.run import SweepOptions, run_sweep

PART = load_part("h100-sxm")


@pytest.mark.parametrize("profile", [n for n in list_profiles() if load_profile(n).workload.name != "endpoint"])
def test_dry_run_estimate_within_15_percent_of_simulated_device_time(tmp_path, profile):
    p = load_profile(profile)
    batch = max(p.sweep.batch_sizes or (p.workload.batch_size,))
    opts = dict(profile=profile, values=(PART.power_max_w, PART.power_min_w), batch_sizes=(batch,), repeats=1,
                window_s=4.0, warmup_min_s=2.0, warmup_max_s=20.0, backend="sim", sim_gpu=PART.id)
    estimate = run_sweep(SweepOptions(dry_run=True, out=str(tmp_path / "dry"), **opts)).estimate_s
    status = LiveStatus()
    run_sweep(SweepOptions(out=str(tmp_path / "run"), **opts), status=status)
    assert estimate == pytest.approx(status.device_s, rel=0.15)


def test_dry_run_says_what_its_estimate_counts_and_how_long_the_simulation_takes():
    from typer.testing import CliRunner

    from harness.cli import app

    result = CliRunner().invoke(app, ["sweep", "--profile", "tiny-decode", "--dry-run", "--backend", "sim"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # however the terminal wraps it
    assert "estimated device time:" in text and "warm-ups until power, clock and temperature settle" in text
    assert "simulation: about" in text and "on this machine" in text
