"""A real 2-task fleet campaign on a real Slurm cluster (scripts/slurm_cluster.sh start), on the
simulated backend: submit through the CLI, wait, check status, collect, and find the planted board.

Skips where no Slurm answers; fails instead when TOKBENCH_REQUIRE_SLURM=1 (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.fleet import campaign as fleet
from harness.fleet import slurm

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
# short simulated training sweep: 4 power limits, one repeat, short windows
PROFILE_TOML = """\
description = "fleet test: short simulated training sweep"

[workload]
name = "training"
model = "llama-1b"
batch_size = 8
seq_len = 2048

[sweep]
knob = "power-limit"
points = 4
repeats = 1
order = "descending"
warmup_min_s = 2
warmup_max_s = 20
window_s = 4
"""
WAIT_S = 300.0


def _slurm_problem() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return "no Slurm here (sbatch/scontrol not found); start one with scripts/slurm_cluster.sh start"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"Slurm controller does not answer ({(ping.stdout + ping.stderr).strip()[:120]})"
    nodes = subprocess.run(["sinfo", "-h", "-o", "%t %G"], capture_output=True, text=True, check=False).stdout
    if not any(line.split()[0] in ("idle", "mix", "alloc") and "gpu:" in line for line in nodes.splitlines()):
        return f"no Slurm node with gpu GRES is up (sinfo: {nodes.strip()[:120]!r})"
    return None


@pytest.fixture
def slurm_cluster() -> None:
    problem = _slurm_problem()
    if problem:
        if os.environ.get("TOKBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"TOKBENCH_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def _wait(cdir: Path) -> list[fleet.TaskStatus]:
    deadline = time.monotonic() + WAIT_S  # waiting on Slurm: wall time, no device clock here
    while True:
        st = fleet.campaign_status(cdir)
        if all(s.slurm_state not in slurm.ACTIVE_STATES and s.exit_code is not None for s in st):
            return st
        if time.monotonic() > deadline:
            pytest.fail(f"campaign not finished after {WAIT_S:.0f} s: {st}")
        time.sleep(0.5)


def test_real_slurm_campaign_finds_the_planted_board(slurm_cluster, tmp_path: Path, monkeypatch) -> None:
    # the jobs must import this checkout's harness, whatever is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    # a profile path with spaces, quotes and shell syntax: it must arrive intact and run nothing
    prof = tmp_path / 'my "odd" prof\'s; touch PWNED.toml'
    prof.write_text(PROFILE_TOML)
    root = tmp_path / "fleet root"
    sub = _cli(
        "fleet", "submit", "--profile", str(prof), "--nodes", "2", "--gpus-per-node", "2",
        "--sim-gpu", "h100-sxm", "--sim-seed", "7", "--sim-override", "1:0:leakage=4.0",
        "--results-root", str(root), cwd=tmp_path,
    )  # fmt: skip
    assert sub.returncode == 0, sub.stderr
    (cdir,) = [p for p in root.iterdir() if (p / "campaign.json").is_file()]
    c = fleet.load_campaign(cdir)
    assert len(c.submissions) == 1 and c.submissions[0].tasks == [0, 1]

    statuses = _wait(cdir)
    logs = "\n".join(p.read_text() for p in sorted((cdir / "slurm").glob("*.out")))
    for s in statuses:
        assert (s.slurm_state, s.run_status, s.exit_code) == ("COMPLETED", "complete", 0), (s, logs)
        assert s.points_done == 8  # 4 power limits x 2 boards, one repeat
        rec = fleet.read_record(cdir, s.task)
        # Slurm allocated 2 GPUs to each task; each simulated board got its own sweep
        assert rec is not None and len(rec.slurm_gpus) == 2
        assert [r.gpus for r in rec.runs] == [["0"], ["1"]] and all(r.exit_code == 0 for r in rec.runs)
        for r in rec.runs:
            assert r.argv[r.argv.index("--profile") + 1] == str(prof)
    assert not list(tmp_path.rglob("PWNED*"))

    status = _cli("fleet", "status", cdir.name, "--results-root", str(root), cwd=tmp_path)
    assert status.returncode == 0 and status.stdout.count("COMPLETED") == 2, status.stdout + status.stderr

    again = _cli("fleet", "submit", "--resume", cdir.name, "--results-root", str(root), cwd=tmp_path)
    assert again.returncode == 0 and "nothing to re-submit" in again.stdout, again.stdout + again.stderr
    assert len(fleet.load_campaign(cdir).submissions) == 1

    out = _cli("fleet", "collect", str(cdir), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "outlier GPUs (|robust z| > 3.5 among identical parts): 1 (task 1 gpu 0)" in out.stdout, out.stdout

    from harness.fleet.collect import collect
    from harness.records.curves import load_curve

    r = collect(cdir)
    assert len(r.gpus) == 4 and r.gpus["gpu_uuid"].nunique() == 4  # distinct seeded boards
    flagged = set(zip(r.outliers["task"], r.outliers["gpu_index"], strict=True))
    assert flagged == {(1, 0)}, r.gpus.to_string()
    q = r.outliers[r.outliers["metric"] == "max_q_tokens_per_j"]
    assert len(q) == 1 and q.iloc[0]["direction"] == "low"
    healthy = r.gpus[~((r.gpus["task"] == 1) & (r.gpus["gpu_index"] == 0))]
    assert (healthy["max_q_tokens_per_j_z"].abs() < 3.5).all()
    curve = load_curve(r.out_dir / "fleet-curve.json")
    assert curve.part.backend == "fleet" and len(curve.part.uuids) == 3 and curve.points
    assert r.incomplete == []
