"""scripts/gpu_check.py against the fake pynvml (subprocess variant): every section reports, the report
is rewritten after every section, a hung section costs only itself, and no setting is ever changed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_pynvml import FakeConfig, FakeGpu

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "gpu_check.py"
BASE_SECTIONS = ["devices", "state_check", "read_cost"]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def two_h100s() -> FakeConfig:
    samples = [[1_000_000 + 20_000 * i, 121_000 if i % 20 < 10 else 760_000] for i in range(119)]
    return FakeConfig(gpus=[FakeGpu(uuid="GPU-h0", energy_step_mj=7, power_samples=samples),
                            FakeGpu(uuid="GPU-h1", process_pids=[31337], power_usage_mw=145_000)])


def test_all_sections_report_and_no_setter_is_called(fake_nvml_proc, tmp_path):
    fake_nvml_proc.configure(two_h100s())
    env = {k: v for k, v in fake_nvml_proc.env.items() if k != "OUT"}
    out = tmp_path / "report.json"
    p = run(env, "--out", str(out), "--quick")
    assert p.returncode == 0, p.stderr
    report = json.loads(out.read_text())
    assert report["complete"] and report["observe_only"] and report["elapsed_s"] < 60
    # every section, the later issues' ones included (they skip where no CUDA device is), ran and reported
    assert list(report["sections"]) == [name for name, _t, _f in load_gpu_check().all_sections()]
    assert list(report["sections"])[:3] == BASE_SECTIONS
    assert all(s["status"] == "ok" for s in report["sections"].values()), report["sections"]
    # devices: tokbench devices --backend nvml --json, parsed, compared with CALIBRATION.md's H100
    dev = report["sections"]["devices"]["result"]
    assert dev["returncode"] == 0 and [d["info"]["uuid"] for d in dev["json"]["devices"]] == ["GPU-h0", "GPU-h1"]
    assert dev["calibration_disagreements"]["0"] == []
    assert dev["calibration_disagreements"]["1"] == [
        "idle power 145.0 W here (utilisation 0), 64-79 W in CALIBRATION.md"]
    # state check
    gpus = report["sections"]["state_check"]["result"]["gpus"]
    assert gpus[1]["state"]["problems"] == ["other processes computing (pid 31337)"]
    assert gpus[0]["power_limits"]["max_w"] == 700.0 and gpus[0]["supported_sm_clocks"]["max_mhz"] == 1980
    # read cost: every NVML call inside read(), timed one by one; the counter only in read_energy_mj()
    cost = report["sections"]["read_cost"]["result"]["gpus"][0]
    read_calls = cost["read"]["nvml_calls"]
    assert {"nvmlDeviceGetPowerUsage", "nvmlDeviceGetFieldValues", "nvmlDeviceGetClockInfo",
            "nvmlDeviceGetTemperature"} <= set(read_calls)
    assert "nvmlDeviceGetTotalEnergyConsumption" not in read_calls
    n_reads = cost["read"]["whole_call"]["calls"]
    assert n_reads >= 100 * 0.05 and read_calls["nvmlDeviceGetPowerUsage"]["calls"] == n_reads
    assert read_calls["nvmlDeviceGetClockInfo"]["calls"] == 2 * n_reads  # SM and memory clocks
    energy = cost["read_energy_mj"]["nvml_calls"]["nvmlDeviceGetTotalEnergyConsumption"]
    assert energy["calls"] >= 10 and energy["median_us"] > 0
    assert cost["power_samples"]["nvml_calls"]["nvmlDeviceGetSamples"]["calls"] >= 1
    # and nothing was changed
    assert fake_nvml_proc.setter_calls() == []


def test_report_goes_to_out_dir_and_a_hung_section_costs_only_itself(fake_nvml_proc, tmp_path):
    cfg = FakeConfig(delay_s={"nvmlDeviceGetPowerManagementLimitConstraints": 60.0})  # hangs any limits query
    fake_nvml_proc.configure(cfg)
    out_dir = tmp_path / "out"
    env = dict(fake_nvml_proc.env, OUT=str(out_dir))
    p = run(env, "--only", "read_cost,state_check", "--budget-s", "5", timeout=60)
    assert p.returncode == 1  # not every section ok
    report = json.loads((out_dir / "gpu_check.json").read_text())
    assert list(report["sections"]) == ["state_check", "read_cost"] and report["complete"]
    state = report["sections"]["state_check"]
    assert state["status"] == "timeout" and state["seconds"] < 5
    assert report["sections"]["read_cost"]["status"] == "skipped"  # the whole-run budget was spent
    assert report["elapsed_s"] < 6
    assert fake_nvml_proc.setter_calls() == []


def test_without_a_driver_each_section_says_so(tmp_path):
    """On this machine (no NVIDIA driver): sections fail with the backend's one-line reason, the run ends."""
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHONPATH"] = str(tmp_path / "nowhere")  # the real binding, no fake
    pytest.importorskip("pynvml")
    out = tmp_path / "r.json"
    p = run(env, "--out", str(out), "--only", "devices,state_check", timeout=60)
    report = json.loads(out.read_text())
    if all(s["status"] == "ok" for s in report["sections"].values()):
        pytest.skip("a GPU answers NVML here")
    assert p.returncode == 1
    assert report["sections"]["devices"]["error"].startswith("tokbench devices exited 4: error: NVML is not available")
    assert report["sections"]["state_check"]["error"].startswith("DriverNotLoaded: NVML is not available")


def test_guard_refuses_every_setter_before_it_reaches_nvml(fake_nvml):
    gpu_check = load_gpu_check()
    blocked = gpu_check.guard_observe_only(fake_nvml)
    assert {"nvmlDeviceSetPowerManagementLimit", "nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks",
            "nvmlDeviceSetPersistenceMode", "nvmlDeviceSetMigMode"} <= set(blocked)
    fake_nvml.nvmlInit()
    h = fake_nvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(RuntimeError, match="observe-only"):
        fake_nvml.nvmlDeviceSetPowerManagementLimit(h, 300_000)
    with pytest.raises(RuntimeError, match="observe-only"):
        fake_nvml.nvmlDeviceResetGpuLockedClocks(h)
    assert fake_nvml.setter_calls == [] and fake_nvml.nvmlDeviceGetPowerManagementLimit(h) == 700_000


def test_guard_covers_the_real_bindings_setters():
    real = pytest.importorskip("pynvml")
    from harness.devices.nvml import is_setter_name

    names = [n for n in dir(real) if is_setter_name(n)]
    assert {"nvmlDeviceSetPowerManagementLimit", "nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks",
            "nvmlDeviceSetApplicationsClocks", "nvmlDeviceResetApplicationsClocks", "nvmlDeviceSetPersistenceMode",
            "nvmlDeviceSetMigMode", "nvmlDeviceClearEccErrorCounts"} <= set(names)
    assert not any("Get" in n or "Query" in n for n in names)
    assert not is_setter_name("nvmlDeviceGetThermalSettings") and not is_setter_name("nvmlSystemGetTopologyGpuSet")
    assert not is_setter_name("nvmlEventSetCreate") and is_setter_name("nvmlDeviceCreateGpuInstance")


def test_sections_list_is_extensible(tmp_path, monkeypatch):
    gpu_check = load_gpu_check()
    assert [s[0] for s in gpu_check.SECTIONS] == BASE_SECTIONS
    assert sum(t for _n, t, _f in gpu_check.SECTIONS) < 7 * 60
    assert gpu_check.OPTIONAL_SECTION_MODULES == ("gpu_check_workloads", "gpu_check_telemetry", "gpu_check_sweep",
                                                 "gpu_check_serving")
    p = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and [line.split()[0] for line in p.stdout.splitlines()][:3] == BASE_SECTIONS


def test_the_sweep_section_reports_warm_ups_and_window_noise_of_its_repeats():
    """Issue 14's figures from a real GPU: the warm-up of each window at one setting (the first from idle,
    the rest on a settled part) and tokens/J's window-to-window variation, per phase and batch."""
    import pandas as pd

    spec = importlib.util.spec_from_file_location("gpu_check_sweep", REPO_ROOT / "scripts" / "gpu_check_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    df = pd.DataFrame({"phase": ["train"] * 3 + ["decode"], "batch_size": [8, 8, 8, 1],
                       "warmup_s": [41.0, 3.1, 3.2, 5.0], "tokens_per_j": [100.0, 102.0, 98.0, 7.0]})
    (key, row), = mod._repeat_summary(df)["repeats"].items()  # one window of decode: no variation to report
    assert key == "train_b8" and row["warmup_s"] == [41.0, 3.1, 3.2] and row["windows"] == 3
    assert row["tokens_per_j_cv_pct"] == pytest.approx(2.0)
