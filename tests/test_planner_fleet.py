"""Fleet, hull and steady answers: no solver, known numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from planner_fixtures import make_curve, make_site

from harness.errors import CurveFileError, ProfileError
from harness.planner.capacity import build_fleet, concave_hull
from harness.planner.steady import best_settings, steady_table
from harness.records.curves import save_curve

# compute-bound: tokens/J falls as power rises (slopes from the origin 300, 250, 200, 160 tok/s/W)
CONCAVE = make_curve([100, 200, 300, 400], [30_000, 50_000, 60_000, 64_000], [100, 200, 300, 400])
LINEAR = make_curve([100, 200, 300, 400], [10_000, 20_000, 30_000, 40_000], [100, 200, 300, 400])


def test_hull_keeps_a_concave_curve_and_drops_what_a_mix_beats():
    w = np.array([100.0, 200, 300, 400])
    assert concave_hull(w, np.array([30e3, 50e3, 60e3, 64e3])).tolist() == [0, 1, 2, 3]
    # a linear curve is one segment: any power is reached as well by parking GPUs at the top setting
    assert concave_hull(w, np.array([10e3, 20e3, 30e3, 40e3])).tolist() == [3]
    # 200 W lies below the chord 100 W → 300 W; 400 W makes no more than 300 W
    assert concave_hull(w, np.array([30e3, 40e3, 60e3, 60e3])).tolist() == [0, 2]


def test_segments_carry_fleet_mw_and_gtok_per_mwh():
    fleet = build_fleet(make_site(gpus=10_000), [CONCAVE])
    mw, eff, top = fleet.workloads[0].segments()
    assert mw == pytest.approx([1.0, 1.0, 1.0, 1.0])  # 10,000 GPUs × 100 W steps
    assert eff == pytest.approx([3.6 * 300, 3.6 * 200, 3.6 * 100, 3.6 * 40])  # Gtok per MWh
    assert top.tolist() == [0, 1, 2, 3]


def test_site_power_includes_overhead_pue_and_the_provisioned_statistic():
    curve = make_curve([200, 700], [30_000, 66_000], [197, 688], p99=[206, 721], max_1s=[201, 703.5])
    site = make_site(
        units=[{"name": "node", "count": 1, "gpus_per_unit": 8, "overhead_w_per_unit": 2400}],
        pue=1.2,
        provision="p99",
    )
    wf = build_fleet(site, [curve]).workloads[0]
    assert wf.gpus == 8
    assert wf.site_w.tolist() == pytest.approx([1.2 * (206 + 300), 1.2 * (721 + 300)])
    assert wf.site_mean_w.tolist() == pytest.approx([1.2 * (197 + 300), 1.2 * (688 + 300)])
    # never the cap: provisioning for the mean uses 688 W, not 700 W
    wf_mean = build_fleet(make_site(gpus=1, provision="mean"), [curve]).workloads[0]
    assert wf_mean.site_w[-1] == pytest.approx(688)


def test_budget_that_binds_and_one_that_does_not():
    # 10,000 GPUs of the linear curve; 3 MW powers 10,000 at 300 W but only 7,500 at 400 W
    rows = steady_table(
        make_site(gpus=10_000, power_budget_mw=3.0, price_per_mwh=100.0),
        build_fleet(make_site(gpus=10_000, power_budget_mw=3.0), [LINEAR]),
    )
    by = {r.setting: r for r in rows}
    assert by[300].installed_running == 10_000 and by[300].installed_tokens_per_s == pytest.approx(3e8)
    assert by[400].installed_running == 7_500 and by[400].installed_tokens_per_s == pytest.approx(3e8)
    assert by[100].sized_gpus == 30_000 and by[100].sized_tokens_per_s == pytest.approx(3e8)
    # energy cost: 100 $/MWh × 1e-4 MW per GPU-hour over 36 Mtok per GPU-hour at 100 tok/s/W
    assert by[200].usd_per_mtok_energy == pytest.approx(100 * 200e-6 / (20_000 * 3600 / 1e6))
    assert by[200].mtok_per_mwh == pytest.approx(360_000.0)  # 100 tok/J × 3.6e9 J/MWh


def test_best_settings_with_fixed_gpus_and_when_gpus_may_be_added():
    site = make_site(
        gpus=10_000,
        power_budget_mw=2.5,
        price_per_mwh=50.0,
        capex={"per_gpu": 8760.0, "amortisation_years": 1.0},
    )
    fleet = build_fleet(site, [CONCAVE])
    rows = steady_table(site, fleet)
    best = best_settings(rows)["toy train b8"]
    # installed: 10,000 GPUs; 2.5 MW runs all at 200 W (5e8 tok/s), or 8,333 at 300 W (5.0e8), 6,250 at 400 W
    assert best["installed_setting"] == 200 and best["installed_tokens_per_s"] == pytest.approx(5e8)
    # sized to power: 25,000 GPUs at 100 W make 7.5e8 tok/s (capacity at Max-Q vs Max-P: 6,250 GPUs → 4e8)
    assert best["sized_setting"] == 100 and best["sized_gpus"] == 25_000
    assert best["sized_tokens_per_s"] == pytest.approx(7.5e8)
    by = {r.setting: r for r in rows}
    # with capex 1 $/GPU-hour: (50 $/MWh × 1e-4 MW + 1 $) / 108 Mtok at 100 W
    assert by[100].usd_per_mtok_with_capex == pytest.approx((50 * 100e-6 + 1.0) / (30_000 * 3600 / 1e6))
    assert "max-q" in by[100].tags and "max-p" in by[400].tags


def test_fleet_sized_from_the_budget_at_the_design_setting():
    site_p = make_site(power_budget_mw=4.0)  # Max-P 400 W → 10,000 GPUs
    site_q = make_site(power_budget_mw=4.0, design_setting="max_q")  # Max-Q 100 W → 40,000 GPUs
    assert build_fleet(site_p, [CONCAVE]).gpus == 10_000
    assert build_fleet(site_q, [CONCAVE]).gpus == 40_000


def test_a_site_that_cannot_power_one_gpu_is_refused():
    site = make_site(power_budget_mw=0.0001, pue=1.5, overhead_w_per_gpu=20.0)  # 100 W < 1.5 × 120 W
    with pytest.raises(ProfileError, match=r"0\.0001 MW cannot power a single GPU \(one needs 0\.18 kW"):
        build_fleet(site, [CONCAVE])


def test_a_curve_of_another_schema_version_is_refused(tmp_path):
    p = tmp_path / "c.json"
    save_curve(CONCAVE, p)
    raw = json.loads(p.read_text())
    raw["schema_version"] = 2
    p.write_text(json.dumps(raw))
    site_file = tmp_path / "site.toml"
    site_file.write_text('name = "s"\ngpus = 4\n[[workloads]]\ncurve = "c.json"\n')
    from harness.planner import plan

    with pytest.raises(CurveFileError, match="curve schema version 2 is not supported") as e:
        plan(site_file)
    assert "\n" not in str(e.value)


def test_provisioning_for_a_statistic_the_curve_lacks_is_refused():
    with pytest.raises(CurveFileError, match="no power_p99_w"):
        build_fleet(make_site(gpus=1, provision="p99"), [CONCAVE])


@pytest.mark.parametrize(
    "body, message",
    [
        ('name = "s"\n[[workloads]]\ncurve = "c.json"\n', "give power_budget_mw, gpus or units"),
        ('name = "s"\ngpus = 2\n[[workloads]]\ncurve = "a.json"\nshare = 0.5\n', "shares must sum to 1"),
        ('name = "s"\ngpus = 2\npue = 0.8\n[[workloads]]\ncurve = "a.json"\n', "at 'pue'"),
        (
            'name = "s"\ngpus = 2\n[[workloads]]\ncurve = "a.json"\n[battery]\nenergy_mwh = 1\n'
            "charge_mw = 1\ndischarge_mw = 1\nsoc_min = 0.5\nsoc_max = 0.4\n",
            "soc_max must exceed soc_min",
        ),
        ('name = "s"\ngpus = 2\nbogus = 1\n[[workloads]]\ncurve = "a.json"\n', "at 'bogus'"),
        ('name = "s"\ngpus = [', "not a readable TOML"),
    ],
)
def test_site_file_errors_are_one_line(tmp_path, body, message):
    from harness.planner.site import load_site

    p = tmp_path / "site.toml"
    p.write_text(body)
    with pytest.raises(ProfileError, match=message) as e:
        load_site(p)
    assert "\n" not in str(e.value)


def test_latency_targets_add_steady_rows_provisioned_from_the_fit():
    from harness.records.curves import LatencyPoint

    decode = make_curve([200, 300, 400], [6_000, 12_000, 12_000], [196, 290, 290], p99=[205, 300, 300])
    lp = LatencyPoint(
        tpot_ms_target=50.0,
        setting=250.0,
        batch_size=8,
        tokens_per_j=40.0,
        tokens_per_s=9_000.0,
        tpot_ms=48.0,
    )
    decode = decode.model_copy(update={"latency_points": [lp]})
    site = make_site(gpus=1000, power_budget_mw=0.2, provision="p99", price_per_mwh=100.0)
    rows = steady_table(site, build_fleet(site, [decode]))
    (row,) = [r for r in rows if r.tags == ("tpot<=50 ms b8",)]
    assert row.setting == 250 and row.gpu_w == pytest.approx(252.5)  # p99 of the fit at 250 W
    assert row.sized_gpus == 792 and row.installed_running == 792  # 0.2 MW / 252.5 W
    assert row.mtok_per_mwh == pytest.approx(9_000 * 3600 / 1e6 / 225e-6)  # at the mean draw, 9,000/40 W
    # the latency row answers its own question: it is not a candidate for the best setting
    assert best_settings(rows)["toy train b8"]["installed_setting"] == 300


def test_a_fine_hull_is_thinned_to_a_dozen_links_from_below():
    from harness.planner.capacity import thin_hull

    w = np.array([100.0, 200, 300, 400])
    t = np.array([100.0, 190, 279, 300])
    # triangle areas (doubled) of the interior vertices: 1000, 100, 6800: the 200 W one goes first
    assert thin_hull(w, t, np.array([0, 1, 2, 3]), 3).tolist() == [0, 2, 3]
    assert thin_hull(w, t, np.array([0, 1, 2, 3]), 1).tolist() == [3]  # the top always stays
    # a fit on a 5 W grid: 101 settings on a concave curve, 12 kept, within 0.5% of the full hull
    fine = np.arange(200.0, 701.0, 5.0)
    curve = make_curve(fine, 66_000 * (1 - np.exp(-(fine - 90) / 180)), fine)
    wf = build_fleet(make_site(gpus=10, max_segments=12), [curve]).workloads[0]
    assert len(concave_hull(wf.site_w, wf.tokens_per_s)) > 60 and len(wf.hull()) == 12
    assert 0 < wf.hull_gap() < 0.005
    assert len(wf.segments()[0]) == 12


def test_the_printed_steady_table_shows_an_even_spread_and_every_tagged_row():
    from harness.planner.tables import shown_rows

    fine = np.arange(200.0, 701.0, 5.0)
    curve = make_curve(fine, 66_000 * (1 - np.exp(-(fine - 90) / 180)), fine)
    site = make_site(gpus=10)
    rows = steady_table(site, build_fleet(site, [curve]))
    shown = shown_rows(rows)
    assert len(rows) == 101 and 12 <= len(shown) <= 14
    assert {r.setting for r in rows if r.tags} <= {r.setting for r in shown}
    assert shown[0].setting == 200 and shown[-1].setting == 700
