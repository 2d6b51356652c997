"""`tokbench devices` as a user runs it: a subprocess, its stdout, stderr and exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import EXIT_DEVICE

REPO_ROOT = Path(__file__).resolve().parents[1]


def tokbench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT)


def _nvml_answers() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


needs_no_gpu = pytest.mark.skipif(_nvml_answers(), reason="a GPU answers NVML here")


@needs_no_gpu
def test_devices_lists_simulated_parts_here_and_says_why():
    p = tokbench("devices")
    assert p.returncode == 0, p.stderr
    assert "GPUs (sim backend)" in p.stdout and "H100 80GB HBM3 (simulated)" in p.stdout
    assert "200/700/700" in p.stdout  # min/default/max limits
    note = p.stderr.strip().splitlines()
    assert len(note) == 1 and "NVML is not available" in note[0] and "using the simulated backend" in note[0]


@needs_no_gpu
def test_devices_backend_nvml_fails_with_one_line_and_no_traceback():
    p = tokbench("devices", "--backend", "nvml")
    assert p.returncode == EXIT_DEVICE
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: NVML is not available") and "Traceback" not in p.stderr


def test_devices_nvml_not_installed_is_its_own_line(tmp_path):
    """With the binding missing (a pynvml that raises ImportError), the line says what to install."""
    shadow = tmp_path / "no_nvml"
    shadow.mkdir()
    (shadow / "pynvml.py").write_text("raise ImportError('simulated: nvidia-ml-py not installed')\n")
    env = dict(os.environ, PYTHONPATH=str(shadow))
    p = tokbench("devices", "--backend", "nvml", env=env)
    assert p.returncode == EXIT_DEVICE and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert "pip install nvidia-ml-py" in p.stderr


def test_devices_json_for_a_simulated_node_with_an_outlier():
    p = tokbench("devices", "--backend", "sim", "--sim-gpu", "a100-sxm", "--sim-count", "8",
                 "--sim-override", "3:leakage=1.6", "--sim-override", "5:foreign_pids=4242", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["backend"] == "sim" and len(out["devices"]) == 8
    infos = [d["info"] for d in out["devices"]]
    assert [i["index"] for i in infos] == list(range(8)) and len({i["uuid"] for i in infos}) == 8
    assert all(i["part"] == "a100-sxm" and i["max_sm_clock_mhz"] == 1410 for i in infos)
    limits = out["devices"][0]["power_limits"]
    assert (limits["min_w"], limits["max_w"], limits["default_w"], limits["enforced_w"]) == (100, 400, 400, 400)
    idle_w = [d["reading"]["power_average_w"] for d in out["devices"]]
    assert idle_w.index(max(idle_w)) == 3
    assert out["devices"][5]["state"]["problems"] == ["other processes computing (pid 4242)"]
    assert all(not d["state"]["problems"] for i, d in enumerate(out["devices"]) if i != 5)


def test_devices_shows_a_lock_left_by_another_process():
    set_it = subprocess.run(
        [sys.executable, "-c", "from harness.devices import open_devices; "
                               "open_devices('sim').devices[0].lock_sm_clock(1395, 1395)"],
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), capture_output=True, text=True, timeout=60)
    assert set_it.returncode == 0, set_it.stderr
    p = tokbench("devices", "--backend", "sim")
    assert p.returncode == 0 and "1395-1395" in p.stdout and "SM clock locked at 1395-1395 MHz" in p.stdout


@pytest.mark.parametrize(("args", "words"), [
    (("--backend", "cuda"), "unknown backend 'cuda'"),
    (("--backend", "sim", "--sim-gpu", "h900"), "unknown simulated GPU 'h900'"),
    (("--backend", "sim", "--sim-override", "0:bogus=1"), "bad simulated-board override"),
])
def test_devices_bad_input_is_one_line(args, words):
    p = tokbench("devices", *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and words in p.stderr
