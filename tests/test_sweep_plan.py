"""The sweep plan: settings, order and grid, without a device loop (the Max-Q search: test_sweep_search.py)."""

from __future__ import annotations

import pytest

from harness.devices import open_devices
from harness.errors import UsageError
from harness.sweep.plan import SweepPlan, ordered, resolve_settings


@pytest.fixture
def h100():
    ds = open_devices("sim", sim_gpu="h100-sxm")
    yield ds.devices[0]
    ds.close()


def test_points_spread_over_the_power_range(h100):
    assert resolve_settings(h100, "power-limit", points=6) == (700.0, 600.0, 500.0, 400.0, 300.0, 200.0)


def test_step_counts_down_from_max(h100):
    s = resolve_settings(h100, "power-limit", step=125)
    assert s == (700.0, 575.0, 450.0, 325.0, 200.0)


def test_percent_of_max(h100):
    assert resolve_settings(h100, "power-limit", percent=[40, 60, 80, 100]) == (700.0, 560.0, 420.0, 280.0)


def test_out_of_range_value_is_refused_before_any_change(h100):
    before = h100.power_limits()
    with pytest.raises(UsageError, match="outside GPU 0's range 200-700 W"):
        resolve_settings(h100, "power-limit", values=[150, 300])
    assert h100.power_limits() == before


def test_two_ways_of_giving_values_are_refused(h100):
    with pytest.raises(UsageError, match="one way only"):
        resolve_settings(h100, "power-limit", points=3, step=50)


def test_sm_clock_values_snap_to_supported_clocks(h100):
    s = resolve_settings(h100, "sm-clock", values=[1001, 1980])
    supported = set(h100.supported_sm_clocks())
    assert all(v in supported for v in s)
    assert s == (1980.0, 1005.0)


def test_interleaved_order_alternates_ends_and_reverses_on_odd_repeats():
    assert ordered([1, 2, 3, 4, 5], "interleaved", 0) == [5, 1, 4, 2, 3]
    assert ordered([1, 2, 3, 4, 5], "interleaved", 1) == [3, 2, 4, 1, 5]
    assert ordered([1, 2, 3], "ascending", 0) == [1, 2, 3]


def test_grid_measures_every_setting_batch_pair_each_repeat():
    plan = SweepPlan(knob="power-limit", settings=(700, 450, 200), batch_sizes=(1, 64), repeats=2)
    grid = plan.grid()
    assert len(grid) == 3 * 2 * 2
    assert {(p.setting, p.batch_size, p.repeat) for p in grid} == {
        (s, b, r) for s in (700, 450, 200) for b in (1, 64) for r in (0, 1)}
