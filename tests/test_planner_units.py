"""Whole units, synchronous jobs and ramp limits against a brute-force dynamic programme.

The DP enumerates every way to run the units (each off or at one setting) in every interval and
every battery flow and grid import on a 0.05 MW grid; with all data on that grid and a lossless
battery the MIP's optimum lies on it too, so the two must agree exactly.
"""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from planner_fixtures import make_curve, make_grid, make_site, run

from harness.errors import ProfileError
from harness.planner.capacity import build_fleet
from harness.planner.horizon import build_horizon
from harness.planner.lp import ScheduleModel

CURVE = make_curve([100, 200, 300], [1000, 1600, 1800], [100, 200, 300])
GTOK_PER_H = 3600 / 1e9
STEP = 0.05  # MW (and MWh: one-hour intervals)
AVAIL = [0.9, 0.85, 0.25, 0.6, 0.95, 0.15]
BATTERY = {"energy_mwh": 0.6, "charge_mw": 0.2, "discharge_mw": 0.3, "round_trip_efficiency": 1.0,
           "soc_min": 0.0, "soc_max": 1.0, "soc_initial": 0.5, "cyclic": False}  # fmt: skip


def _brute_force(avail, groups: int, gpus: int, ramp: float | None = None) -> float:
    """Most Gtok over the horizon: ``groups`` units of ``gpus`` GPUs, each off or at one setting."""
    options = [(0, 0), (100, 1000), (200, 1600), (300, 1800)]
    best: dict[int, float] = {}  # site power in STEP units → most Gtok per hour at exactly that power
    for combo in itertools.product(options, repeat=groups):
        k = round(sum(o[0] for o in combo) * gpus * 1e-6 / STEP)
        best[k] = max(best.get(k, 0.0), sum(o[1] for o in combo) * gpus * GTOK_PER_H)
    cap = round(0.6 / STEP)
    ch, dis = round(0.2 / STEP), round(0.3 / STEP)
    r = None if ramp is None else round(ramp / STEP)
    values = {(round(0.3 / STEP), None): 0.0}  # (state of charge, last import) → Gtok so far
    for a in avail:
        nxt: dict[tuple[int, int | None], float] = {}
        for (soc, last), v in values.items():
            for p, tok in best.items():
                for b in range(-ch, dis + 1):  # b > 0: discharge
                    imp, soc2 = p - b, soc - b
                    if not (0 <= imp <= round(a / STEP) and 0 <= soc2 <= cap):
                        continue
                    if r is not None and last is not None and abs(imp - last) > r:
                        continue
                    key = (soc2, imp if r is not None else None)
                    nxt[key] = max(nxt.get(key, -1.0), v + tok)
        values = nxt
    return max(values.values())


def _units(**over):
    units = [{"name": "node", "count": 3, "gpus_per_unit": 1000}]
    return make_site(units=units, schedule_unit="unit", battery=BATTERY, **over)


def test_whole_nodes_as_a_mip_equal_the_brute_force_and_the_relaxation_reports_its_gap():
    expected = _brute_force(AVAIL, groups=3, gpus=1000)
    _f, _h, res = run(_units(integer=True), CURVE, make_grid(AVAIL))
    mip = res["plan"]
    assert mip.totals["tokens_gtok"] == pytest.approx(expected, rel=1e-9)
    assert mip.totals["relaxation_gap"] == pytest.approx(0.0, abs=1e-12)
    assert set(mip.frame["gpus_running"]) <= {0, 1000, 2000, 3000}  # whole nodes only
    # solved continuous, the LP promises more; its whole-node schedule makes less; the gap says how much
    _f, _h, res = run(_units(), CURVE, make_grid(AVAIL))
    lp = res["plan"].totals
    assert lp["lp_tokens_gtok"] > expected * (1 + 1e-3)
    assert lp["tokens_gtok"] <= expected + 1e-9
    assert lp["relaxation_gap"] == pytest.approx(1 - lp["tokens_gtok"] / lp["lp_tokens_gtok"], rel=1e-12)
    assert set(res["plan"].frame["gpus_running"]) <= {0, 1000, 2000, 3000}


def test_a_synchronous_job_runs_all_its_gpus_at_one_setting_or_parks():
    expected = _brute_force(AVAIL, groups=1, gpus=3000)
    site = make_site(gpus=3000, battery=BATTERY, workloads=[{"curve": "x.json", "synchronous": True}])
    _f, _h, res = run(site, CURVE, make_grid(AVAIL))
    f = res["plan"].frame
    assert res["plan"].totals["tokens_gtok"] == pytest.approx(expected, rel=1e-9)
    counts = f[[c for c in f if c.startswith("gpus@")]]
    assert ((counts == 0) | (counts == 3000)).all().all() and (counts.sum(axis=1) <= 3000).all()
    # independent replicas on the same power make more: the job's price for running in lockstep
    assert expected < _brute_force(AVAIL, groups=3, gpus=1000)


def test_a_ramp_limit_holds_and_equals_the_brute_force():
    expected = _brute_force(AVAIL, groups=3, gpus=1000, ramp=0.2)
    grid = make_grid(AVAIL)
    _f, _h, res = run(_units(integer=True, grid={"ramp_mw_per_interval": 0.2}), CURVE, grid)
    f = res["plan"].frame
    net = (f["grid_import_mw"] - f["export_mw"]).to_numpy()
    assert abs(net[1:] - net[:-1]).max() <= 0.2 + 1e-9
    assert res["plan"].totals["tokens_gtok"] == pytest.approx(expected, rel=1e-9)
    assert expected < _brute_force(AVAIL, groups=3, gpus=1000)  # the limit binds


def test_units_must_divide_the_workload():
    site = make_site(units=[{"name": "n", "count": 3, "gpus_per_unit": 1000}], schedule_unit="unit",
                     workloads=[{"curve": "a.json", "share": 0.5}, {"curve": "b.json", "share": 0.5}])  # fmt: skip
    with pytest.raises(ProfileError, match="not a whole number of 1000-GPU units"):
        fleet = build_fleet(site, [CURVE, CURVE])
        ScheduleModel(site, fleet, build_horizon(site, fleet, make_grid([1.0])))


def test_the_mip_and_the_gap_are_said_and_export_refuses_what_pypsa_lacks(tmp_path):
    from harness.errors import UsageError
    from harness.planner.plan import PlanResult, export_network
    from harness.planner.steady import best_settings, steady_table
    from harness.planner.tables import policies

    for integer, said in ((False, "less than its LP relaxation"), (True, "whole units solved exactly")):
        site = _units(integer=integer)
        fleet, h, res = run(site, CURVE, make_grid(AVAIL))
        rows = steady_table(site, fleet)
        r = PlanResult(site, fleet, rows, best_settings(rows), horizon=h, schedule=res["plan"],
                       model=ScheduleModel(site, fleet, h))  # fmt: skip
        assert said in policies(r).caption
    with pytest.raises(UsageError, match="lacks whole units") as e:
        export_network(r, tmp_path / "x.nc")
    assert "\n" not in str(e.value)


def test_limits_no_schedule_can_meet_are_one_line():
    from harness.errors import UsageError

    # 0.5 MW must go back in the stress hour, which offers no import and the site has no battery
    site = make_site(gpus=3000, grid={"export_mw": 0.5, "export_required_mw": 0.5})
    with pytest.raises(UsageError, match="no schedule meets the site's limits") as e:
        run(site, CURVE, make_grid([0.9, 0.0, 0.9], event=[0, 1, 0]))
    assert "\n" not in str(e.value)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    avail=st.lists(st.integers(0, 20).map(lambda k: k * STEP), min_size=2, max_size=5),
    mode=st.sampled_from(["nodes", "job", "ramp"]),
)
def test_any_small_case_equals_the_brute_force(avail, mode):
    """Random offers on the 0.05 MW grid: whole nodes, a synchronous job, or nodes under a ramp limit."""
    if mode == "job":
        site = make_site(gpus=3000, battery=BATTERY, workloads=[{"curve": "x.json", "synchronous": True}])
        expected = _brute_force(avail, groups=1, gpus=3000)
    else:
        ramp = 0.15 if mode == "ramp" else None
        site = _units(integer=True, grid={} if ramp is None else {"ramp_mw_per_interval": ramp})
        expected = _brute_force(avail, groups=3, gpus=1000, ramp=ramp)
    _f, _h, res = run(site, CURVE, make_grid(avail))
    assert res["plan"].totals["tokens_gtok"] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_a_whole_unit_site_plans_with_its_comparisons(tmp_path):
    from harness.planner import plan
    from harness.records.curves import save_curve

    save_curve(CURVE, tmp_path / "c.json")
    pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=4, freq="h"),
                  "available_mw": [0.9, 0.25, 0.9, 0.6]}).to_csv(tmp_path / "g.csv", index=False)  # fmt: skip
    (tmp_path / "s.toml").write_text(
        'name = "u"\nprovision = "mean"\nschedule_unit = "unit"\ninteger = true\n'
        '[[units]]\nname = "node"\ncount = 3\ngpus_per_unit = 1000\n'
        '[[workloads]]\ncurve = "c.json"\n[grid]\nfile = "g.csv"\n'
    )
    r = plan(tmp_path / "s.toml")
    assert r.model.integer and set(r.baselines) == {"max_p", "max_q", "default"}
    assert r.schedule.totals["tokens_gtok"] == pytest.approx(_brute_force_no_battery([0.9, 0.25, 0.9, 0.6]))
    for b in r.baselines.values():
        assert b.totals["tokens_gtok"] <= r.schedule.totals["tokens_gtok"] + 1e-9


def _brute_force_no_battery(avail) -> float:
    options = [(0, 0), (100, 1000), (200, 1600), (300, 1800)]
    return sum(
        max(sum(o[1] for o in c) * 1000 * GTOK_PER_H for c in itertools.product(options, repeat=3)
            if sum(o[0] for o in c) * 1000 * 1e-6 <= a + 1e-9)
        for a in avail
    )  # fmt: skip
