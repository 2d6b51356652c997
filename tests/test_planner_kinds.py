"""A site of two GPU generations, each on its own unit kind and curve; a serving workload at its SLO."""

from __future__ import annotations

import pandas as pd
import pytest
from planner_fixtures import make_curve

from harness.errors import CurveFileError, ProfileError
from harness.planner import plan
from harness.planner.capacity import build_fleet
from harness.planner.site import load_site
from harness.records.curves import CurvePoint, save_curve

# the old generation: 40 tok/J at 400 W, nearly linear; the new one: twice the tokens per GPU, concave
OLD = make_curve([200, 300, 400], [7_000, 11_000, 16_000], [200, 300, 400], name="old")
NEW = make_curve([300, 500, 700], [40_000, 58_000, 60_000], [300, 500, 700], name="new")


def _site(tmp_path, body: str, grid=None) -> str:
    save_curve(OLD, tmp_path / "old.json")
    save_curve(NEW, tmp_path / "new.json")
    p = tmp_path / "site.toml"
    text = (
        'name = "mixed"\nprovision = "mean"\nprice_per_mwh = 50\n'
        '[[units]]\nname = "H"\ncount = 100\ngpus_per_unit = 8\noverhead_w_per_unit = 800\n'
        '[[units]]\nname = "B"\ncount = 50\ngpus_per_unit = 8\noverhead_w_per_unit = 1600\n' + body
    )
    if grid is not None:
        idx = pd.date_range("2026-01-01", periods=len(grid), freq="h")
        pd.DataFrame({"timestamp": idx, "available_mw": grid, "event": [int(g < 0.5) for g in grid]}).to_csv(
            tmp_path / "grid.csv", index=False
        )
        text += '[grid]\nfile = "grid.csv"\n'
    p.write_text(text)
    return p


KINDS = '[[workloads]]\ncurve = "old.json"\nunit = "H"\n[[workloads]]\ncurve = "new.json"\nunit = "B"\n'


def test_each_kind_gets_its_units_gpus_and_overhead(tmp_path):
    site = load_site(_site(tmp_path, KINDS))
    old, new = build_fleet(site).workloads
    assert (old.gpus, new.gpus) == (800, 400)
    assert old.site_w[-1] == pytest.approx(400 + 100) and new.site_w[-1] == pytest.approx(700 + 200)
    assert old.label.startswith("H: ") and new.label.startswith("B: ")


def test_in_stress_the_plan_parks_the_old_kind_and_runs_the_new_one(tmp_path):
    # full power (0.76 MW covers both at the top), then 0.3 MW: less than the new kind alone at the top
    r = plan(_site(tmp_path, KINDS, grid=[0.8, 0.8, 0.3, 0.3]))
    f = r.schedule.frame
    assert f["w0_gpus@400"].iloc[0] == 800 and f["w1_gpus@700"].iloc[0] == 400  # both at Max-P
    # 0.3 MW: every new GPU at its Max-Q (500 W, 0.28 MW with overhead), 40 old ones on the rest
    assert f["w1_gpus@500"].iloc[2] == 400 and f["w0_gpus_off"].iloc[2] == 760
    from harness.planner.schedule import per_kind

    old, new = per_kind(r.fleet, f, 1.0)
    assert old["parked_share_in_stress"] == 0.95 and new["parked_share_in_stress"] == 0.0
    assert new["max_q_share"] > 0 and old["max_p_share"] == pytest.approx((2 * 800 + 2 * 40) / (4 * 800))
    assert old["tokens_gtok"] + new["tokens_gtok"] == pytest.approx(r.schedule.totals["tokens_gtok"], rel=1e-12)
    # the command prints the per-kind table
    from harness.planner.tables import render

    titles = [getattr(x, "title", "") for x in render(r)]
    assert "per kind, share of GPU-hours" in titles


def test_kinds_are_named_for_every_workload_and_exist(tmp_path):
    with pytest.raises(ProfileError, match="name a unit for every workload or for none"):
        load_site(_site(tmp_path, '[[workloads]]\ncurve = "old.json"\nunit = "H"\n[[workloads]]\ncurve = "new.json"\n'))
    with pytest.raises(ProfileError, match="names unit 'X'"):
        load_site(_site(tmp_path, '[[workloads]]\ncurve = "old.json"\nunit = "X"\n'))


def _serving_curve():
    pts = []
    for s, rows in {200: [(8, 3_000, 150, 30), (32, 6_000, 160, 90)],
                    400: [(8, 5_000, 300, 20), (32, 11_000, 330, 45)],
                    600: [(8, 5_500, 400, 18), (32, 12_500, 450, 40)]}.items():  # fmt: skip
        for b, tps, w, tpot in rows:
            pts.append(CurvePoint(setting=s, phase="decode", batch_size=b, tokens_per_s=tps,
                                  tokens_per_j=tps / w, power_mean_w=w, tpot_ms=tpot))  # fmt: skip
    return NEW.model_copy(update={"points": pts})


def test_a_serving_workload_plans_at_its_slo(tmp_path):
    save_curve(_serving_curve(), tmp_path / "serve.json")
    p = tmp_path / "s.toml"
    p.write_text('name = "s"\ngpus = 100\nprovision = "mean"\n[[workloads]]\ncurve = "serve.json"\ntpot_ms = 50\n')
    (wf,) = build_fleet(load_site(p)).workloads
    # at 200 W only batch 8 meets 50 ms; at 400 and 600 W batch 32 does and makes more
    assert wf.settings.tolist() == [200, 400, 600]
    assert wf.tokens_per_s.tolist() == [3_000, 11_000, 12_500] and wf.site_w.tolist() == [150, 330, 450]
    assert wf.label.endswith("tpot<=50 ms")
    p.write_text(p.read_text().replace("tpot_ms = 50", "tpot_ms = 10"))
    with pytest.raises(CurveFileError, match="no measured point meets tpot <= 10 ms"):
        build_fleet(load_site(p))


def test_the_two_kind_example_parks_the_costlier_nodes_in_stress():
    from pathlib import Path

    from harness.planner.schedule import per_kind

    site = Path(__file__).resolve().parents[1] / "profiles/sites/example-two-kinds.toml"
    r = plan(site)
    air, liquid = per_kind(r.fleet, r.schedule.frame, r.horizon.step_h)
    assert (air["gpus"], liquid["gpus"]) == (4_800, 4_000)
    # the same GPU makes more per MWh behind 1.6 kW of node overhead than behind 3.6 kW
    assert liquid["mtok_per_mwh"] > 1.2 * air["mtok_per_mwh"]
    assert air["parked_share_in_stress"] > 0.1 and liquid["parked_share_in_stress"] == 0.0
    # whole nodes: every count is a multiple of 8
    counts = r.schedule.frame[[c for c in r.schedule.frame if "gpus@" in c]]
    assert (counts % 8 == 0).all().all()
