"""`tokbench compare`: A100 against H100 on real simulated sweeps, and mismatched runs refused
unless --allow-mismatch, which then marks every output."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import UsageError
from harness.readers.compare import MISMATCH_MARK, compare_runs, write_comparison
from harness.sweep.run import SweepOptions, run_sweep
from harness.testing.synthetic import A100, H100, SynthPhase, SynthRun, fabricate_run

SWEEP = dict(profile="train-llama-1b", percent=(40, 60, 80, 100), repeats=2, window_s=4.0, warmup_min_s=2.0,
             warmup_max_s=20.0, backend="sim")


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Real simulated training sweeps of an A100 and an H100 (a few seconds each)."""
    root = tmp_path_factory.mktemp("cmp")
    mp = pytest.MonkeyPatch()
    mp.setenv("TOKBENCH_SIM_STATE_DIR", str(root / "sim-state"))
    try:
        return {gpu: run_sweep(SweepOptions(out=str(root), run_id=gpu, sim_gpu=gpu, **SWEEP)).run_dir.path
                for gpu in ("a100-sxm", "h100-sxm")}
    finally:
        mp.undo()


def test_h100_over_a100_max_p_on_simulated_training_sweeps(sweeps, tmp_path):
    cmp = write_comparison(compare_runs([sweeps["a100-sxm"], sweeps["h100-sxm"]]), tmp_path)
    a100, h100 = cmp.rows
    assert not cmp.mismatched
    assert (a100.part, h100.part) == ("NVIDIA A100-SXM4-80GB (simulated)", "NVIDIA H100 80GB HBM3 (simulated)")
    ratio = h100.max_p_tokens_per_s / a100.max_p_tokens_per_s
    assert 2.0 <= ratio <= 3.5
    assert h100.ratio_max_p == pytest.approx(ratio) and a100.ratio_max_p == 1.0
    for r in cmp.rows:  # Max-Q is below the max limit and saves energy per token
        assert r.max_q_best < r.max_p_setting and r.max_q_tokens_per_j > r.tokens_per_j_default
        assert 0.3 < r.throughput_kept < 1.0
        assert r.tokens_per_s_per_kw == pytest.approx(
            r.max_p_tokens_per_s / (cmp.analyses[cmp.rows.index(r)].curve("train").at(r.max_p_setting).power_mean_w
                                    / 1000))
    assert [p.name for p in cmp.plots] == ["compare-train-b8.png"]
    assert (tmp_path / "plots" / "compare-train-b8.svg").is_file()
    md = cmp.markdown.read_text()
    assert "MISMATCHED" not in md and f"{ratio:.2f}x" in md


def _synth(tmp_path, run_id, **kw):
    base = SynthRun(settings=(200.0, 300.0, 400.0, 500.0, 600.0, 700.0), repeats=2, samples_per_point=0, seed=5)
    return fabricate_run(tmp_path, base.with_(**kw), run_id)


def test_mismatched_metadata_is_refused_then_marked_everywhere(tmp_path):
    a = _synth(tmp_path, "bf16")
    b = _synth(tmp_path, "fp32", precision="fp32", batches=(16,))
    with pytest.raises(UsageError, match=r"precision: 'bf16' \(bf16\) vs 'fp32' \(fp32\).*--allow-mismatch"):
        compare_runs([a, b])
    r = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "refused")])
    assert r.exit_code != 0 and not (tmp_path / "refused").exists()
    out = tmp_path / "marked"
    r = CliRunner().invoke(app, ["compare", str(a), str(b), "--allow-mismatch", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "MISMATCHED" in r.output
    assert MISMATCH_MARK in (out / "compare.md").read_text()
    j = json.loads((out / "compare.json").read_text())
    assert j["mismatched"] is True and any("batch_size" in d for d in j["differences"])
    svg = next((out / "plots").glob("*.svg")).read_text()
    assert "MISMATCHED COMPARISON" in svg


def test_synthetic_generations_line_up_on_the_normalised_axis(tmp_path):
    a100_train = SynthPhase("train", tokens_per_s=22000.0, draw_w=400.0, static_w=90.0, exponent=0.5)
    a = _synth(tmp_path, "a100", part=A100, phases=(a100_train,), settings=(120.0, 160.0, 240.0, 320.0, 400.0))
    h = _synth(tmp_path, "h100", part=H100)
    cmp = compare_runs([a, h])
    ra, rh = cmp.rows
    assert rh.max_p_tokens_per_s / ra.max_p_tokens_per_s == pytest.approx(60000 / 22000, rel=0.03)
    assert ra.max_p_setting == 400.0 and rh.max_p_setting >= 600.0
    with pytest.raises(UsageError, match="at least two"):
        compare_runs([a])
