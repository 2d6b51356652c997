"""The real backend, over nvidia-ml-py (module ``pynvml``).

Only this module imports ``pynvml``. NVML errors become tokbench exceptions in one table
(``_translate``); a query the part does not support reads as ``None``. The energy counter is read
only when asked (one read took ~4 ms on an H100 against 1-3 us for power and clocks).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from harness.devices.base import (
    Capabilities,
    ClockEvent,
    ClockLock,
    DeviceInfo,
    PowerLimits,
    PowerSample,
    Reading,
    StateCheck,
    WallClock,
)
from harness.errors import (
    DeviceError,
    DriverNotLoaded,
    NoGpuFound,
    NotSupported,
    NvmlNotInstalled,
    PermissionDenied,
    UsageError,
)

T = TypeVar("T")

_ARCH_NAMES = {
    "NVML_DEVICE_ARCH_KEPLER": "Kepler", "NVML_DEVICE_ARCH_MAXWELL": "Maxwell",
    "NVML_DEVICE_ARCH_PASCAL": "Pascal", "NVML_DEVICE_ARCH_VOLTA": "Volta",
    "NVML_DEVICE_ARCH_TURING": "Turing", "NVML_DEVICE_ARCH_AMPERE": "Ampere",
    "NVML_DEVICE_ARCH_ADA": "Ada Lovelace", "NVML_DEVICE_ARCH_HOPPER": "Hopper",
    "NVML_DEVICE_ARCH_BLACKWELL": "Blackwell",
}


#: NVML value-type code -> attribute of the value union (codes are stable in nvml.h)
_VALUE_ATTRS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


#: camel-case words that, as a function's verb, change device state (a GPU instance is created, ...)
_MUTATING_WORDS = frozenset({"Set", "Reset", "Clear", "Modify", "Remove", "Create", "Destroy"})
_QUERY_WORDS = frozenset({"Get", "Query", "Is", "Validate"})


def is_setter_name(name: str) -> bool:
    """Does the nvidia-ml-py function ``name`` change device state? Its verb decides: the first of
    a mutating or query word in its camel-case name (``nvmlDeviceGetThermalSettings`` and
    ``nvmlSystemGetTopologyGpuSet`` read; ``nvmlEventSet*`` builds a local event set)."""
    if not name.startswith("nvml") or name.startswith("nvmlEventSet"):
        return False
    for word in re.findall(r"[A-Z][a-z0-9]*", name):
        if word in _QUERY_WORDS:
            return False
        if word in _MUTATING_WORDS:
            return True
    return False


def import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError as err:
        raise NvmlNotInstalled(
            "NVML is not available: the nvidia-ml-py package is not installed (pip install nvidia-ml-py)"
        ) from err
    return pynvml


def _translate(nv: Any, err: Exception, what: str) -> Exception:
    """The one table from NVML return codes to tokbench exceptions."""
    code = getattr(err, "value", None)
    table: dict[int | None, Callable[[], Exception]] = {
        getattr(nv, "NVML_ERROR_NO_PERMISSION", -1): lambda: PermissionDenied(what),
        getattr(nv, "NVML_ERROR_NOT_SUPPORTED", -2): lambda: NotSupported(f"{what}: not supported on this GPU"),
        getattr(nv, "NVML_ERROR_LIBRARY_NOT_FOUND", -3): lambda: DriverNotLoaded(
            "NVML is not available: libnvidia-ml.so was not found (no NVIDIA driver installed)"),
        getattr(nv, "NVML_ERROR_DRIVER_NOT_LOADED", -4): lambda: DriverNotLoaded(
            "NVML is not available: the NVIDIA driver is not loaded"),
        getattr(nv, "NVML_ERROR_INVALID_ARGUMENT", -5): lambda: UsageError(f"{what}: value refused by the driver"),
        getattr(nv, "NVML_ERROR_GPU_IS_LOST", -6): lambda: DeviceError(f"{what}: the GPU has fallen off the bus"),
    }
    make = table.get(code)
    return make() if make else DeviceError(f"{what}: NVML error {err}")


class NvmlBackend:
    """NVML initialised once per process; hands out ``NvmlDevice`` objects."""

    def __init__(self) -> None:
        self.nv = import_pynvml()
        try:
            self.nv.nvmlInit()
        except self.nv.NVMLError as e:
            raise _translate(self.nv, e, "initialise NVML") from e
        count = self.call(self.nv.nvmlDeviceGetCount, what="count GPUs")
        if count == 0:
            raise NoGpuFound("NVML is available but sees no GPU")
        self.count = int(count)
        driver = self.call(self.nv.nvmlSystemGetDriverVersion, what="read the driver version")
        self.driver = driver.decode() if isinstance(driver, bytes) else str(driver)

    def call(self, fn: Callable[..., T], *args: Any, what: str) -> T:
        try:
            return fn(*args)
        except self.nv.NVMLError as e:
            raise _translate(self.nv, e, what) from e

    def optional(self, fn: Callable[..., T], *args: Any, what: str = "an NVML query") -> T | None:
        """A query the part may not offer: None when NVML says NOT_SUPPORTED (or the binding lacks
        the function). Every other error surfaces as its tokbench exception: a GPU that fell off
        the bus must not read as "no value"."""
        try:
            return fn(*args)
        except self.nv.NVMLError as e:
            if getattr(e, "value", None) == getattr(self.nv, "NVML_ERROR_NOT_SUPPORTED", -2):
                return None
            raise _translate(self.nv, e, f"{what} ({getattr(fn, '__name__', 'NVML')})") from e
        except AttributeError:  # older binding without this function
            return None

    def devices(self) -> list[NvmlDevice]:
        return [NvmlDevice(self, i) for i in range(self.count)]

    def shutdown(self) -> None:
        self.optional(self.nv.nvmlShutdown)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _may_change_settings(status_path: str = "/proc/self/status") -> tuple[bool, str]:
    """Whether this process has the privilege NVML setters need, without calling a setter.

    The effective capabilities decide where the kernel reports them: root in a container without
    CAP_SYS_ADMIN is refused by the driver, so euid 0 alone is not enough.
    """
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    if int(line.split()[1], 16) & (1 << 21):  # CAP_SYS_ADMIN
                        return True, ""
                    return False, "needs root or CAP_SYS_ADMIN"
    except (OSError, ValueError, IndexError):
        pass
    if os.geteuid() == 0:
        return True, ""
    return False, "needs root or CAP_SYS_ADMIN"


class NvmlDevice:
    """One real GPU behind the ``Device`` protocol."""

    def __init__(self, backend: NvmlBackend, index: int) -> None:
        self.backend = b = backend
        nv = b.nv
        self.nv = nv
        self.clock = WallClock()
        self.handle = h = b.call(nv.nvmlDeviceGetHandleByIndex, index, what=f"open GPU {index}")
        arch_code = b.optional(nv.nvmlDeviceGetArchitecture, h)
        # an unsupported query (None) must not match a constant that an older binding lacks (also None)
        arch = next((name for const, name in _ARCH_NAMES.items()
                     if arch_code is not None and getattr(nv, const, None) == arch_code), "unknown")
        mem = b.optional(nv.nvmlDeviceGetMemoryInfo, h)
        pci = b.optional(nv.nvmlDeviceGetPciInfo, h)
        # instant board power and memory power (average field, memory scope) in one call
        self._power_fields = [nv.NVML_FI_DEV_POWER_INSTANT, (nv.NVML_FI_DEV_POWER_AVERAGE, nv.NVML_POWER_SCOPE_MEMORY)]
        fields = self._fields(self._power_fields)
        may_set, note = _may_change_settings()
        self._samples_ok = self._probe_samples()
        self._energy_ok = b.optional(nv.nvmlDeviceGetTotalEnergyConsumption, h) is not None
        self.info = DeviceInfo(
            index=index,
            uuid=_text(b.call(nv.nvmlDeviceGetUUID, h, what=f"read GPU {index} UUID")),
            pci_bus_id=_text(pci.busId) if pci is not None else "",
            name=_text(b.call(nv.nvmlDeviceGetName, h, what=f"read GPU {index} name")),
            architecture=arch,
            driver=b.driver,
            memory_total_mb=int(mem.total // 2**20) if mem is not None else 0,
            max_sm_clock_mhz=int(b.optional(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM) or 0),
            max_mem_clock_mhz=int(b.optional(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_MEM) or 0),
            backend="nvml",
            capabilities=Capabilities(
                energy_counter=self._energy_ok,
                instant_power=fields[0] is not None,
                average_power=True,
                power_samples=self._samples_ok,
                memory_power=fields[1] is not None,
                can_set_power_limit=may_set,
                can_lock_sm_clock=may_set,
                permission_note=note,
            ),
        )

    # --- helpers ------------------------------------------------------------------------------
    def _probe_samples(self) -> bool:
        """Does the driver keep a power-sample history? An empty history (NOT_FOUND: nothing newer
        than the timestamp) still means yes; only NOT_SUPPORTED or another error means no."""
        nv = self.nv
        try:
            nv.nvmlDeviceGetSamples(self.handle, nv.NVML_TOTAL_POWER_SAMPLES, 0)
        except nv.NVMLError as e:
            return getattr(e, "value", None) == getattr(nv, "NVML_ERROR_NOT_FOUND", -99)
        except AttributeError:
            return False
        return True

    def _reasons_fn(self) -> Callable[..., int]:
        """Clock-event reasons (the newer name; the older 'throttle' one on old bindings)."""
        newer = getattr(self.nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        return newer or self.nv.nvmlDeviceGetCurrentClocksThrottleReasons

    def _fields(self, ids: list[Any]) -> list[float | None]:
        """Field values in NVML's units (mW for power); None where unsupported."""
        values = self.backend.optional(self.nv.nvmlDeviceGetFieldValues, self.handle, ids)
        if values is None:
            return [None] * len(ids)
        out: list[float | None] = []
        for v in values:
            if v.nvmlReturn != self.nv.NVML_SUCCESS:
                out.append(None)
                continue
            attr = _VALUE_ATTRS.get(v.valueType, "uiVal")
            raw = getattr(v.value, attr)
            out.append(float(raw))
        return out

    # --- power-limit knob -------------------------------------------------------------------
    def power_limits(self) -> PowerLimits:
        b, nv, h = self.backend, self.nv, self.handle
        lo_mw, hi_mw = b.call(nv.nvmlDeviceGetPowerManagementLimitConstraints, h, what="read power limit range")
        default_mw = b.call(nv.nvmlDeviceGetPowerManagementDefaultLimit, h, what="read default power limit")
        current_mw = b.call(nv.nvmlDeviceGetPowerManagementLimit, h, what="read power limit")
        enforced_mw = b.optional(nv.nvmlDeviceGetEnforcedPowerLimit, h) or current_mw
        return PowerLimits(lo_mw / 1000, hi_mw / 1000, default_mw / 1000, current_mw / 1000, enforced_mw / 1000)

    def set_power_limit(self, watts: float) -> None:
        self.backend.call(self.nv.nvmlDeviceSetPowerManagementLimit, self.handle, int(round(watts * 1000)),
                          what=f"set the power limit of GPU {self.info.index}")

    # --- SM-clock knob ------------------------------------------------------------------------
    def supported_sm_clocks(self) -> list[int]:
        b, nv, h = self.backend, self.nv, self.handle
        mem_clocks = b.call(nv.nvmlDeviceGetSupportedMemoryClocks, h, what="read supported memory clocks")
        clocks = b.call(nv.nvmlDeviceGetSupportedGraphicsClocks, h, max(mem_clocks), what="read supported SM clocks")
        return sorted(int(c) for c in clocks)

    def sm_clock_lock(self) -> ClockLock | None:
        """NVML has no getter for a locked range; what tokbench set is known from its guard
        journal. Here: None (the state check reports the clock-event hint instead)."""
        return None

    def lock_sm_clock(self, lo_mhz: int, hi_mhz: int) -> None:
        self.backend.call(self.nv.nvmlDeviceSetGpuLockedClocks, self.handle, int(lo_mhz), int(hi_mhz),
                          what=f"lock the SM clock of GPU {self.info.index}")

    def reset_sm_clock(self) -> None:
        self.backend.call(self.nv.nvmlDeviceResetGpuLockedClocks, self.handle,
                          what=f"reset the SM clock of GPU {self.info.index}")

    # --- telemetry ------------------------------------------------------------------------------
    def read(self) -> Reading:
        b, nv, h = self.backend, self.nv, self.handle
        t = self.clock.now()
        instant_mw, mem_mw = self._fields(self._power_fields)
        average_mw = b.optional(nv.nvmlDeviceGetPowerUsage, h)
        util = b.optional(nv.nvmlDeviceGetUtilizationRates, h)
        mem = b.optional(nv.nvmlDeviceGetMemoryInfo, h)
        enforced = b.optional(nv.nvmlDeviceGetEnforcedPowerLimit, h)

        def w(mw: float | None) -> float | None:
            return None if mw is None else mw / 1000.0

        sm = b.optional(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM)
        memclk = b.optional(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM)
        temp = b.optional(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU)
        reasons = b.optional(self._reasons_fn(), h)
        return Reading(
            t_s=t,
            power_instant_w=w(instant_mw),
            power_average_w=w(average_mw),
            memory_power_w=w(mem_mw),
            sm_clock_mhz=None if sm is None else float(sm),
            mem_clock_mhz=None if memclk is None else float(memclk),
            temperature_c=None if temp is None else float(temp),
            utilization_pct=None if util is None else float(util.gpu),
            memory_used_mb=None if mem is None else mem.used / 2**20,
            clock_events=None if reasons is None else int(reasons),
            enforced_limit_w=w(enforced),
        )

    def read_energy_mj(self) -> int | None:
        if not self._energy_ok:
            return None
        value = self.backend.optional(self.nv.nvmlDeviceGetTotalEnergyConsumption, self.handle)
        return None if value is None else int(value)

    def power_samples(self, since_us: int) -> list[PowerSample] | None:
        if not self._samples_ok:
            return None
        nv = self.nv
        try:
            _vtype, samples = nv.nvmlDeviceGetSamples(self.handle, nv.NVML_TOTAL_POWER_SAMPLES, int(since_us))
        except nv.NVMLError as e:
            if getattr(e, "value", None) == getattr(nv, "NVML_ERROR_NOT_FOUND", -99):
                return []  # no sample newer than since_us
            raise _translate(nv, e, "read power samples") from e
        return [PowerSample(int(s.timeStamp), s.sampleValue.uiVal / 1000.0) for s in samples
                if int(s.timeStamp) > since_us]

    def state_check(self) -> StateCheck:
        b, nv, h = self.backend, self.nv, self.handle
        procs = b.optional(nv.nvmlDeviceGetComputeRunningProcesses, h) or []
        mine = os.getpid()
        foreign = tuple(sorted({int(p.pid) for p in procs if int(p.pid) != mine}))
        mig = b.optional(nv.nvmlDeviceGetMigMode, h)
        persistence = b.optional(nv.nvmlDeviceGetPersistenceMode, h)
        reasons = b.optional(self._reasons_fn(), h) or 0
        notes = []
        if int(reasons) & ClockEvent.APPLICATIONS_CLOCKS_SETTING:
            notes.append("SM clock held by an application-clock or locked-clock setting")
        return StateCheck(
            foreign_processes=foreign,
            mig_enabled=bool(mig[0]) if mig else False,
            clocks_locked=None,
            persistence_mode=None if persistence is None else bool(persistence),
            notes=tuple(notes),
        )

    def close(self) -> None:
        """Handles need no release; NVML is shut down by the backend."""
