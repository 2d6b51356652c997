"""The schedule: known answers, curtailment orderings, a brute-force DP, battery physics."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from planner_fixtures import make_curve, make_grid, make_site, run

from harness.errors import UsageError
from harness.planner.capacity import build_fleet, curtailment_options
from harness.planner.horizon import Scenario, build_horizon
from harness.planner.schedule import solve
from harness.records.curves import load_curve

ROOT = Path(__file__).resolve().parents[1]
H100 = load_curve(ROOT / "profiles/curves/h100-train-llama-1b.json")
GTOK_PER_H = 3600 / 1e9  # tokens/s → Gtok per hour
TOL = 1e-6


def _counted_tokens(f, curve=None) -> np.ndarray:
    """Gtok per interval from the schedule's whole GPU counts and the toy curves' tokens/s."""
    tps = {100: 30_000, 200: 50_000, 300: 60_000, 400: 64_000} if curve is None else curve
    return sum(f[f"gpus@{s:g}"].to_numpy() * t for s, t in tps.items() if f"gpus@{s:g}" in f) * GTOK_PER_H


def test_linear_curve_with_a_budget_that_binds():
    # 10,000 GPUs at 100 tok/s per W; 3 MW budget binds where the grid offers more
    curve = make_curve([100, 200, 300, 400], [10_000, 20_000, 30_000, 40_000], [100, 200, 300, 400])
    site = make_site(gpus=10_000, power_budget_mw=3.0)
    _f, _h, res = run(site, curve, make_grid([5.0, 4.0, 2.0, 0.5, 0.0]))
    f = res["plan"].frame
    assert f["gpu_mw"].tolist() == pytest.approx([3.0, 3.0, 2.0, 0.5, 0.0], abs=TOL)
    assert f["tokens_gtok"].tolist() == pytest.approx([1080.0, 1080.0, 720.0, 180.0, 0.0], rel=1e-6, abs=TOL)
    assert (f["gpu_mw"] <= f["import_available_mw"] + TOL).all()
    # a linear curve gains nothing from lower settings: 2 MW is 5,000 GPUs at the top, 5,000 off
    assert f["gpus@400"].iloc[2] == 5000 and f["gpus_running"].iloc[2] == 5000 and f["gpus_off"].iloc[2] == 5000


def test_concave_curve_without_a_binding_budget_picks_the_mix_on_the_hull():
    curve = make_curve([100, 200, 300, 400], [30_000, 50_000, 60_000, 64_000], [100, 200, 300, 400])
    site = make_site(gpus=10_000, power_budget_mw=10.0)
    _f, _h, res = run(site, curve, make_grid([5.0, 4.0, 2.5, 1.0, 0.5]))
    f = res["plan"].frame
    assert f["gpu_mw"].tolist() == pytest.approx([4.0, 4.0, 2.5, 1.0, 0.5], abs=TOL)
    tps = np.array([6.4e8, 6.4e8, 5.5e8, 3.0e8, 1.5e8])
    assert f["tokens_gtok"].to_numpy() == pytest.approx(tps * GTOK_PER_H, rel=1e-6)
    row = f.iloc[2]  # 250 W per GPU: half the GPUs at 300 W, half at 200 W
    assert (row["gpus@300"], row["gpus@200"], row["gpus_off"]) == (5000, 5000, 0)
    row = f.iloc[4]  # 50 W per GPU: below the most efficient setting, park half
    assert (row["gpus@100"], row["gpus_running"], row["gpus_off"]) == (5000, 5000, 5000)
    # the whole counts make what the curve says
    assert _counted_tokens(f) == pytest.approx(f["tokens_gtok"].to_numpy(), rel=1e-9)


def test_compute_bound_curtailment_keeps_more_tokens_by_lowering_settings_than_by_parking_gpus():
    fleet = build_fleet(make_site(gpus=1000, provision="mean"), [H100])
    wf = fleet.workloads[0]
    full = 1000 * 688.1e-6
    opts = curtailment_options(wf, 0.6 * full)  # the grid asks for 40% back
    # 412.9 kW: every GPU at 400 W (393.2 W drawn) vs 600 GPUs at 700 W
    assert opts["lower"] == pytest.approx(1000 * 55_764.3)
    assert opts["off"] == pytest.approx(600 * 66_000)
    assert opts["lower"] / opts["off"] == pytest.approx(1.408, abs=1e-3)
    assert opts["plan"] >= opts["lower"] > opts["off"]
    _f, _h, res = run(make_site(gpus=1000, provision="mean"), H100, make_grid([full, 0.6 * full]))
    f = res["plan"].frame
    assert f["gpus_off"].iloc[1] == 0 and f["gpus@450"].iloc[1] + f["gpus@400"].iloc[1] == 1000
    assert f["lp_tokens_gtok"].iloc[1] == pytest.approx(opts["plan"] * GTOK_PER_H, rel=1e-6)
    # whole GPUs: one GPU's fraction runs at 400 W instead of 450 W, less than a GPU's worth of tokens
    gap = f["lp_tokens_gtok"].iloc[1] - f["tokens_gtok"].iloc[1]
    assert 0 <= gap < 1 * (58_800 - 55_764) * GTOK_PER_H
    assert f["tokens_gtok"].iloc[0] == pytest.approx(1000 * 66_000 * GTOK_PER_H, rel=1e-6)


def test_flat_decode_curtailment_keeps_more_tokens_by_parking_gpus_than_by_lowering_caps():
    # decode draws 290 W whatever the cap above it; a 200 W cap binds and halves throughput
    decode = make_curve([200, 300, 400, 500, 600, 700], [6_000] + [12_000] * 5, [196] + [290] * 5)
    fleet = build_fleet(make_site(gpus=1000, provision="mean"), [decode])
    wf = fleet.workloads[0]
    assert wf.site_w[1] == wf.site_w[5] == 290  # lowering the cap from 700 W to 300 W saves nothing
    opts = curtailment_options(wf, 0.2)
    assert opts["lower"] == pytest.approx(1000 * 6_000)  # every GPU capped at 200 W
    assert opts["off"] == pytest.approx(689 * 12_000)  # 689 GPUs at the default 700 W, 311 off
    assert opts["plan"] == pytest.approx(1000 * 12_000 * 200 / 290)
    assert opts["plan"] >= opts["off"] > opts["lower"]
    assert curtailment_options(wf, 0.15)["lower"] is None  # no cap gets 1,000 GPUs under 150 kW
    _f, _h, res = run(make_site(gpus=1000, provision="mean"), decode, make_grid([0.29, 0.2]))
    row = res["plan"].frame.iloc[1]
    assert row["gpus@300"] == 689 and row["gpus_off"] == 311
    assert row["lp_tokens_gtok"] == pytest.approx(opts["plan"] * GTOK_PER_H, rel=1e-6)
    assert row["tokens_gtok"] == pytest.approx(689 * 12_000 * GTOK_PER_H, rel=1e-9)


def _brute_force(avail_mw, soc0_mwh, energy_mwh, charge_mw, discharge_mw, step=0.1):
    """Max tokens by dynamic programming over a 0.1 MWh battery grid, each of three groups of
    1,000 GPUs at 100/200/300 W (1,000/1,600/1,800 tok/s) or off, enumerated outright."""
    options = [(0, 0), (100, 1000), (200, 1600), (300, 1800)]
    best: dict[int, float] = {}
    for combo in itertools.product(options, repeat=3):
        k = round(sum(o[0] for o in combo) * 1000 * 1e-6 / step)
        best[k] = max(best.get(k, 0.0), sum(o[1] for o in combo) * 1000 * GTOK_PER_H)
    top = max(best)
    most = [max(best.get(j, 0.0) for j in range(k + 1)) for k in range(top + 1)]
    values = {round(soc0_mwh / step): 0.0}
    for a in avail_mw:
        nxt: dict[int, float] = {}
        for s, v in values.items():
            for b in range(-round(charge_mw / step), round(discharge_mw / step) + 1):  # b > 0: discharge
                s2, x = s - b, round(a / step) + b
                if 0 <= s2 <= round(energy_mwh / step) and x >= 0:
                    nxt[s2] = max(nxt.get(s2, -1.0), v + most[min(x, top)])
        values = nxt
    return max(values.values())


def test_schedule_equals_a_brute_force_dynamic_programme():
    curve = make_curve([100, 200, 300], [1000, 1600, 1800], [100, 200, 300])
    avail = [0.9, 0.9, 0.3, 0.6, 0.9, 0.2]
    battery = {"energy_mwh": 0.6, "charge_mw": 0.2, "discharge_mw": 0.3, "round_trip_efficiency": 1.0,
               "soc_min": 0.0, "soc_max": 1.0, "soc_initial": 0.5, "cyclic": False}  # fmt: skip
    fleet, _h, res = run(make_site(gpus=3000, battery=battery), curve, make_grid(avail))
    f = res["plan"].frame
    expected = _brute_force(avail, 0.3, 0.6, 0.2, 0.3)
    assert f["tokens_gtok"].sum() == pytest.approx(expected, rel=1e-7)
    assert expected == pytest.approx(105.84)  # the DP's own answer, for the record
    # every interval's read-back settings are curve settings and make the tokens the links carried
    settings = set(fleet.workloads[0].settings.tolist())
    assert {float(c.split("@")[1]) for c in f if c.startswith("gpus@")} <= settings
    counted = _counted_tokens(f, {100: 1000, 200: 1600, 300: 1800})
    assert counted == pytest.approx(f["tokens_gtok"].to_numpy(), rel=1e-9)


def test_battery_covers_a_short_curtailment_and_keeps_its_limits_and_the_energy_balance():
    curve = make_curve([100, 200, 300, 400], [30_000, 50_000, 60_000, 64_000], [100, 200, 300, 400])
    battery = {"energy_mwh": 2.0, "charge_mw": 0.5, "discharge_mw": 0.5, "round_trip_efficiency": 0.81,
               "soc_min": 0.1, "soc_max": 0.9, "soc_initial": 0.5, "cyclic": True}  # fmt: skip
    avail = [4.5, 4.5, 3.6, 4.5, 4.5, 4.5, 3.0, 3.0, 3.0, 3.0, 4.5, 4.5, 4.5, 4.5]
    site = make_site(gpus=10_000, battery=battery, price_per_mwh=50.0)
    _f, _h, res = run(site, curve, make_grid(avail))
    f = res["plan"].frame
    # short curtailment (0.4 MW for an hour): the battery covers it; every GPU stays at 400 W
    assert f["battery_dispatch_mw"].iloc[2] == pytest.approx(0.4, abs=TOL)
    assert (f["gpus@400"].iloc[2], f["gpus_off"].iloc[2]) == (10_000, 0)
    # long curtailment (1 MW for four hours, more than the 1.6 MWh window): settings come down too
    assert (f["gpu_mw"].iloc[6:10] < 4.0 - 1e-3).any()
    assert f["battery_dispatch_mw"].iloc[6:10].sum() == pytest.approx(1.6 * 0.9, abs=1e-6)
    # state of charge within [0.2, 1.8] MWh, and consistent with the flows (√0.81 = 0.9 each way)
    soc = f["soc_mwh"].to_numpy()
    assert soc.min() >= 0.2 - TOL and soc.max() <= 1.8 + TOL and soc.min() == pytest.approx(0.2, abs=1e-6)
    prev = np.roll(soc, 1)  # cyclic: the interval before the first is the last
    assert soc == pytest.approx(prev + 0.9 * f["battery_store_mw"] - f["battery_dispatch_mw"] / 0.9, abs=1e-6)
    # energy balance, interval by interval
    supply = f["grid_import_mw"] + f["generation_mw"] + f["battery_dispatch_mw"]
    demand = f["gpu_mw"] + f["battery_store_mw"] + f["export_mw"]
    assert supply.to_numpy() == pytest.approx(demand.to_numpy(), abs=1e-6)
    assert (f["grid_import_mw"] <= f["import_available_mw"] + TOL).all()


def test_a_token_target_beyond_reach_is_a_clear_error():
    curve = make_curve([100, 200], [1000, 1600], [100, 200])
    with pytest.raises(UsageError, match="no schedule reaches the token target") as e:
        run(make_site(gpus=1000), curve, make_grid([0.2, 0.2]),
            [Scenario("plan", "cost", target_gtok=1e6)])  # fmt: skip
    assert "\n" not in str(e.value)


def test_a_workload_mix_shares_the_power_by_efficiency():
    # half the GPUs on a 100 tok/J workload, half on a 50 tok/J one; 5 MW for 8 MW of GPUs
    fast = make_curve([100, 400], [10_000, 40_000], [100, 400], name="fast")
    slow = make_curve([100, 400], [5_000, 20_000], [100, 400], name="slow")
    site = make_site(gpus=20_000, workloads=[{"curve": "a.json", "share": 0.5}, {"curve": "b.json", "share": 0.5}])
    fleet = build_fleet(site, [fast, slow])
    h = build_horizon(site, fleet, make_grid([5.0, 10.0]))
    _n, res = solve(site, fleet, h, [Scenario("plan")])
    f = res["plan"].frame
    assert f["w0_gpu_mw"].tolist() == pytest.approx([4.0, 4.0], abs=TOL)
    assert f["w1_gpu_mw"].tolist() == pytest.approx([1.0, 4.0], abs=TOL)
    assert f["tokens_gtok"].tolist() == pytest.approx([(400 + 50) * 3.6, (400 + 200) * 3.6], rel=1e-6)
    assert (f["w1_gpus@400"].iloc[0], f["w1_gpus_off"].iloc[0]) == (2_500, 7_500)


def test_priced_tokens_run_only_where_they_earn_more_than_the_energy_costs():
    # 100 tok/J is 360,000 Mtok per MWh: at 0.001 $/Mtok that is worth 360 $/MWh
    curve = make_curve([100, 200, 300, 400], [10_000, 20_000, 30_000, 40_000], [100, 200, 300, 400])
    site = make_site(gpus=10_000, token_value_per_mtok=0.001)
    grid = make_grid([4.0, 4.0, 4.0], price_per_mwh=[10.0, 1000.0, 359.0])
    _f, _h, res = run(site, curve, grid, [Scenario("plan", "cost")])
    f = res["plan"].frame
    assert f["gpu_mw"].tolist() == pytest.approx([4.0, 0.0, 4.0], abs=TOL)
    assert res["plan"].totals["energy_cost_usd"] == pytest.approx(4.0 * (10 + 359), rel=1e-6)


def test_a_missing_plan_extra_is_named(monkeypatch):
    import sys

    from harness.planner.lp import _highspy

    monkeypatch.setitem(sys.modules, "highspy", None)  # import highspy → ImportError
    with pytest.raises(UsageError, match=r"needs the 'plan' extra \(highspy is missing\)"):
        _highspy()


def test_a_few_gpus_report_the_tokens_of_their_whole_counts():
    # 5 GPUs on 1.15 kW: the LP runs 1.5 GPUs at 300 W and 3.5 at 200 W; whole, 1 and 4 (1.1 kW)
    _f, _h, res = run(make_site(gpus=5), make_curve([100, 200, 300, 400], [30_000, 50_000, 60_000, 64_000],
                                                     [100, 200, 300, 400]), make_grid([1.15e-3]))  # fmt: skip
    f = res["plan"].frame
    assert f["gpus_running"].iloc[0] + f["gpus_off"].iloc[0] == 5
    assert f["tokens_gtok"].to_numpy() == pytest.approx(_counted_tokens(f), rel=1e-12)
    assert (f["gpus@300"].iloc[0], f["gpus@200"].iloc[0]) == (1, 4)
    assert f["gpu_mw"].iloc[0] == pytest.approx(1.1e-3) and f["grid_import_mw"].iloc[0] == pytest.approx(1.1e-3)
    lp = f["lp_tokens_gtok"].iloc[0]
    assert f["tokens_gtok"].iloc[0] < lp  # the fraction of a GPU is not counted
    assert res["plan"].totals["relaxation_gap"] == pytest.approx(1 - f["tokens_gtok"].iloc[0] / lp)
