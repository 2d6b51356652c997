"""The real NVML backend (harness/devices/nvml.py) against the fake pynvml (tests/fake_pynvml.py)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import fake_pynvml
import pytest
from fake_pynvml import FakeConfig, FakeGpu

from harness.devices import open_devices
from harness.devices.base import ClockLock, Device
from harness.devices.nvml import NvmlBackend
from harness.errors import (
    EXIT_PERMISSION,
    BackendUnavailable,
    DeviceError,
    DriverNotLoaded,
    NoGpuFound,
    NotSupported,
    NvmlNotInstalled,
    PermissionDenied,
    UsageError,
)

# --- the fake is faithful to the installed binding ------------------------------------------------


def test_fake_constants_functions_and_errors_match_the_real_binding():
    real = pytest.importorskip("pynvml")
    assert getattr(real, "__file__", "").endswith("pynvml.py") and not isinstance(real, fake_pynvml.FakeNvml)
    for name, value in fake_pynvml.CONSTANTS.items():
        assert getattr(real, name) == value, name
    for name in fake_pynvml.MODELLED_FUNCTIONS:
        real_params = list(inspect.signature(getattr(real, name)).parameters)
        fake_params = list(inspect.signature(getattr(fake_pynvml.FakeNvml, name).__wrapped__).parameters)[1:]
        assert fake_params == real_params, name
    for name, cls in fake_pynvml.ERROR_CLASSES.items():
        code = cls(0).value  # the subclass fixes its own code, whatever is passed
        assert isinstance(getattr(real, name)(0), real.NVMLError) and getattr(real, name)(0).value == code
    assert {f for f, _ in inspect.getmembers(real.c_nvmlFieldValue_t) if not f.startswith("_")} >= {
        f for f, _ in fake_pynvml.c_nvmlFieldValue_t._fields_}


def test_nvml_error_maps_each_code_to_its_subclass():
    nv = fake_pynvml
    e = nv.NVMLError(nv.NVML_ERROR_NO_PERMISSION)
    assert type(e) is nv.NVMLError_NoPermission and e.value == 4 and isinstance(e, nv.NVMLError)
    assert type(nv.NVMLError(nv.NVML_ERROR_GPU_IS_LOST)) is nv.NVMLError_GpuIsLost
    assert type(nv.NVMLError(12345)) is nv.NVMLError  # unknown code: the base class
    assert nv.NVMLError_NotSupported().value == nv.NVML_ERROR_NOT_SUPPORTED


# --- identity, units, capabilities ----------------------------------------------------------------


def _open(fake: fake_pynvml.FakeNvml, **cfg) -> tuple[NvmlBackend, list[Device]]:
    for k, v in cfg.items():
        setattr(fake.config, k, v)
    nv = NvmlBackend()
    return nv, nv.devices()


def test_identity_units_and_reading(fake_nvml):
    gpus = [FakeGpu(uuid="GPU-aaaa", pci_bus_id="00000000:19:00.0", power_instant_mw=683_250,
                    power_usage_mw=512_500, memory_power_mw=61_000, energy_mj=123_456_789, draw_mw=0, sm_clock_mhz=1755,
                    temperature_c=64, utilization_pct=97, memory_used_mb=40_000, clock_events=0x4,
                    power_limit_mw=500_000, enforced_limit_mw=450_000),
            FakeGpu(uuid="GPU-bbbb", pci_bus_id="00000000:2A:00.0", name="NVIDIA H200")]
    nv, devs = _open(fake_nvml, gpus=gpus)
    d0, d1 = devs
    assert isinstance(d0, Device)
    assert (d0.info.index, d0.info.uuid, d0.info.pci_bus_id, d0.info.name) == (0, "GPU-aaaa", "00000000:19:00.0",
                                                                               "NVIDIA H100 80GB HBM3")
    assert (d1.info.uuid, d1.info.pci_bus_id, d1.info.name) == ("GPU-bbbb", "00000000:2A:00.0", "NVIDIA H200")
    assert d0.info.architecture == "Hopper" and d0.info.driver == "580.159.04" and d0.info.backend == "nvml"
    assert d0.info.memory_total_mb == 81559 and d0.info.max_sm_clock_mhz == 1980 and d0.info.max_mem_clock_mhz == 2619
    caps = d0.info.capabilities
    assert caps.energy_counter and caps.instant_power and caps.memory_power and caps.average_power
    lim = d0.power_limits()
    assert (lim.min_w, lim.max_w, lim.default_w, lim.current_w, lim.enforced_w) == (200, 700, 700, 500, 450)
    r = d0.read()
    assert r.power_instant_w == pytest.approx(683.25) and r.power_average_w == pytest.approx(512.5)
    assert r.memory_power_w == pytest.approx(61.0) and r.enforced_limit_w == pytest.approx(450.0)
    assert (r.sm_clock_mhz, r.mem_clock_mhz, r.temperature_c, r.utilization_pct) == (1755, 2619, 64, 97)
    assert r.memory_used_mb == pytest.approx(40_000) and r.clock_events == 0x4
    assert d0.read_energy_mj() == 123_456_789
    assert d0.supported_sm_clocks()[0] == 210 and d0.supported_sm_clocks()[-1] == 1980
    nv.shutdown()


def test_read_never_touches_the_energy_counter(fake_nvml):
    _nv, (d,) = _open(fake_nvml)
    before = fake_nvml.calls.get("nvmlDeviceGetTotalEnergyConsumption", 0)
    for _ in range(5):
        d.read()
    assert fake_nvml.calls.get("nvmlDeviceGetTotalEnergyConsumption", 0) == before
    d.read_energy_mj()
    assert fake_nvml.calls["nvmlDeviceGetTotalEnergyConsumption"] == before + 1


def test_gpus_are_selected_by_uuid_in_pci_order(fake_nvml):
    fake_nvml.config.gpus = [FakeGpu(uuid=f"GPU-{i}") for i in range(4)]
    ds = open_devices("nvml")
    assert ds.backend == "nvml" and [d.info.index for d in ds.devices] == [0, 1, 2, 3]
    assert [d.info.index for d in ds.select("GPU-2,0")] == [2, 0]
    with pytest.raises(UsageError, match="unknown GPU 'GPU-9'"):
        ds.select("GPU-9")
    ds.close()
    assert fake_nvml.initialised == 0  # closing the set shut NVML down


# --- unsupported queries read as None ------------------------------------------------------------


def test_unsupported_fields_and_queries_read_as_none(fake_nvml):
    fake_nvml.config.gpus = [FakeGpu(
        unsupported=["field:186", "field:185:2", "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetSamples",
                     "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetTemperature", "nvmlDeviceGetEnforcedPowerLimit",
                     "nvmlDeviceGetArchitecture", "nvmlDeviceGetPciInfo"])]
    _nv, (d,) = _open(fake_nvml)
    caps = d.info.capabilities
    assert not caps.instant_power and not caps.memory_power and not caps.energy_counter and not caps.power_samples
    assert d.info.architecture == "unknown" and d.info.pci_bus_id == ""
    r = d.read()
    assert r.power_instant_w is None and r.memory_power_w is None
    assert r.utilization_pct is None and r.temperature_c is None
    assert r.power_average_w == pytest.approx(72.5)
    assert r.enforced_limit_w is None and d.power_limits().enforced_w == 700  # falls back to the current limit
    assert d.read_energy_mj() is None and d.power_samples(0) is None


def test_an_older_binding_without_the_new_reasons_function(fake_nvml):
    fake_nvml.config.missing = ["nvmlDeviceGetCurrentClocksEventReasons"]
    fake_nvml.config.gpus = [FakeGpu(clock_events=0x4)]
    _nv, (d,) = _open(fake_nvml)
    assert d.read().clock_events == 0x4
    assert fake_nvml.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] >= 1


def test_power_samples_in_watts_and_newer_than_asked(fake_nvml):
    fake_nvml.config.gpus = [FakeGpu(power_samples=[[1_000, 121_000], [21_000, 876_000], [41_000, 750_500]])]
    _nv, (d,) = _open(fake_nvml)
    assert d.info.capabilities.power_samples
    assert [(s.ts_us, s.power_w) for s in d.power_samples(1_000)] == [(21_000, 876.0), (41_000, 750.5)]
    assert d.power_samples(41_000) == []  # NVML answers NOT_FOUND when nothing is newer


# --- errors: one table, tokbench's classes ----------------------------------------------------------


def test_permission_refused_says_what_is_needed(fake_nvml):
    fake_nvml.config.setters_allowed = False
    _nv, (d,) = _open(fake_nvml)
    for change in (lambda: d.set_power_limit(300), lambda: d.lock_sm_clock(1200, 1200), d.reset_sm_clock):
        with pytest.raises(PermissionDenied) as e:
            change()
        assert "root" in str(e.value) and "CAP_SYS_ADMIN" in str(e.value) and "\n" not in str(e.value)
    assert [(c.name, c.ok) for c in fake_nvml.setter_calls] == [
        ("nvmlDeviceSetPowerManagementLimit", False), ("nvmlDeviceSetGpuLockedClocks", False),
        ("nvmlDeviceResetGpuLockedClocks", False)]
    assert d.power_limits().current_w == 700  # nothing changed


def test_setters_send_milliwatts_and_megahertz(fake_nvml):
    _nv, (d,) = _open(fake_nvml)
    d.set_power_limit(312.5)
    d.lock_sm_clock(1200, 1410)
    assert d.power_limits().current_w == pytest.approx(312.5)
    assert d.read().sm_clock_mhz == 1200  # the idle 345 MHz clock held up by the lock
    assert d.state_check().notes  # the lock shows as an application-clock reason
    d.reset_sm_clock()
    assert [(c.name, c.gpu, c.args, c.ok) for c in fake_nvml.setter_calls] == [
        ("nvmlDeviceSetPowerManagementLimit", 0, (312_500,), True),
        ("nvmlDeviceSetGpuLockedClocks", 0, (1200, 1410), True),
        ("nvmlDeviceResetGpuLockedClocks", 0, (), True)]
    with pytest.raises(UsageError, match="refused"):
        d.set_power_limit(900)  # outside the constraints: INVALID_ARGUMENT


@pytest.mark.parametrize(("code", "cls", "words"), [
    ("NO_PERMISSION", PermissionDenied, "CAP_SYS_ADMIN"),
    ("NOT_SUPPORTED", NotSupported, "not supported"),
    ("INVALID_ARGUMENT", UsageError, "refused"),
    ("GPU_IS_LOST", DeviceError, "fallen off the bus"),
    ("DRIVER_NOT_LOADED", DriverNotLoaded, "driver is not loaded"),
    ("LIBRARY_NOT_FOUND", DriverNotLoaded, "libnvidia-ml.so"),
    ("UNKNOWN", DeviceError, "NVML error Unknown"),
    ("TIMEOUT", DeviceError, "NVML error Timeout"),
])
def test_each_nvml_error_becomes_a_tokbench_error(fake_nvml, code, cls, words):
    fake_nvml.config.gpus[0].errors = {"nvmlDeviceGetPowerManagementLimit": code}
    _nv, (d,) = _open(fake_nvml)
    with pytest.raises(cls) as e:
        d.power_limits()
    assert type(e.value) is cls and words in str(e.value)
    assert isinstance(e.value.__cause__, _nv.nv.NVMLError)  # raised "from e": the driver error survives in logs


@pytest.mark.parametrize(("code", "cls"), [("GPU_IS_LOST", DeviceError), ("UNKNOWN", DeviceError)])
def test_only_not_supported_reads_as_not_available(fake_nvml, code, cls):
    """An optional query (the instant power field, here) is None when the part lacks it, and an error
    when the GPU fails: a lost GPU must not read as a missing sensor."""
    fake_nvml.config.gpus[0].errors = {"nvmlDeviceGetTemperature": "NOT_SUPPORTED"}
    _nv, (d,) = _open(fake_nvml)
    assert d.read().temperature_c is None
    fake_nvml.config.gpus[0].errors = {"nvmlDeviceGetTemperature": code}
    with pytest.raises(cls):
        d.read()


def test_not_installed_no_driver_no_gpu_are_told_apart(fake_nvml, monkeypatch):
    fake_nvml.config.init_error = "LIBRARY_NOT_FOUND"
    with pytest.raises(DriverNotLoaded, match="libnvidia-ml.so was not found"):
        NvmlBackend()
    fake_nvml.config.init_error = "DRIVER_NOT_LOADED"
    with pytest.raises(DriverNotLoaded, match="driver is not loaded"):
        NvmlBackend()
    fake_nvml.config.init_error = None
    fake_nvml.config.gpus = []
    with pytest.raises(NoGpuFound, match="sees no GPU"):
        NvmlBackend()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(NvmlNotInstalled, match="pip install nvidia-ml-py"):
        NvmlBackend()
    for cls in (DriverNotLoaded, NoGpuFound, NvmlNotInstalled):
        assert issubclass(cls, BackendUnavailable)


def test_auto_falls_back_to_simulated_with_one_line_notice(fake_nvml):
    fake_nvml.config.gpus = []
    ds = open_devices("auto", sim_gpu="a100-sxm", sim_count=2)
    assert ds.backend == "sim" and len(ds.devices) == 2
    assert ds.notice == "NVML is available but sees no GPU; using the simulated backend (2 x a100-sxm)"
    fake_nvml.config.gpus = [FakeGpu()]
    assert open_devices("auto").backend == "nvml"


# --- state check -------------------------------------------------------------------------------------


def test_state_check_reports_what_could_spoil_a_measurement(fake_nvml):
    import os

    fake_nvml.config.gpus = [FakeGpu(process_pids=[os.getpid(), 4242, 77], mig_mode=1, persistence_mode=0,
                                     locked_clocks=[1500, 1500])]
    _nv, (d,) = _open(fake_nvml)
    s = d.state_check()
    assert s.foreign_processes == (77, 4242) and s.mig_enabled and s.persistence_mode is False
    assert s.notes == ("SM clock held by an application-clock or locked-clock setting",)
    assert "other processes computing (pid 77, 4242)" in s.problems and "MIG enabled" in s.problems
    assert d.sm_clock_lock() is None or d.sm_clock_lock() == ClockLock(1500, 1500)
    assert fake_nvml.setter_calls == []


# --- CLI against the fake, in a subprocess -------------------------------------------------------------


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_cli_devices_nvml_json_against_the_fake(fake_nvml_proc):
    import json

    fake_nvml_proc.configure(FakeConfig(gpus=[FakeGpu(uuid="GPU-x0"), FakeGpu(uuid="GPU-x1", process_pids=[99])]))
    p = _cli(fake_nvml_proc.env, "devices", "--backend", "nvml", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["backend"] == "nvml" and [d["info"]["uuid"] for d in out["devices"]] == ["GPU-x0", "GPU-x1"]
    assert out["devices"][1]["state"]["problems"] == ["other processes computing (pid 99)"]
    assert out["devices"][0]["power_limits"]["max_w"] == 700.0
    assert fake_nvml_proc.setter_calls() == []


def test_settings_outlive_the_process_on_the_fake_driver(fake_nvml_proc):
    code = ("from harness.devices import open_devices; d = open_devices('nvml').devices[0]; "
            "d.set_power_limit(350); d.lock_sm_clock(1100, 1300)")
    p = subprocess.run([sys.executable, "-c", code], env=fake_nvml_proc.env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    read = ("from harness.devices import open_devices; d = open_devices('nvml').devices[0]; "
            "print(d.power_limits().current_w, d.read().sm_clock_mhz)")
    p = subprocess.run([sys.executable, "-c", read], env=fake_nvml_proc.env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["350.0", "1100.0"]
    assert [c["name"] for c in fake_nvml_proc.setter_calls()] == ["nvmlDeviceSetPowerManagementLimit",
                                                                 "nvmlDeviceSetGpuLockedClocks"]


def test_cli_permission_error_is_one_line(fake_nvml_proc):
    """A refused setting reaches the user as one line naming what is needed (no traceback)."""
    fake_nvml_proc.configure(FakeConfig(setters_allowed=False))
    code = ("from harness.cli import app, main\n"
            "import typer\n"
            "@app.command('try-set')\n"
            "def try_set():\n"
            "    from harness.devices import open_devices\n"
            "    open_devices('nvml').devices[0].set_power_limit(300)\n"
            "main()\n")
    p = subprocess.run([sys.executable, "-c", code, "try-set"], env=fake_nvml_proc.env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == EXIT_PERMISSION
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "root" in p.stderr and "CAP_SYS_ADMIN" in p.stderr
    assert [(c["name"], c["ok"]) for c in fake_nvml_proc.setter_calls()] == [("nvmlDeviceSetPowerManagementLimit",
                                                                               False)]


@pytest.mark.parametrize(("cap_eff", "expected"), [
    ("000001ffffffffff", (True, "")),
    ("00000000a80425fb", (False, "needs root or CAP_SYS_ADMIN")),  # docker's default set: no CAP_SYS_ADMIN
])
def test_may_change_settings_follows_cap_sys_admin(tmp_path, cap_eff, expected):
    from harness.devices.nvml import _may_change_settings

    status = tmp_path / "status"
    status.write_text(f"Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff}\n")
    assert _may_change_settings(str(status)) == expected


def test_architecture_unsupported_on_an_older_binding_reads_unknown(fake_nvml, monkeypatch):
    monkeypatch.delattr(fake_nvml, "NVML_DEVICE_ARCH_BLACKWELL")  # an older binding lacks the constant
    fake_nvml.config.gpus = [FakeGpu(unsupported=["nvmlDeviceGetArchitecture"])]
    _nv, (d,) = _open(fake_nvml)
    assert d.info.architecture == "unknown"


def test_an_empty_power_sample_history_still_counts_as_supported(fake_nvml):
    """nvmlDeviceGetSamples answers NOT_FOUND when no sample is newer than asked, also at the first
    probe: that is an empty history, not a missing feature."""
    fake_nvml.config.gpus = [FakeGpu(power_samples=[]), FakeGpu(unsupported=["nvmlDeviceGetSamples"])]
    _nv, (d0, d1) = _open(fake_nvml)
    assert d0.info.capabilities.power_samples and d0.power_samples(0) == []
    fake_nvml.config.gpus[0].power_samples = [[5_000, 700_000]]
    assert [(s.ts_us, s.power_w) for s in d0.power_samples(0)] == [(5_000, 700.0)]
    assert not d1.info.capabilities.power_samples and d1.power_samples(0) is None
