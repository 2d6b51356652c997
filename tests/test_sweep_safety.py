"""Safety of a sweep on the simulated backend, with real subprocesses and real signals:
settings are put back on SIGINT and SIGTERM, a hard kill is repaired by the next process from
the journal, finished points survive, and --resume completes the run exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.devices import open_devices

SIM = ["--backend", "sim", "--sim-gpu", "h100-sxm"]
LONG_PLAN = ["--profile", "train-llama-1b", "--points", "6", "--repeats", "3", "--window", "40",
             "--warmup-min", "2", "--warmup-max", "5", "--order", "descending"]


def _gpu():
    return open_devices("sim", sim_gpu="h100-sxm")


def _tokbench(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy(), **kw)


def _wait_for_points(run_dir: Path, n: int, proc, timeout=60.0) -> None:
    t0 = time.monotonic()
    csv = run_dir / "points.csv"
    while time.monotonic() - t0 < timeout:
        if csv.exists() and len(pd.read_csv(csv)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"sweep ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("no points appeared")


@pytest.fixture
def original_650():
    """Leave the simulated GPU at a non-default limit and a clock lock, as an operator might."""
    ds = _gpu()
    ds.devices[0].set_power_limit(650)
    ds.close()
    return 650.0


@pytest.mark.parametrize("sig,exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_sweep_restores_settings_and_keeps_points(tmp_path, original_650, sig, exit_code):
    proc = _tokbench(["sweep", *LONG_PLAN, *SIM, "--out", str(tmp_path), "--run-id", "r1"])
    run = tmp_path / "r1"
    _wait_for_points(run, 2, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == exit_code, err
    assert "Traceback" not in err
    ds = _gpu()
    assert ds.devices[0].power_limits().current_w == original_650
    assert ds.devices[0].sm_clock_lock() is None
    ds.close()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    points = pd.read_csv(run / "points.csv")
    assert len(points) >= 2
    for idx in points["point_index"]:
        assert (run / "samples" / f"point-{idx:04d}.parquet").exists()


def test_sigkill_is_repaired_by_the_next_process_and_resume_completes(tmp_path, original_650):
    plan = ["--profile", "train-llama-1b", "--points", "4", "--repeats", "2", "--window", "20",
            "--warmup-min", "1", "--warmup-max", "3", "--order", "descending"]
    proc = _tokbench(["sweep", *plan, *SIM, "--out", str(tmp_path), "--run-id", "r2"])
    run = tmp_path / "r2"
    _wait_for_points(run, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ds = _gpu()
    changed = ds.devices[0].power_limits().current_w
    ds.close()
    assert changed != original_650  # the kill left the GPU at a swept setting...
    restored = subprocess.run([sys.executable, "-m", "harness.cli", "restore"], capture_output=True, text=True)
    assert restored.returncode == 0, restored.stderr
    assert "650 W" in restored.stdout
    ds = _gpu()
    assert ds.devices[0].power_limits().current_w == original_650  # ...and a new process put it back
    ds.close()
    before = pd.read_csv(run / "points.csv")
    resumed = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", "--resume", str(run)],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = pd.read_csv(run / "points.csv")
    keys = after[["setting", "batch_size", "repeat", "phase"]].apply(tuple, axis=1)
    assert not keys.duplicated().any()
    assert set(keys) == {(s, 8, r, "train") for s in (700.0, 533.3, 366.7, 200.0) for r in (0, 1)}
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)  # nothing finished was rewritten
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
    ds = _gpu()
    assert ds.devices[0].power_limits().current_w == original_650
    ds.close()


def test_a_killed_search_is_repaired_and_resumes_from_its_points(tmp_path, original_650):
    """A Max-Q search killed mid-run, in the middle of writing a row: the next process puts the limit
    back, and --resume drops the torn row and carries on from the finished points (not measured again,
    not rewritten, and counted in the search's decision and budget), ending with an answer in the
    manifest and the limit as it was found."""
    proc = _tokbench(["sweep", "--profile", "train-llama-1b", "--search", "max-q", "--window", "20",
                      "--warmup-min", "1", "--warmup-max", "3", *SIM, "--out", str(tmp_path), "--run-id", "s1"])
    run = tmp_path / "s1"
    _wait_for_points(run, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = pd.read_csv(run / "points.csv")
    text = (run / "points.csv").read_text()
    (run / "points.csv").write_text(text + text.splitlines()[-1][:40])  # a third row cut short
    restored = subprocess.run([sys.executable, "-m", "harness.cli", "restore"], capture_output=True, text=True)
    assert restored.returncode == 0 and "650 W" in restored.stdout, restored.stdout + restored.stderr
    resumed = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", "--resume", str(run)],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = pd.read_csv(run / "points.csv")
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)  # nothing finished was rewritten
    keys = after[["setting", "batch_size", "repeat", "phase"]].apply(tuple, axis=1)
    assert not keys.duplicated().any() and len(after) > len(before)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    (search,) = manifest["search"]
    # every point, the ones from before the kill too, is in the decision and in the device time spent
    assert search["points"] == len(after)
    assert search["device_s"] == pytest.approx(float((after.warmup_s + after.seconds).sum()), rel=1e-6)
    assert search["setting"] in set(after.setting) and search["stopped"] in ("margin", "budget")
    assert "Max-Q search" in resumed.stdout
    ds = _gpu()
    assert ds.devices[0].power_limits().current_w == original_650
    ds.close()


def test_permission_refused_changes_nothing(tmp_path, original_650, monkeypatch):
    monkeypatch.setenv("TOKBENCH_SIM_READONLY", "1")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", *SIM, "--points", "3", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "permission denied" in r.stderr and "root" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()  # refused before a run directory was written
    monkeypatch.delenv("TOKBENCH_SIM_READONLY")
    ds = _gpu()
    assert ds.devices[0].power_limits().current_w == original_650
    ds.close()


@pytest.mark.parametrize("args,message", [
    (["--values", "150,700"], "outside GPU 0's range 200-700 W"),
    (["--gpus", "3"], "unknown GPU '3'"),
    (["--profile", "/nonexistent/p.toml"], "profile file not found"),
    (["--profile", "no-such-profile"], "unknown profile"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, message):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", *SIM, "--out", str(tmp_path), *args],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.startswith("error:")]) == 1


def test_a_second_sweep_on_the_same_gpu_is_refused(tmp_path):
    proc = _tokbench(["sweep", *LONG_PLAN, *SIM, "--out", str(tmp_path), "--run-id", "a"])
    _wait_for_points(tmp_path / "a", 1, proc)
    second = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", *SIM, "--points", "2",
                             "--out", str(tmp_path), "--run-id", "b"], capture_output=True, text=True)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert second.returncode != 0
    assert "in use by another tokbench run" in second.stderr
