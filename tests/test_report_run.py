"""`tokbench report`: figures (PNG and SVG), a report.md that leads with the answer, the summary
table, and one clear line for a run directory that cannot be read."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image as mpimg
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import RunDirError
from harness.readers.analysis import analyse
from harness.readers.report import write_report
from harness.records.runview import load_run
from harness.testing.synthetic import DECODE, PREFILL, SynthRun, fabricate_run


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    run = SynthRun(settings=tuple(np.arange(200.0, 701.0, 50.0)), repeats=3, samples_per_point=50, seed=41,
                   flagged={3: "temp_drift"})
    return fabricate_run(tmp_path_factory.mktemp("rep"), run, "train")


@pytest.fixture(scope="module")
def inf_dir(tmp_path_factory):
    run = SynthRun(phases=(PREFILL, DECODE), batches=(1, 8, 64), kind="inference",
                   settings=(200.0, 300.0, 450.0, 700.0), repeats=2, samples_per_point=0, seed=42)
    return fabricate_run(tmp_path_factory.mktemp("rep"), run, "inf")


def test_report_writes_figures_and_a_readable_markdown(train_dir, tmp_path):
    a = analyse(train_dir)
    rep = write_report(a, tmp_path)
    names = sorted(p.name for p in rep.plots)
    assert names == ["clock-events.png", "curves-train.png", "frontier.png", "timeline.png"]
    for p in rep.plots:
        img = mpimg.imread(p)
        assert img.shape[0] > 300 and img.shape[1] > 500 and img.std() > 0.05  # a real picture, not blank
        svg = p.with_suffix(".svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    md = rep.markdown.read_text()
    c = a.curve("train")
    head = md.split("## Summary")[0]  # the answer comes first
    assert f"**Max-P**: {c.max_p.best:.0f} W" in head
    assert f"best {c.max_q.best:.0f} W: {c.max_q.value:.4g} tokens/J" in head
    assert f"keeps {100 * c.vs_default.throughput_kept:.1f}% of throughput" in head
    assert "binds" in head
    assert "## Flagged points (left out of the statistics)" in md and "temp_drift" in md
    for p in rep.plots:
        assert f"](plots/{p.name})" in md
    assert "tokens/s per GPU" in (tmp_path / "plots" / "curves-train.svg").read_text()  # labelled axes


def test_inference_report_has_tokenomics_and_latency_sentence(inf_dir, tmp_path):
    a = analyse(inf_dir, tpot_ms=10.0)
    rep = write_report(a, tmp_path, formats=("png",))
    assert {p.name for p in rep.plots} == {"tokenomics.png", "curves-decode.png", "curves-prefill.png", "frontier.png",
                                           "clock-events.png"}  # no telemetry, no timeline
    md = rep.markdown.read_text()
    assert "Max-Q under TPOT <= 10 ms" in md and "gives up" in md
    assert "the cap does not bind" in md.lower()  # decode draws less than the caps above it


def test_cli_report_prints_the_summary_table(tmp_path):
    small = fabricate_run(tmp_path, SynthRun(settings=(300.0, 500.0, 700.0), repeats=2, samples_per_point=0, seed=43))
    r = CliRunner().invoke(app, ["report", str(small), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    c = analyse(small).curve("train")
    assert "Max-P W" in r.output and f"{c.max_p.value:,.0f}" in r.output
    assert (tmp_path / "report.md").is_file() and "wrote" in r.output


def test_timeline_uses_the_history_and_polls_split_by_source(train_dir):
    run = load_run(train_dir)
    t = run.telemetry(0)
    assert len(t.samples) == 50 and set(t.samples.columns) >= {"t_s", "power_instant_w", "sm_clock_mhz"}
    assert t.history is not None and list(t.history.columns[:2]) == ["t_s", "power_w"] and len(t.history) == 250


def _one_line_error(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_unreadable_run_directories_are_one_clear_line(train_dir, tmp_path):
    assert "no such run directory" in _one_line_error("report", str(tmp_path / "nope"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{ not json")
    with pytest.raises(RunDirError, match="damaged manifest") as e:
        load_run(bad)
    assert "\n" not in str(e.value)
    newer = tmp_path / "newer"
    newer.mkdir()
    m = json.loads((train_dir / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**m, "schema_version": 7}))
    with pytest.raises(RunDirError, match="schema version 7"):
        load_run(newer)


def test_a_truncated_last_row_is_reported_not_fatal(train_dir, tmp_path):
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(train_dir, cut)
    text = (cut / "points.csv").read_text()
    (cut / "points.csv").write_text(text[: len(text) - 40])
    a = analyse(cut)
    assert any("truncated" in p for p in a.problems)
    assert len(a.run.points) == len(load_run(train_dir).points) - 1
