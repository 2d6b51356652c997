"""tokbench as a user installs it: a wheel (not an editable checkout) in a fresh virtual environment, run
from a folder outside the checkout, finds its profiles and simulated parts and sweeps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}"
    return r


def test_wheel_installs_and_sweeps_outside_the_checkout(tmp_path):
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    work.mkdir()
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO)], cwd=tmp_path)
    (wheel,) = dist.glob("tokbench-*.whl")
    # the environment's own packages come from this interpreter's (offline); tokbench only from the wheel
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"TOKBENCH_STATE_DIR": str(tmp_path / "state"), "TOKBENCH_SIM_STATE_DIR": str(tmp_path / "sim")}
    where = _run([str(py), "-c", "import harness, profiles; print(harness.__file__); print(profiles.__file__)"],
                 cwd=work, env=env).stdout.split()
    assert all(str(venv) in w for w in where), where  # not the checkout

    tokbench = str(venv / "bin" / "tokbench")
    sweep = _run([tokbench, "sweep", "--profile", "tiny", "--backend", "sim", "--out", "res"], cwd=work, env=env)
    assert "run complete" in sweep.stdout
    (run,) = (work / "res").iterdir()
    assert (run / "manifest.json").is_file() and len((run / "points.csv").read_text().splitlines()) > 1
    devices = _run([tokbench, "devices", "--backend", "sim", "--sim-gpu", "a100-sxm", "--json"], cwd=work, env=env)
    assert '"name": "NVIDIA A100' in devices.stdout
