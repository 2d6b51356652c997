"""The observe-only square-wave check and the interleaved-pair statistics of scripts/gpu_check.py."""

from __future__ import annotations

import pytest

from harness.devices import open_devices
from harness.devices.simulated import Load
from harness.errors import PermissionDenied
from harness.testing.checks import (
    ObserveOnly,
    format_square_wave,
    median_ci,
    paired_ratio,
    square_wave_check,
)


def test_square_wave_check_on_a_simulated_h100(_sim_state_dir):
    gpu = open_devices("sim", sim_seed=4).devices[0]

    def busy(seconds: float) -> None:
        gpu.submit(Load(flops=seconds * 600e12))
        gpu.synchronize()

    c = square_wave_check(gpu, busy, gpu.synchronize, cycles=8)
    assert 5.0 < c.seconds < 7.5
    assert c.counter_j == pytest.approx(c.true_j, rel=0.005)
    assert c.history_j == pytest.approx(c.counter_j, rel=0.01)
    assert c.history_samples == pytest.approx(c.seconds / 0.02, abs=3)
    # the lagging average field and the part-time instant field are cross-checks, not the figure
    assert c.average_j is not None and c.instant_j is not None
    assert c.power_peak_w >= c.power_p99_w > c.power_max_1s_w > c.power_mean_w
    assert [r[0] for r in c.rows()][:4] == ["energy counter (window)", "integrated instant power",
                                            "integrated average power", "drained power history (50 Hz)"]
    text = format_square_wave(c)
    assert "| energy counter (window) |" in text and "+0.0%" in text and "p99" in text
    assert not _sim_state_dir.exists() or not any(_sim_state_dir.glob("*.json"))  # no setting was written


def test_observe_only_refuses_settings():
    gpu = open_devices("sim").devices[0]
    view = ObserveOnly(gpu)
    for call in (lambda: view.set_power_limit(300), lambda: view.lock_sm_clock(900, 900), view.reset_sm_clock):
        with pytest.raises(PermissionDenied, match="observe-only"):
            call()
    assert view.power_limits().current_w == 700.0  # reads pass through


def test_median_ci_order_statistics():
    med, lo, hi = median_ci([float(i) for i in range(1, 11)])
    assert (med, lo, hi) == (5.5, 2.0, 9.0)  # n=10: x(2)..x(9), 97.9% coverage


def test_paired_ratio_alternates_order():
    calls = []
    r = paired_ratio(lambda: calls.append("a") or 100.0, lambda: calls.append("b") or 99.0, pairs=4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert r.median == pytest.approx(0.99)
