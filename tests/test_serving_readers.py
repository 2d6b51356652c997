"""Readers of a serving-under-load run (the serving twin on the simulated H100, swept over power caps
and concurrencies): the tokenomics frontier per power setting, Max-Q under a p99 latency SLO, goodput
per joule, and the curve file's serving fields."""

from __future__ import annotations

import pytest
from test_serving_twin import PROFILE  # the twin tests' decode-heavy endpoint profile

from harness.readers.analysis import analyse
from harness.readers.export import export_run
from harness.records.curves import load_curve
from harness.sweep.run import SweepOptions, run_sweep


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-readers")
    (root / "serve.toml").write_text(PROFILE)
    # module-scoped: runs before the per-test state directories of conftest, so it brings its own
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOKBENCH_SIM_STATE_DIR", str(root / "sim-state"))
        mp.setenv("TOKBENCH_STATE_DIR", str(root / "tokbench-state"))
        r = run_sweep(SweepOptions(profile=str(root / "serve.toml"), backend="sim", out=str(root), yes=True,
                                   values=(450.0, 700.0), batch_sizes=(1, 16, 128), window_s=10, warmup_min_s=1,
                                   warmup_max_s=60))  # 10 s windows: the cap holds on ~1 s means
    return r.run_dir.path, r.points


def test_frontier_per_setting_maxq_under_slo_and_goodput_per_joule(run):
    path, points = run
    a = analyse(str(path), tpot_ms=9.0)
    tk = a.tokenomics
    assert tk.phase == "serve" and len(tk.points) == 6
    by_point = {(p.setting, p.batch_size): p for p in points}
    for op in tk.points:
        pt = by_point[(op.setting, op.batch_size)]
        # per GPU and per joule in output tokens; the SLO on the p99 of per-request TPOT
        assert op.tokens_per_s == pytest.approx(pt.output_tokens_per_s)
        assert op.tokens_per_j == pytest.approx(pt.output_tokens / pt.joules, rel=0.01)
        assert op.tpot_ms_max == pytest.approx(pt.tpot_ms_p99)
        assert op.goodput_tokens_per_j == pytest.approx(pt.goodput_tokens_per_s / pt.power_mean_w)
    frontiers = tk.frontier_by_setting()
    assert set(frontiers) == {450.0, 700.0}
    for pts in frontiers.values():  # more per-GPU speed costs per-user speed along each setting's frontier
        assert [p.batch_size for p in pts] == [1, 16, 128]
    ch = tk.latency
    assert ch.max_q is not None and ch.max_q.tpot_ms_max <= 9.0
    assert all(p.tpot_ms_max > 9.0 or p.tokens_per_j <= ch.max_q.tokens_per_j for p in tk.points)
    best = tk.best_goodput_per_j()
    assert best.goodput_tokens_per_j == max(p.goodput_tokens_per_j for p in tk.points) > 0


def test_curve_file_carries_the_serving_fields(run, tmp_path):
    path, points = run
    curve, out = export_run(analyse(str(path)), "json", tmp_path / "serve.json", tpot_ms=9.0)
    back = load_curve(out)
    pts = [p for p in back.points if p.batch_size == 16]
    assert pts and all(p.output_tokens_per_s and p.goodput_tokens_per_j is not None and p.tpot_ms_p99 for p in pts)
    (lp,) = back.latency_points
    assert lp.tpot_ms_target == 9.0 and lp.tokens_per_s_per_user > 0 and lp.goodput_tokens_per_j is not None


def test_a_run_written_before_the_serving_columns_still_opens_and_resumes(tmp_path):
    import shutil
    from dataclasses import replace
    from pathlib import Path

    from harness.records.rundir import POINT_COLUMNS, Point, RunDir

    old = tmp_path / "run-v1"
    shutil.copytree(Path(__file__).parent / "data" / "run-v1", old)
    run = RunDir.open(old)
    header = (old / "points.csv").read_text().splitlines()[0].split(",")
    assert "goodput_rps" not in header and run.columns == tuple(header)
    df = run.points()
    assert list(df.columns[: len(header)]) == header and df["goodput_rps"].isna().all()
    # a resumed run appends rows of its own columns: the file stays one table
    row = df.iloc[0]
    first = Point(**{c: row[c] for c in POINT_COLUMNS if c in header})
    run.write_row(replace(first, point_index=99, goodput_rps=1.0))
    again = RunDir.open(old).points()
    assert len(again) == len(df) + 1 and again["goodput_rps"].isna().all()
