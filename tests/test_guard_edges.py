"""The guard's edge cases: a refused change leaves no journal, an observation of a GPU another run is
sweeping is refused, and an SM-clock sweep refuses a clock lock it could not put back."""

from __future__ import annotations

import os
from pathlib import Path

import fake_pynvml
import pytest

from harness.devices import open_devices
from harness.devices.nvml import NvmlBackend
from harness.errors import GpuBusy, PermissionDenied, UsageError
from harness.knobs import POWER_LIMIT, SM_CLOCK
from harness.sweep.guard import Guard
from harness.sweep.run import SweepOptions, check_clock_restorable, run_sweep


def _journals() -> list[Path]:
    return list((Path(os.environ["TOKBENCH_STATE_DIR"]) / "journal").glob("*.json"))


class _Refusing:
    """A simulated GPU whose driver refuses power-limit changes (root without CAP_SYS_ADMIN)."""

    def __init__(self, device) -> None:
        self._d = device

    def __getattr__(self, name):
        return getattr(self._d, name)

    def set_power_limit(self, watts: float) -> None:
        raise PermissionDenied("set the power limit of GPU 0")


def test_a_refused_change_leaves_no_journal():
    ds = open_devices("sim")
    dev = _Refusing(ds.devices[0])
    with Guard([dev], {"backend": "sim"}) as g, pytest.raises(PermissionDenied):
        g.apply(dev, POWER_LIMIT, 300.0)
    assert _journals() == []  # nothing was changed, so nothing waits to be restored
    ds.close()


def test_observing_a_gpu_another_run_sweeps_is_refused(tmp_path):
    ds = open_devices("sim")
    with Guard(ds.devices, {"backend": "sim"}), pytest.raises(GpuBusy, match="being swept by another tokbench run"):
        run_sweep(SweepOptions(profile="tiny", backend="sim", observe=True, out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()  # nothing written
    ds.close()


def test_an_sm_clock_sweep_refuses_a_foreign_lock_nvml_cannot_read_back(fake_nvml):
    fake_nvml.config.gpus = [fake_pynvml.FakeGpu(clock_events=0x2)]  # applications/locked clocks in force
    (d,) = NvmlBackend().devices()
    with pytest.raises(UsageError, match="cannot read back.*--reset-foreign-clock-lock"):
        check_clock_restorable([d], SM_CLOCK, reset_foreign_lock=False)
    check_clock_restorable([d], SM_CLOCK, reset_foreign_lock=True)  # told the lock may go
    check_clock_restorable([d], POWER_LIMIT, reset_foreign_lock=False)  # a power sweep leaves the clock alone
