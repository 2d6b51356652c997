"""The sweep's safety on the real NVML backend code, against the fake pynvml in subprocesses:
the safe default never sets anything, and the restore path (signals, hard kill + journal) puts the
driver back as it was found."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import fake_pynvml
import numpy as np
import pandas as pd
import pytest

PROFILE = """
[workload]
name = "nvml_workload:make"
batch_size = 2

[sweep]
knob = "power-limit"
points = 3
repeats = 1
warmup_min_s = 0.5
warmup_max_s = 3.0
window_s = 1.0
"""


DRAW_MW = 150_000  # below the lowest cap (200 W): no point is over its cap


@pytest.fixture
def profile(tmp_path) -> Path:
    path = tmp_path / "sleep.toml"
    path.write_text(PROFILE)
    return path


@pytest.fixture
def driver(fake_nvml_proc):
    """One fake H100 found at 650 W (not its default), drawing 150 W: its energy counter advances with time."""
    gpu = fake_pynvml.FakeGpu(power_limit_mw=650_000, power_usage_mw=DRAW_MW, power_instant_mw=DRAW_MW)
    fake_nvml_proc.configure(fake_pynvml.FakeConfig(gpus=[gpu]))
    tests_dir = str(Path(__file__).resolve().parent)  # for the user workload module
    fake_nvml_proc.env["PYTHONPATH"] += f":{tests_dir}"
    return fake_nvml_proc


def _cli(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, **kw)


def _power_sets(driver) -> list[float]:
    return [c["args"][-1] / 1000 for c in driver.setter_calls() if c["name"] == "nvmlDeviceSetPowerManagementLimit"]


def test_without_gpus_named_a_sweep_only_observes(tmp_path, profile, driver):
    r = _cli(["sweep", "--backend", "nvml", "--profile", str(profile), "--out", str(tmp_path / "out")], driver.env)
    assert r.returncode == 0, r.stderr
    assert driver.setter_calls() == []
    assert "--gpus" in r.stderr  # says how to sweep
    run = next((tmp_path / "out").iterdir())
    points = (run / "points.csv").read_text().splitlines()
    assert len(points) == 2 and ",observe,650.0," in points[1]


def test_named_gpu_is_swept_and_put_back(tmp_path, profile, driver):
    r = _cli(["sweep", "--backend", "nvml", "--gpus", "0", "--profile", str(profile), "--out", str(tmp_path)],
             driver.env)
    assert r.returncode == 0, r.stderr
    sets = _power_sets(driver)
    assert sets[:3] == [700.0, 200.0, 450.0]  # interleaved: max, min, middle
    assert sets[-1] == 650.0  # restored to what it found
    (points_csv,) = tmp_path.glob("*/points.csv")
    pts = pd.read_csv(points_csv, keep_default_na=False)
    # the whole NVML path (mW, mJ, seconds) against the fake's truth: clean points at its draw
    assert (pts["flags"] == "").all(), pts["flags"].tolist()
    assert pts["energy_source"].eq("counter").all()
    assert np.allclose(pts["joules"] / pts["seconds"], DRAW_MW / 1000, rtol=0.02)
    assert np.allclose(pts["power_mean_w"], DRAW_MW / 1000, rtol=0.02)


def test_sigint_on_nvml_restores_the_found_limit(tmp_path, profile, driver):
    slow = profile.read_text().replace("points = 3", "points = 30")
    profile.write_text(slow)
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", "--backend", "nvml", "--gpus", "0",
                             "--profile", str(profile), "--out", str(tmp_path), "--run-id", "r"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=driver.env)
    csv = tmp_path / "r" / "points.csv"
    t0 = time.monotonic()
    while not (csv.exists() and len(csv.read_text().splitlines()) >= 3) and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert _power_sets(driver)[-1] == 650.0
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["status"] == "interrupted"


def test_hard_kill_on_nvml_is_repaired_by_restore(tmp_path, profile, driver):
    profile.write_text(profile.read_text().replace("points = 3", "points = 30"))
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", "--backend", "nvml", "--gpus", "0",
                             "--profile", str(profile), "--out", str(tmp_path), "--run-id", "k"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=driver.env)
    csv = tmp_path / "k" / "points.csv"
    t0 = time.monotonic()
    while not (csv.exists() and len(csv.read_text().splitlines()) >= 3) and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _power_sets(driver)[-1] != 650.0
    r = _cli(["restore"], driver.env)
    assert r.returncode == 0, r.stderr
    assert "650 W" in r.stdout
    assert _power_sets(driver)[-1] == 650.0
