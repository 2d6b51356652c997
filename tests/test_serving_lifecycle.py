"""A server started by tokbench (the endpoint workload's ``command``) under the real NVML backend code
(fake pynvml, subprocesses): stopped on success, error, Ctrl-C and SIGTERM; a server that never
becomes ready, dies mid-run, answers HTTP errors or malformed events gives one clear line or flagged
points, with the settings restored and the finished points kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fake_pynvml
import pandas as pd
import pytest
import serving_server

pytestmark = pytest.mark.slow  # each test is a CLI run (~5-9 s here)


def _profile(tmp_path: Path, *flags: str, ready_timeout_s: float = 30.0, batch_sizes=(2,), points=2,
             window_s=0.6) -> tuple[Path, Path]:
    port = serving_server.free_port()
    pid_file = tmp_path / "server.pid"
    command = serving_server.argv(port, "--no-model", "--token-delay-ms", "5", "--pid-file", str(pid_file), *flags)
    text = f"""
[workload]
name = "endpoint"
model = "tiny"
input_len = 8
output_len = 8

[workload.endpoint]
url = "http://127.0.0.1:{port}"
command = {json.dumps(command)}
ready_timeout_s = {ready_timeout_s}
slice_s = 0.1

[sweep]
knob = "power-limit"
points = {points}
batch_sizes = {list(batch_sizes)}
repeats = 1
warmup_min_s = 0.0
warmup_max_s = 0.2
window_s = {window_s}
"""
    path = tmp_path / "serve.toml"
    path.write_text(text)
    return path, pid_file


@pytest.fixture
def driver(fake_nvml_proc):
    """One fake H100 found at 650 W (not its default), energy counter ticking per read."""
    fake_nvml_proc.configure(fake_pynvml.FakeConfig(gpus=[fake_pynvml.FakeGpu(power_limit_mw=650_000,
                                                                                energy_step_mj=5_000)]))
    return fake_nvml_proc


def _args(profile: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "sweep", "--backend", "nvml", "--profile", str(profile),
            "--out", str(out), "--gpus", "0"]


def _pid(pid_file: Path) -> int:
    return int(pid_file.read_text().split()[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _points(out: Path) -> pd.DataFrame:
    (run,) = list(out.iterdir())
    return pd.read_csv(run / "points.csv")


def _limit_restored(driver, changed: bool = True) -> bool:
    """The driver's limit is back at the 650 W it was found at (``changed``: after being moved)."""
    sets = [c["args"][-1] for c in driver.setter_calls() if c["name"] == "nvmlDeviceSetPowerManagementLimit"]
    return (bool(sets) or not changed) and (not sets or sets[-1] == 650_000)


def test_started_server_is_measured_then_stopped_and_http_errors_and_bad_events_flag_points(tmp_path, driver):
    log = tmp_path / "server.jsonl"
    profile, pid_file = _profile(tmp_path, "--http-error-every", "4", "--malformed-every", "7", "--log", str(log))
    r = subprocess.run(_args(profile, tmp_path / "out"), capture_output=True, text=True, env=driver.env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _gone(_pid(pid_file))
    pts = _points(tmp_path / "out")
    # the server was started on the GPU being swept
    assert pid_file.read_text().split()[1] == pts["gpu_uuid"][0]
    assert len(pts) == 2 and _limit_restored(driver)
    assert (pts["requests_errors"] > 0).all() and (pts["output_tokens"] > 0).all()
    assert all("server_errors" in f for f in pts["flags"])
    assert (pts["mean_in_flight"].between(1.5, 2.05)).all()
    # each window's output tokens are the chunks the server wrote inside it (+-1 in transit per stream)
    served = [json.loads(line) for line in log.read_text().splitlines()]
    for p in pts.itertuples():
        written = sum(p.window_start_s <= t < p.window_end_s for s in served for t in s["chunk_times"])
        assert abs(p.output_tokens - written) <= 2


def test_a_server_that_never_becomes_ready_is_one_line_and_stopped(tmp_path, driver):
    profile, pid_file = _profile(tmp_path, "--never-ready", ready_timeout_s=1.5)
    r = subprocess.run(_args(profile, tmp_path / "out"), capture_output=True, text=True, env=driver.env, timeout=120)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not ready after 1.5 s" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert _gone(_pid(pid_file)) and _limit_restored(driver, changed=False)


def test_a_server_that_dies_mid_run_keeps_the_finished_points(tmp_path, driver):
    # two concurrencies: the server dies while the second is measured
    profile, pid_file = _profile(tmp_path, "--die-after", "60", batch_sizes=(1, 4), points=1, window_s=1.0)
    r = subprocess.run(_args(profile, tmp_path / "out"), capture_output=True, text=True, env=driver.env, timeout=120)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "exited with code 3 during the run" in lines[0], r.stderr
    pts = _points(tmp_path / "out")
    assert list(pts["batch_size"]) == [1] and _limit_restored(driver)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_stop_the_server_and_restore(tmp_path, driver, sig):
    profile, pid_file = _profile(tmp_path, points=6, window_s=1.0)
    out = tmp_path / "out"
    proc = subprocess.Popen(_args(profile, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=driver.env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (list(out.glob("*/points.csv")) and len(_points(out)) >= 1):
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err
    assert _gone(_pid(pid_file)) and _limit_restored(driver)
    assert len(_points(out)) >= 1

