"""The window arithmetic on hand-made inputs: counter deltas, integrals, peaks, shares."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.telemetry import energy as en


def test_counter_delta_plain_wrap_and_reset():
    assert en.counter_delta_j(1_000, 351_000) == pytest.approx(350.0)
    # a wrap of the 64-bit millijoule counter: 2 J before the top, 3 J after
    assert en.counter_delta_j(2**64 - 2_000, 3_000) == pytest.approx(5.0)
    # a driver reload restarts from zero: unknowable, not negative
    assert en.counter_delta_j(5_000_000_000, 12_000) is None


def test_integrate_held_uses_value_in_force_at_window_start():
    t = [0.0, 1.0, 2.0, 3.0]
    p = [100.0, 200.0, 300.0, 400.0]
    # [0.5, 2.5]: 0.5 s at 100, 1 s at 200, 0.5 s at 300
    assert en.integrate_held(t, p, 0.5, 2.5) == pytest.approx(50 + 200 + 150)
    assert en.integrate_held(t, [math.nan] * 4, 0.5, 2.5) is None


def test_integrate_history_counts_partial_overlap():
    t = np.arange(1, 11) * 0.02  # samples ending at 0.02 .. 0.20, each the mean of the 20 ms before
    p = np.full(10, 500.0)
    p[4] = 1000.0  # the interval (0.08, 0.10]
    assert en.integrate_history(t, p, 0.0, 0.2) == pytest.approx(500 * 0.2 + 500 * 0.02)
    # half of the high interval
    assert en.integrate_history(t, p, 0.09, 0.11) == pytest.approx(1000 * 0.01 + 500 * 0.01)


def test_max_rolling_mean_and_percentile():
    t = np.arange(1, 201) * 0.02  # 4 s of 50 Hz history
    p = np.full(200, 300.0)
    p[100:125] = 900.0  # 0.5 s at 900 W
    assert en.max_rolling_mean(t, p, 1.0) == pytest.approx((900 * 0.5 + 300 * 0.5) / 1.0)
    assert en.max_rolling_mean(t[:10], p[:10], 1.0) is None  # less than a second of history
    assert en.percentile_power(p, 99) == pytest.approx(900.0)


def test_clock_event_shares_weight_by_time_held():
    t = np.array([0.0, 1.0, 3.0])
    events = np.array([0x4, 0x4 | 0x20, 0x1], dtype=float)
    shares = en.clock_event_shares(t, events, 0.0, 4.0)
    assert shares == {"sw_power_cap": pytest.approx(0.75), "sw_thermal": pytest.approx(0.5),
                      "idle": pytest.approx(0.25)}


def test_max_gap_covers_the_edges():
    assert en.max_gap([0.1, 0.2, 0.9], 0.0, 1.0) == pytest.approx(0.7)
    assert en.max_gap([], 0.0, 1.0) == pytest.approx(1.0)
