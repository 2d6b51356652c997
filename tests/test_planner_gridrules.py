"""Grid rules stated in the site file: charging inside or outside the budget, export in stress."""

from __future__ import annotations

import pytest
from planner_fixtures import make_curve, make_grid, make_site, run

from harness.planner.horizon import Scenario

CURVE = make_curve([100, 200, 300, 400], [30_000, 50_000, 60_000, 64_000], [100, 200, 300, 400])
BATTERY = {"energy_mwh": 1.0, "charge_mw": 0.5, "discharge_mw": 0.5, "round_trip_efficiency": 0.81,
           "soc_min": 0.0, "soc_max": 1.0, "cyclic": True}  # fmt: skip
AVAIL = [2.0, 2.0, 0.5, 0.5, 2.0, 2.0]


@pytest.mark.parametrize("within", [False, True])
def test_battery_charging_counts_against_the_budget_only_when_the_site_says_so(within):
    # 2,500 GPUs at 400 W fill the 1 MW budget; a dip to 0.5 MW makes the battery worth charging
    site = make_site(gpus=2500, power_budget_mw=1.0, battery=BATTERY | {"charge_within_budget": within})
    _f, _h, res = run(site, CURVE, make_grid(AVAIL))
    f = res["plan"].frame
    meter = f["gpu_mw"] + f["battery_store_mw"]
    assert (f["gpu_mw"] <= 1.0 + 1e-9).all()
    if within:
        assert meter.max() <= 1.0 + 1e-9 and f["grid_import_mw"].max() <= 1.0 + 1e-9
    else:
        assert meter.max() > 1.2  # the battery charges beside a full fleet
    assert f["battery_store_mw"].sum() > 0


@pytest.mark.parametrize("objective", ["tokens", "cost"])
def test_a_required_export_is_sent_in_every_stress_interval_under_any_objective(objective):
    site = make_site(gpus=2500, battery=BATTERY, grid={"export_mw": 0.5, "export_required_mw": 0.3})
    grid = make_grid(AVAIL, event=[0, 0, 1, 1, 0, 0], price_per_mwh=[50.0] * 6)
    target = None if objective == "tokens" else 100.0
    _f, _h, res = run(site, CURVE, grid, [Scenario("plan", objective, target_gtok=target)])
    f = res["plan"].frame
    assert (f["export_mw"][f["stress"] == 1] >= 0.3 - 1e-9).all()
    assert (f["export_mw"][f["stress"] == 0] == 0).all()


@pytest.mark.parametrize("value, sent", [(1_000.0, 0.5), (10.0, 0.0)])
def test_under_the_tokens_objective_export_is_weighed_at_its_stated_value(value, sent):
    # 64,000 tok/s at 400 W is 576 Gtok/MWh: at 0.001 $/Mtok the tokens are worth 576 $/MWh
    site = make_site(gpus=2500, token_value_per_mtok=0.001,
                     grid={"export_mw": 0.5, "export_value_per_mwh": value})  # fmt: skip
    grid = make_grid([1.0, 1.0, 1.0], event=[0, 1, 0])
    _f, _h, res = run(site, CURVE, grid)
    assert res["plan"].frame["export_mw"].tolist() == pytest.approx([0.0, sent, 0.0], abs=1e-9)
