"""Sub-hourly grid files (15 and 30 minutes) plan, and energy counts the interval's length."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from planner_fixtures import make_curve, make_grid, make_site, run

from harness.planner import plan
from harness.planner.grid import load_grid
from harness.planner.network import PYPSA_OPTIONS
from harness.records.curves import save_curve

CURVE = make_curve([100, 200, 300, 400], [30_000, 50_000, 60_000, 64_000], [100, 200, 300, 400])
BATTERY = {"energy_mwh": 1.0, "charge_mw": 0.5, "discharge_mw": 0.5, "round_trip_efficiency": 0.81,
           "soc_min": 0.0, "soc_max": 1.0, "soc_initial": 0.5, "cyclic": False}  # fmt: skip


@pytest.mark.parametrize("step_h", [0.25, 0.5])
def test_a_sub_hourly_grid_plans_with_energy_per_interval_length(step_h):
    # 10,000 GPUs, 4 MW at the top; the offer dips to 3 MW for an hour, the battery covers 0.5 MW of it
    n = int(4 / step_h)
    avail = np.r_[np.full(n, 4.0), np.full(int(1 / step_h), 3.0), np.full(n, 4.0)]
    site = make_site(gpus=10_000, battery=BATTERY, price_per_mwh=50.0)
    _f, _h, res = run(site, CURVE, make_grid(avail, step_h=step_h))
    f = res["plan"].frame
    assert len(f) == len(avail)
    # the battery holds 0.5 MWh: at 0.9 out it gives 0.45 MWh into the dip, whatever the interval
    dip = f.iloc[n : n + int(1 / step_h)]
    assert dip["battery_dispatch_mw"].sum() * step_h == pytest.approx(0.5 * 0.9, abs=1e-6)
    # energy and tokens are MW × interval length: a full interval at 4 MW is 4 × step_h MWh
    assert res["plan"].totals["gpu_energy_mwh"] == pytest.approx(f["gpu_mw"].sum() * step_h, rel=1e-12)
    assert f["tokens_gtok"].iloc[0] == pytest.approx(10_000 * 64_000 * 3600e-9 * step_h, rel=1e-9)
    soc = f["soc_mwh"].to_numpy()
    prev = np.r_[0.5, soc[:-1]]
    assert soc == pytest.approx(prev + (0.9 * f["battery_store_mw"] - f["battery_dispatch_mw"] / 0.9) * step_h)


def test_a_15_minute_grid_file_plans_from_the_command_and_exports(tmp_path):
    from harness.planner.plan import export_network

    idx = pd.date_range("2026-01-01", periods=16, freq="15min")
    grid = tmp_path / "grid.csv"
    pd.DataFrame({"timestamp": idx.strftime("%Y-%m-%dT%H:%M:%S"), "available_mw": [4.0] * 8 + [2.0] * 8,
                  "price_per_mwh": [40.0] * 16}).to_csv(grid, index=False)  # fmt: skip
    assert load_grid(grid).step_h == 0.25
    curve = tmp_path / "c.json"
    save_curve(CURVE, curve)
    site = tmp_path / "site.toml"
    site.write_text(f'name = "q"\ngpus = 10000\nprovision = "mean"\n[[workloads]]\ncurve = "c.json"\n'
                    f'[grid]\nfile = "{grid}"\n')  # fmt: skip
    r = plan(site)
    assert r.horizon.step_h == 0.25
    assert r.schedule.totals["gpu_energy_mwh"] == pytest.approx(8 * 4.0 * 0.25 + 8 * 2.0 * 0.25, abs=1e-6)
    nc = tmp_path / "q.nc"
    export_network(r, nc)  # PyPSA with 15-minute snapshot weights (it crashed on them before)
    import warnings

    import pypsa

    with pypsa.option_context(*PYPSA_OPTIONS), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas notices inside PyPSA's reader
        n = pypsa.Network(str(nc))
    assert n.snapshot_weightings["objective"].tolist() == [0.25] * 16
    assert n.objective == pytest.approx(r.schedule.objective_value, rel=1e-6)
