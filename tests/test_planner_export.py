"""The planner reads what `tokbench export` writes: a synthetic sweep, exported, planned."""

from __future__ import annotations

import pytest

from harness.errors import ProfileError
from harness.planner import plan
from harness.readers.analysis import analyse
from harness.readers.export import build_curve
from harness.records.curves import save_curve
from harness.testing.synthetic import DECODE, TRAIN, SynthRun, fabricate_run


def _site(tmp_path, curve_name: str, extra: str = "", workload: str = "") -> str:
    p = tmp_path / "site.toml"
    p.write_text(
        f'name = "s"\npower_budget_mw = 1.0\nprovision = "p99"\nprice_per_mwh = 50.0\n{extra}'
        f'[[workloads]]\ncurve = "{curve_name}"\n{workload}'
    )
    return p


def test_an_exported_training_curve_plans(tmp_path):
    run = fabricate_run(tmp_path, SynthRun(phases=(TRAIN,), samples_per_point=0), "train")
    save_curve(build_curve(analyse(run)), tmp_path / "train.json")
    r = plan(_site(tmp_path, "train.json"))
    wf = r.fleet.workloads[0]
    assert wf.gpus == int(1e6 // wf.site_w[wf.max_p_index])  # sized at Max-P on the p99 draw
    # the synthetic part's tokens/J peaks at 300 W; provisioning for p99 keeps it near there
    assert 250 <= wf.settings[wf.max_q_index] <= 350
    # the exported fit has a setting every 5 W; the LP gets a dozen hull segments of it
    assert len(wf.settings) > 50 and len(wf.segments()[0]) <= 12 and wf.hull_gap() < 0.005
    best = r.best[wf.label]
    assert best["sized_gpus"] > best.get("installed_tokens_per_s", 0) / TRAIN.tokens_per_s


def test_an_exported_decode_curve_with_a_latency_target_plans(tmp_path):
    run = fabricate_run(
        tmp_path, SynthRun(phases=(DECODE,), batches=(8, 32), kind="inference", samples_per_point=0), "dec"
    )
    curve = build_curve(analyse(run, tpot_ms=20.0), tpot_ms=20.0)
    save_curve(curve, tmp_path / "dec.json")
    with pytest.raises(ProfileError, match=r"fits for more than one \(phase, batch\): decode b8, decode b32"):
        plan(_site(tmp_path, "dec.json", "gpus = 100\n"))
    r = plan(_site(tmp_path, "dec.json", "gpus = 100\n", "batch_size = 32\n"))
    (row,) = [row for row in r.steady if row.tags == ("tpot<=20 ms b32",)]
    lp = curve.latency_points[0]
    assert (row.setting, row.tokens_per_s_per_gpu) == (lp.setting, lp.tokens_per_s)
    # decode's draw stops following the cap above its own draw: settings there cost the same power
    wf = r.fleet.workloads[0]
    top = wf.site_w[wf.settings >= 400]
    assert top.max() - top.min() == pytest.approx(0.0, abs=0.05 * top.max())
