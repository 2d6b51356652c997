"""One run, one answer: the sweep summary, `report`, `report --tpot-ms` with a target every point meets,
`export` and `fleet collect` name the same Max-Q range (and recommended setting) and the same Max-P for a
decode run swept over the SM clock, as a new user would run them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from harness.fleet import campaign as fleet
from harness.fleet import collect as fleet_collect
from harness.readers.analysis import analyse

SWEEP = ["--profile", "decode-llama-1b", "--backend", "sim", "--knob", "sm-clock", "--points", "6", "--repeats", "2",
         "--batch-sizes", "64", "--window", "2", "--warmup-min", "0.5", "--warmup-max", "60"]


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("onemaxq")
    env = {**os.environ, "TOKBENCH_STATE_DIR": str(root / "state"), "TOKBENCH_SIM_STATE_DIR": str(root / "sim"),
           "COLUMNS": "200"}
    sweep = _cli("sweep", *SWEEP, "--out", str(root), "--run-id", "r", env=env)
    return root / "r", sweep.stdout, env


def _summary_marks(table: str, phase: str = "decode") -> tuple[list[float], float | None, float | None]:
    """(settings marked Max-Q, the starred one, the one marked Max-P) of the ``phase`` rows."""
    q, star, p = [], None, None
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) < 10 or cells[2] != phase:
            continue
        setting, marks = float(cells[3]), cells[9]
        if "Max-Q" in marks:
            q.append(setting)
        if "Max-Q*" in marks:
            star = setting
        if "Max-P" in marks:
            p = setting
    return sorted(q), star, p


def test_every_output_names_the_same_max_q_and_max_p(run, tmp_path):
    path, sweep_out, env = run
    c = analyse(path).curve("decode", 64)
    q, p = c.max_q, c.max_p
    assert len(c.stats) == 6

    # the sweep summary
    marked, star, max_p = _summary_marks(sweep_out)
    assert marked == sorted(q.settings) and max_p == p.best
    assert star == (None if q.wide else q.best)

    # report.md's headline
    _cli("report", str(path), env=env)
    md = (path / "report.md").read_text()
    span = f"{q.lo:.0f} MHz" if q.lo == q.hi else f"{q.lo:.0f}-{q.hi:.0f} MHz"
    assert f"**Max-Q**: {span}" in md and f"{q.best:.0f} MHz" in md
    assert f"**Max-P**: {p.best:.0f} MHz" in md

    # report with a latency target every point meets: the same settings in its sentence
    lat = _cli("report", str(path), "--tpot-ms", "100000", env=env).stdout
    sentence = " ".join(lat.split())
    m = re.search(r"Max-Q under TPOT <= 100000 ms: (\d+) MHz.*?Max-P at the same target \((\d+) MHz", sentence)
    assert m, sentence
    assert float(m.group(1)) == q.best and float(m.group(2)) == p.best

    # the curve file planners read
    _cli("export", str(path), env=env)
    curve = json.loads((path / "curve.json").read_text())
    (cq,), (cp,) = curve["max_q"], curve["max_p"]
    assert (cq["lo"], cq["hi"], cq["best"]) == (q.lo, q.hi, q.best)
    assert (cp["lo"], cp["hi"], cp["best"]) == (p.lo, p.hi, p.best)

    r = _collect_one(path, tmp_path, "decode-llama-1b")
    row = r.gpus.iloc[0]
    assert (row.max_q_lo, row.max_q_hi, row.max_q_setting, row.max_p_setting) == (q.lo, q.hi, q.best, p.best)
    (fq,), (fp,) = r.curves[0].max_q, r.curves[0].max_p
    assert (fq.lo, fq.hi, fq.best, fp.best) == (q.lo, q.hi, q.best, p.best)
    assert pd.read_csv(r.out_dir / "gpus.csv").max_q_setting.item() == q.best


def _collect_one(path, tmp_path, profile: str):
    """``fleet collect`` over a one-node campaign holding the run at ``path``."""
    camp = fleet.new_campaign(fleet.FleetRequest(profile=profile, nodes=1, gpus_per_node=1, sim_gpu="h100-sxm"),
                              launcher=["tokbench"])
    cdir = tmp_path / camp.id
    cdir.mkdir()
    fleet.save_campaign(camp, cdir)
    shutil.copytree(path, cdir / "node0" / "task-0" / "gpu-0", ignore=shutil.ignore_patterns(".lock"))
    return fleet_collect.collect(cdir)


def test_a_search_run_names_the_searchs_answer_everywhere(tmp_path):
    """A Max-Q search answers with the tried setting its model rates best, which need not be the best single
    window: the summary's star, report.md, the exported curve and fleet collect name the search's answer,
    not a second Max-Q beside it."""
    env = {**os.environ, "TOKBENCH_STATE_DIR": str(tmp_path / "state"),
           "TOKBENCH_SIM_STATE_DIR": str(tmp_path / "sim"), "COLUMNS": "200"}
    out = _cli("sweep", "--search", "max-q", "--backend", "sim", "--window", "5", "--warmup-min", "1",
               "--warmup-max", "5", "--out", str(tmp_path), "--run-id", "s", env=env).stdout
    path = tmp_path / "s"
    answer = float(re.search(r"Max-Q search, batch 8: ([\d.]+) W", out).group(1))
    q = analyse(path).curve("train", 8).max_q
    # this run's best single window is another setting (else there would be nothing to test)
    assert q.top != answer and q.best == answer
    assert _summary_marks(out, "train")[1] == answer
    _cli("report", str(path), env=env)
    assert f"best {answer:.0f} W" in (path / "report.md").read_text()
    _cli("export", str(path), env=env)
    (cq,) = json.loads((path / "curve.json").read_text())["max_q"]
    assert cq["best"] == answer
    assert _collect_one(path, tmp_path, "train-llama-1b").gpus.iloc[0].max_q_setting == answer
