"""Runs that survive anything: each state a kill can leave is built on disk, then resumed; journals of
other hosts or of a missing driver block nothing; SIGHUP, a --max-time budget and Ctrl-C each end a run
the way an operator expects."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.devices import open_devices
from harness.records.rundir import RunDir

SIM = ["--backend", "sim", "--sim-gpu", "h100-sxm"]
SMALL = ["--profile", "tiny", "--points", "3", "--repeats", "2", "--window", "2", "--warmup-min", "0.2",
         "--warmup-max", "1", "--order", "descending"]
V1 = Path(__file__).parent / "data" / "run-v1"


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _keys(run: Path) -> pd.Series:
    pts = RunDir.open(run).points()
    return pts[["gpu_uuid", "setting", "batch_size", "repeat", "phase"]].apply(tuple, axis=1)


def _assert_every_point_once(run: Path, gpus: int, settings: int = 3, repeats: int = 2) -> None:
    keys = _keys(run)
    assert not keys.duplicated().any(), keys[keys.duplicated()].tolist()
    assert len(keys) == gpus * settings * repeats
    rd = RunDir.open(run)
    assert rd.damaged() == [] and rd.manifest["status"] == "complete"
    rows = set(rd.points()["point_index"])
    files = {int(p.stem.split("-")[1]) for p in (run / "samples").glob("point-*.parquet")}
    assert rows == files  # every row has its samples, and nothing else is left in samples/


@pytest.fixture
def done_run(tmp_path):
    """A finished two-GPU run to break in the ways a kill does."""
    r = _cli("sweep", *SMALL, *SIM, "--sim-count", "2", "--gpus", "0,1", "--out", str(tmp_path), "--run-id", "r")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "r"
    m = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**m, "status": "running", "end_utc": None}))
    return run


def _drop_last_rows(run: Path, n: int) -> list[int]:
    lines = (run / "points.csv").read_text().splitlines(keepends=True)
    dropped = [int(line.split(",")[0]) for line in lines[-n:]]
    (run / "points.csv").write_text("".join(lines[:-n]))
    return dropped


def test_killed_between_samples_and_row_resumes(done_run):
    (idx,) = _drop_last_rows(done_run, 1)  # its samples are on disk, its row never written
    assert (done_run / "samples" / f"point-{idx:04d}.parquet").exists()
    r = _cli("sweep", "--resume", str(done_run))
    assert r.returncode == 0, r.stderr
    assert "measured again" in r.stderr
    _assert_every_point_once(done_run, gpus=2)
    assert (done_run / "samples" / "orphans" / f"point-{idx:04d}.parquet").exists()


def test_killed_mid_row_resumes_without_gluing_rows(done_run):
    text = (done_run / "points.csv").read_text()
    (done_run / "points.csv").write_text(text[: len(text) - 40])  # the last row cut short
    r = _cli("sweep", "--resume", str(done_run))
    assert r.returncode == 0, r.stderr
    _assert_every_point_once(done_run, gpus=2)


def test_killed_between_two_gpus_rows_measures_the_missing_gpu(done_run):
    (idx,) = _drop_last_rows(done_run, 1)  # GPU 1's row of the last point; GPU 0's is kept
    (done_run / "samples" / f"point-{idx:04d}.parquet").unlink()
    r = _cli("sweep", "--resume", str(done_run))
    assert r.returncode == 0, r.stderr
    _assert_every_point_once(done_run, gpus=2)


def test_twenty_kills_at_random_moments_lose_and_repeat_nothing(tmp_path):
    rng = random.Random(12)
    run = tmp_path / "k"
    first = ["sweep", *SMALL, "--window", "20", "--repeats", "6", *SIM, "--out", str(tmp_path), "--run-id", "k"]
    kills = 0
    for _ in range(60):
        args = first if not (run / "manifest.json").exists() else ["sweep", "--resume", str(run)]
        proc = _start(*args)
        time.sleep(rng.uniform(0.3, 3.0))
        if proc.poll() is not None:
            out, err = proc.communicate()
            if proc.returncode == 0:
                break
            assert "nothing to resume" in err, err  # finished between our look and the kill
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        if kills == 20:
            break
    final = _cli("sweep", "--resume", str(run))
    assert final.returncode == 0 or "nothing to resume" in final.stderr, final.stderr
    assert kills >= 10, f"only {kills} kills landed before the run finished"
    _assert_every_point_once(run, gpus=1, repeats=6)
    ds = open_devices("sim", sim_gpu="h100-sxm")
    assert ds.devices[0].power_limits().current_w == 700.0  # every kill's setting was put back
    ds.close()


def test_a_second_resume_of_a_running_run_is_refused(tmp_path):
    long = ["sweep", *SMALL, "--window", "30", *SIM, "--out", str(tmp_path), "--run-id", "c"]
    proc = _start(*long)
    try:
        run = tmp_path / "c"
        deadline = time.monotonic() + 60
        while not (run / "points.csv").exists() or len((run / "points.csv").read_text().splitlines()) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        first = _start("sweep", "--resume", str(run))
        time.sleep(4.0)  # it holds the run's lock now
        second = _cli("sweep", "--resume", str(run), timeout=60)
        assert second.returncode == 2
        assert "another process is writing this run" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


def _journal(uuid: str, host: str, pid: int, backend: str = "nvml") -> None:
    d = Path(os.environ["TOKBENCH_STATE_DIR"]) / "journal"
    d.mkdir(parents=True, exist_ok=True)
    reopen = {"backend": backend, "sim_gpu": "h100-sxm", "sim_count": 1, "sim_seed": 0, "sim_overrides": []}
    (d / f"{uuid}.json").write_text(json.dumps({"uuid": uuid, "index": 0, "backend": backend, "host": host,
                                                "owner_pid": pid, "reopen": reopen,
                                                "found": {"power_limit": 700.0}}))


@pytest.mark.parametrize("host", ["other-node", "this"])
def test_a_stale_journal_blocks_no_reading_command(tmp_path, host):
    dead = subprocess.run(["true"]).returncode or 999_999  # a pid no process has
    _journal("GPU-nvml-0", socket.gethostname() if host == "this" else host, dead)
    for args in (["report", str(V1), "--out", str(tmp_path / "rep")], ["plan", "--help"],
                 ["devices", "--backend", "sim"]):
        r = _cli(*args)
        assert r.returncode == 0, (args, r.stderr)
        notes = [line for line in r.stderr.splitlines() if "journal" in line or "GPU setting" in line]
        assert len(notes) == 1, (args, r.stderr)
    r = _cli("restore")
    assert r.returncode == 4 and "Traceback" not in r.stderr
    why = "restore it there" if host != "this" else "cannot be restored here: NVML is not available"
    assert why in r.stderr


def test_sighup_restores_the_limit(tmp_path):
    ds = open_devices("sim", sim_gpu="h100-sxm")
    ds.devices[0].set_power_limit(650)
    ds.close()
    proc = _start("sweep", *SMALL, "--window", "30", *SIM, "--out", str(tmp_path), "--run-id", "h")
    deadline = time.monotonic() + 60
    while not (tmp_path / "h" / "points.csv").exists() or \
            len((tmp_path / "h" / "points.csv").read_text().splitlines()) < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 129 and "SIGHUP" in err and "Traceback" not in err
    ds = open_devices("sim", sim_gpu="h100-sxm")
    assert ds.devices[0].power_limits().current_w == 650.0
    ds.close()
    assert json.loads((tmp_path / "h" / "manifest.json").read_text())["status"] == "interrupted"


def test_ctrl_c_names_the_run_and_how_to_resume(tmp_path):
    proc = _start("sweep", *SMALL, "--window", "30", *SIM, "--out", str(tmp_path), "--run-id", "i")
    deadline = time.monotonic() + 60
    while not (tmp_path / "i" / "points.csv").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert str(tmp_path / "i") in err and f"tokbench sweep --resume {tmp_path / 'i'}" in " ".join(err.split())


def test_a_budget_stop_is_its_own_status_and_resume_finishes_it(tmp_path):
    r = _cli("sweep", *SMALL, *SIM, "--max-time", "6", "--out", str(tmp_path), "--run-id", "b")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "b"
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "stopped" and m["end_utc"]
    done = len(RunDir.open(run).points())
    assert 0 < done < 6
    assert f"{6 - done} planned measurement(s) remain" in " ".join(r.stdout.split())
    again = _cli("sweep", "--resume", str(run))
    assert again.returncode == 0, again.stderr
    _assert_every_point_once(run, gpus=1)
