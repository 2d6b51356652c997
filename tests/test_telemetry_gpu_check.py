"""The measurement core's gpu_check sections against the fake NVML: they report and change nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fake_pynvml import FakeConfig, FakeGpu

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_telemetry_sections_run_observe_only(fake_nvml_proc, tmp_path):
    samples = [[1_000_000 + 20_000 * i, 121_000 if i % 20 < 10 else 760_000] for i in range(119)]
    fake_nvml_proc.configure(FakeConfig(gpus=[FakeGpu(energy_step_mj=7, power_samples=samples)]))
    env = {k: v for k, v in fake_nvml_proc.env.items() if k != "OUT"}
    out = tmp_path / "report.json"
    p = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "gpu_check.py"), "--out", str(out),
                        "--only", "telemetry_square_wave,telemetry_sampler_overhead"],
                       env=env, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert p.returncode == 0, p.stderr
    sections = json.loads(out.read_text())["sections"]
    sq = sections["telemetry_square_wave"]["result"]
    assert sq["load"].startswith("none")  # no CUDA here: the NVML path runs without a load
    # the fake's counter moves per read, not per second, so the joules mean nothing; the fields do
    assert sq["counter_j"] is not None and sq["average_j"] > 0 and sq["instant_j"] > 0
    assert sq["average_j"] / sq["seconds"] == pytest.approx(72.5)  # the fake's constant average-power field
    assert sq["relative_to_counter"]["energy counter (window)"] == 0.0
    assert "| integrated average power |" in sq["table"]
    assert sections["telemetry_sampler_overhead"]["result"] == {"skipped": "torch sees no CUDA device"}
    assert fake_nvml_proc.setter_calls() == []
