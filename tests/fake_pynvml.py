"""A fake ``pynvml`` (nvidia-ml-py) so that the real NVML backend runs in CI without a GPU.

It mirrors the binding's surface that tokbench uses: module-level ``nvml*`` functions with the
real names and parameters, the real constant values, ``NVMLError`` whose constructor maps a return
code to a per-code subclass (``NVMLError_NoPermission`` ...) exactly as the binding does, and ctypes
``c_nvmlFieldValue_t`` / ``c_nvmlValue_t`` values. ``tests/test_devices_fake_nvml.py`` checks every
name and value here against the installed binding, so the fake cannot drift from it.

Per test it is configured through ``FakeConfig`` / ``FakeGpu`` (plain, JSON-serialisable
dataclasses that also hold the live driver state): GPU count, unsupported queries and fields,
an NVML error per function, a refused ``nvmlInit``, functions an older binding lacks, and
permission refusal on setters. **Every call to a function that changes a setting** (Set, Reset,
Clear, ... as its verb: ``harness.devices.nvml.is_setter_name``; modelled here or not) is recorded
in ``FakeNvml.setter_calls``, refused or not, so a test can prove that code only observed.

Two ways in:

* in-process: the ``fake_nvml`` fixture (tests/conftest.py) puts a ``FakeNvml`` in
  ``sys.modules["pynvml"]``;
* subprocess: put ``tests/fake_nvml_path`` first on ``PYTHONPATH``; its ``pynvml.py`` builds the fake
  from ``$TOKBENCH_FAKE_NVML_CONFIG`` (a JSON file, or inline JSON) and appends each setter call
  as one JSON line to ``$TOKBENCH_FAKE_NVML_LOG``. Successful settings in that log are replayed when
  the next process starts, so limits and locks outlive a process as a driver's do (the
  ``fake_nvml_proc`` fixture wires this up).
"""

from __future__ import annotations

import ctypes
import json
import os
import string
import time
import types
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from harness.devices.nvml import is_setter_name as is_setter

# --- constants (values as in nvml.h / nvidia-ml-py) ------------------------------------------

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TOTAL_POWER_SAMPLES = 0
NVML_POWER_SCOPE_GPU = 0
NVML_POWER_SCOPE_MODULE = 1
NVML_POWER_SCOPE_MEMORY = 2
NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186
NVML_FI_DEV_ENERGY = 191
NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG = 2
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4
NVML_VALUE_TYPE_SIGNED_INT = 5
NVML_VALUE_TYPE_UNSIGNED_SHORT = 6
NVML_DEVICE_ARCH_KEPLER = 2
NVML_DEVICE_ARCH_MAXWELL = 3
NVML_DEVICE_ARCH_PASCAL = 4
NVML_DEVICE_ARCH_VOLTA = 5
NVML_DEVICE_ARCH_TURING = 6
NVML_DEVICE_ARCH_AMPERE = 7
NVML_DEVICE_ARCH_ADA = 8
NVML_DEVICE_ARCH_HOPPER = 9
NVML_DEVICE_ARCH_BLACKWELL = 10
NVML_FEATURE_DISABLED = 0
NVML_FEATURE_ENABLED = 1
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1

CONSTANTS = {k: v for k, v in dict(globals()).items() if k.startswith("NVML_")}


# --- errors: one subclass per code, built the way the binding builds them ---------------------

class NVMLError(Exception):
    """``NVMLError(code)`` returns an instance of that code's subclass, as in nvidia-ml-py."""

    _valClassMapping: dict[int, type] = {}
    _errcode_to_string: dict[int, str] = {}

    def __new__(cls, value: int):
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return NVMLError._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NVMLError) and self.value == other.value

    __hash__ = Exception.__hash__


ERROR_CLASSES: dict[str, type] = {}
for _name, _code in CONSTANTS.items():
    if _name.startswith("NVML_ERROR_"):
        _words = _name.removeprefix("NVML_ERROR_")
        _cls_name = "NVMLError_" + string.capwords(_words, "_").replace("_", "")
        _cls = type(_cls_name, (NVMLError,), {"__new__": (lambda v: lambda typ, *a: NVMLError.__new__(typ, v))(_code)})
        ERROR_CLASSES[_cls_name] = _cls
        NVMLError._valClassMapping[_code] = _cls
        NVMLError._errcode_to_string[_code] = string.capwords(_words.replace("_", " "))
        globals()[_cls_name] = _cls


def error_code(name_or_code: str | int) -> int:
    """``"NO_PERMISSION"``, ``"NVML_ERROR_NO_PERMISSION"`` or ``4`` -> 4 (configs may use names)."""
    if isinstance(name_or_code, int):
        return name_or_code
    key = name_or_code if name_or_code.startswith("NVML_ERROR_") else "NVML_ERROR_" + name_or_code.upper()
    return CONSTANTS[key]


# --- ctypes values, as the binding returns them -------------------------------------------------

class c_nvmlValue_t(ctypes.Union):
    _fields_ = [("dVal", ctypes.c_double), ("uiVal", ctypes.c_uint), ("ulVal", ctypes.c_ulong),
                ("ullVal", ctypes.c_ulonglong), ("sllVal", ctypes.c_longlong), ("siVal", ctypes.c_int),
                ("usVal", ctypes.c_ushort)]


class c_nvmlFieldValue_t(ctypes.Structure):
    _fields_ = [("fieldId", ctypes.c_uint32), ("scopeId", ctypes.c_uint32), ("timestamp", ctypes.c_int64),
                ("latencyUsec", ctypes.c_int64), ("valueType", ctypes.c_uint), ("nvmlReturn", ctypes.c_uint),
                ("value", c_nvmlValue_t)]


class c_nvmlSample_t(ctypes.Structure):
    _fields_ = [("timeStamp", ctypes.c_ulonglong), ("sampleValue", c_nvmlValue_t)]


class c_nvmlMemory_t(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class c_nvmlUtilization_t(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


@dataclass(frozen=True)
class _PciInfo:
    busId: str  # the binding decodes it to str
    bus: int
    device: int
    domain: int


@dataclass(frozen=True)
class _ProcessInfo:
    pid: int
    usedGpuMemory: int


@dataclass(frozen=True)
class _Handle:
    """Stands for the binding's ``c_nvmlDevice_t`` pointer: opaque to callers."""

    index: int


# --- configuration = the fake driver's state ---------------------------------------------------

def _default_sm_clocks() -> list[int]:
    return list(range(1980, 209, -15))  # NVML lists them descending


@dataclass
class FakeGpu:
    """One GPU. Powers in mW and energy in mJ, as NVML reports them. Mutable: setters change it."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = ""  # "" -> derived from the index
    pci_bus_id: str = ""  # "" -> derived from the index
    architecture: int = NVML_DEVICE_ARCH_HOPPER
    memory_total_mb: int = 81559
    memory_used_mb: int = 512
    power_min_mw: int = 200_000
    power_max_mw: int = 700_000
    power_default_mw: int = 700_000
    power_limit_mw: int | None = None  # None -> default
    enforced_limit_mw: int | None = None  # None -> the current limit
    power_usage_mw: int = 72_500  # nvmlDeviceGetPowerUsage: the 1 s average
    power_instant_mw: int = 73_125  # field NVML_FI_DEV_POWER_INSTANT
    memory_power_mw: int = 49_900  # field POWER_AVERAGE, memory scope
    energy_mj: int = 3_442_896
    #: what the board draws (mW; None: the instant field): the energy counter advances by it x time, in
    #: the driver's 100 ms steps, as a real counter does
    draw_mw: int | None = None
    energy_step_mj: int = 0  # instead, when set: the counter advances by this much per read (a stuck clock)
    sm_clock_mhz: int = 345
    mem_clock_mhz: int = 2619
    max_sm_clock_mhz: int = 1980
    max_mem_clock_mhz: int = 2619
    supported_mem_clocks: list[int] = field(default_factory=lambda: [2619])
    supported_sm_clocks: list[int] = field(default_factory=_default_sm_clocks)
    temperature_c: int = 32
    utilization_pct: int = 0
    clock_events: int = 0x1
    process_pids: list[int] = field(default_factory=list)
    mig_mode: int = 0
    persistence_mode: int = 1
    locked_clocks: list[int] | None = None  # [lo, hi] once set
    power_samples: list[list[int]] = field(default_factory=list)  # [[ts_us, mW], ...]
    #: query function names answering NOT_SUPPORTED on this GPU; "field:<id>" or "field:<id>:<scope>"
    #: for a field the part does not report
    unsupported: list[str] = field(default_factory=list)
    #: function name -> NVML error code (or name, e.g. "GPU_IS_LOST") raised on this GPU
    errors: dict[str, int | str] = field(default_factory=dict)


#: the driver updates the energy counter every 100 ms
COUNTER_PERIOD_S = 0.1


def _counter_mj(g: FakeGpu) -> int:
    """The counter at this moment: ``energy_mj`` plus the board's draw over the system's monotonic time
    (shared by every process, as the driver's counter is), in 100 ms steps; mW x s = mJ."""
    if g.energy_step_mj:
        return g.energy_mj
    draw = g.power_instant_mw if g.draw_mw is None else g.draw_mw
    ticks = int(time.monotonic() / COUNTER_PERIOD_S)
    return g.energy_mj + int(draw * ticks * COUNTER_PERIOD_S)


@dataclass
class FakeConfig:
    gpus: list[FakeGpu] = field(default_factory=lambda: [FakeGpu()])
    driver_version: str = "580.159.04"
    #: nvmlInit raises this code: LIBRARY_NOT_FOUND (no driver), DRIVER_NOT_LOADED, ...
    init_error: int | str | None = None
    #: False: every setter raises NO_PERMISSION (after being recorded)
    setters_allowed: bool = True
    #: function name -> error code, for every GPU and for system functions
    errors: dict[str, int | str] = field(default_factory=dict)
    #: functions this (older) binding lacks: AttributeError on access
    missing: list[str] = field(default_factory=list)
    #: function name -> seconds each call takes (e.g. 0.0039 for the energy counter; a large value hangs)
    delay_s: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> FakeConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "gpus" in kwargs:
            gpu_known = {f.name for f in fields(FakeGpu)}
            kwargs["gpus"] = [FakeGpu(**{k: v for k, v in g.items() if k in gpu_known}) for g in kwargs["gpus"]]
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class SetterCall:
    name: str
    gpu: int | None
    args: tuple
    ok: bool


#: setters the fake models: name -> (FakeGpu attribute, how to turn the call's args into its value)
_MODELLED_SETTERS = {
    "nvmlDeviceSetPowerManagementLimit": lambda g, limit: setattr(g, "power_limit_mw", int(limit)),
    "nvmlDeviceSetGpuLockedClocks": lambda g, lo, hi: setattr(g, "locked_clocks", [int(lo), int(hi)]),
    "nvmlDeviceResetGpuLockedClocks": lambda g: setattr(g, "locked_clocks", None),
    "nvmlDeviceSetPersistenceMode": lambda g, mode: setattr(g, "persistence_mode", int(mode)),
    "nvmlDeviceSetMigMode": lambda g, mode: setattr(g, "mig_mode", int(mode)),
}


# --- the module -----------------------------------------------------------------------------------

def _nvml(fn):
    """Wrap a modelled NVML function: count it, apply configured errors, record setters."""
    name = fn.__name__

    def wrapper(self: FakeNvml, *args: Any):
        return self._call(name, fn, args)

    wrapper.__name__ = name
    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped__ = fn
    return wrapper


class FakeNvml(types.ModuleType):
    """The fake module. Functions read and change ``self.config`` live."""

    NVMLError = NVMLError
    c_nvmlFieldValue_t = c_nvmlFieldValue_t
    c_nvmlValue_t = c_nvmlValue_t
    c_nvmlSample_t = c_nvmlSample_t

    def __init__(self, config: FakeConfig | None = None, log_path: str | None = None) -> None:
        super().__init__("pynvml", "fake nvidia-ml-py for tests (tests/fake_pynvml.py)")
        self.__file__ = __file__
        for k, v in CONSTANTS.items():
            setattr(self, k, v)
        for k, v in ERROR_CLASSES.items():
            setattr(self, k, v)
        self.config = config or FakeConfig()
        self.log_path = log_path
        self.setter_calls: list[SetterCall] = []
        self.calls: dict[str, int] = {}  # every NVML function called -> count
        self.initialised = 0
        if log_path:
            self._replay(log_path)

    @classmethod
    def from_env(cls) -> FakeNvml:
        raw = os.environ.get("TOKBENCH_FAKE_NVML_CONFIG", "")
        if raw and not raw.lstrip().startswith("{"):
            with open(raw) as f:
                raw = f.read()
        config = FakeConfig.from_dict(json.loads(raw)) if raw else FakeConfig()
        return cls(config, log_path=os.environ.get("TOKBENCH_FAKE_NVML_LOG") or None)

    # --- access rules ----------------------------------------------------------------------------
    def __dir__(self) -> list[str]:
        """Like the real module's: its functions are listed too."""
        return sorted(set(self.__dict__) | {n for n in dir(type(self)) if n.startswith("nvml")})

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("nvml") and name in object.__getattribute__(self, "config").missing:
            raise AttributeError(f"module 'pynvml' has no attribute '{name}'")
        return super().__getattribute__(name)

    def __getattr__(self, name: str) -> Any:
        """A setter the fake does not model is still recorded (and refused without permission)."""
        if is_setter(name):
            def unmodelled_setter(*args: Any) -> None:
                self._call(name, lambda _self, *a: None, args)
            unmodelled_setter.__name__ = name
            return unmodelled_setter
        raise AttributeError(f"module 'pynvml' (fake) has no attribute '{name}'")

    def _gpu(self, handle: Any) -> FakeGpu:
        if not isinstance(handle, _Handle):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.config.gpus[handle.index]

    def _configured_error(self, name: str, gpu: FakeGpu | None) -> int | None:
        if name.startswith(("nvmlDevice", "nvmlSystem")) and not self.initialised:
            return NVML_ERROR_UNINITIALIZED
        if gpu is not None and name in gpu.errors:
            return error_code(gpu.errors[name])
        if name in self.config.errors:
            return error_code(self.config.errors[name])
        if is_setter(name) and not self.config.setters_allowed:
            return NVML_ERROR_NO_PERMISSION
        if gpu is not None and name in gpu.unsupported:
            return NVML_ERROR_NOT_SUPPORTED
        return None

    def _call(self, name: str, fn: Any, args: tuple) -> Any:
        """One NVML call: the configured error, else the function; a setter is recorded either way."""
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.config.delay_s:
            time.sleep(self.config.delay_s[name])
        handle = args[0] if args and isinstance(args[0], _Handle) else None
        gpu = self.config.gpus[handle.index] if handle is not None and handle.index < len(self.config.gpus) else None
        code = self._configured_error(name, gpu)
        result = None
        if code is None:
            try:
                result = fn(self, *args)
            except NVMLError as e:
                code = e.value
        if is_setter(name):
            call = SetterCall(name, None if handle is None else handle.index,
                              tuple(_plain(a) for a in (args[1:] if handle is not None else args)), code is None)
            self.setter_calls.append(call)
            self._log(call)
            if code is None and gpu is not None and name in _MODELLED_SETTERS:
                _MODELLED_SETTERS[name](gpu, *args[1:])
        if code is not None:
            raise NVMLError(code)
        return result

    def _log(self, call: SetterCall) -> None:
        if not self.log_path:
            return
        entry = {"name": call.name, "gpu": call.gpu, "args": list(call.args), "ok": call.ok, "pid": os.getpid()}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def _replay(self, log_path: str) -> None:
        """Apply the successful settings of earlier processes (the driver kept them)."""
        try:
            with open(log_path) as f:
                entries = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return
        for e in entries:
            apply = _MODELLED_SETTERS.get(e["name"])
            if e.get("ok") and apply and e.get("gpu") is not None and e["gpu"] < len(self.config.gpus):
                apply(self.config.gpus[e["gpu"]], *e["args"])

    # --- system -----------------------------------------------------------------------------------
    @_nvml
    def nvmlInit(self) -> None:
        if self.config.init_error is not None:
            raise NVMLError(error_code(self.config.init_error))
        self.initialised += 1

    @_nvml
    def nvmlShutdown(self) -> None:
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        self.initialised -= 1

    @_nvml
    def nvmlSystemGetDriverVersion(self) -> str:
        return self.config.driver_version

    @_nvml
    def nvmlDeviceGetCount(self) -> int:
        return len(self.config.gpus)

    @_nvml
    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        if not 0 <= int(index) < len(self.config.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(int(index))

    @_nvml
    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> _Handle:
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for i in range(len(self.config.gpus)):
            if self._uuid(i) == uuid:
                return _Handle(i)
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    @_nvml
    def nvmlDeviceGetHandleByPciBusId(self, pciBusId: str) -> _Handle:
        bus = pciBusId.decode() if isinstance(pciBusId, bytes) else pciBusId
        for i in range(len(self.config.gpus)):
            if self._pci(i).lower() == bus.lower():
                return _Handle(i)
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    # --- identity -----------------------------------------------------------------------------------
    def _uuid(self, i: int) -> str:
        return self.config.gpus[i].uuid or f"GPU-{0xfa4e0000 + i:08x}-1111-2222-3333-{i:012x}"

    def _pci(self, i: int) -> str:
        return self.config.gpus[i].pci_bus_id or f"00000000:{0x18 + 0x10 * i:02X}:00.0"

    @_nvml
    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        self._gpu(handle)
        return self._uuid(handle.index)

    @_nvml
    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return self._gpu(handle).name

    @_nvml
    def nvmlDeviceGetPciInfo(self, handle: _Handle) -> _PciInfo:
        self._gpu(handle)
        bus_id = self._pci(handle.index)
        dom, bus, dev = bus_id.split(":")
        return _PciInfo(bus_id, int(bus, 16), int(dev.split(".")[0], 16), int(dom, 16))

    @_nvml
    def nvmlDeviceGetArchitecture(self, device: _Handle) -> int:
        return self._gpu(device).architecture

    @_nvml
    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: Any = None) -> c_nvmlMemory_t:
        g = self._gpu(handle)
        total, used = g.memory_total_mb * 2**20, g.memory_used_mb * 2**20
        return c_nvmlMemory_t(total, total - used, used)

    @_nvml
    def nvmlDeviceGetMaxClockInfo(self, handle: _Handle, type: int) -> int:
        g = self._gpu(handle)
        return g.max_mem_clock_mhz if type == NVML_CLOCK_MEM else g.max_sm_clock_mhz

    # --- power limits -------------------------------------------------------------------------------
    @_nvml
    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: _Handle) -> list[int]:
        g = self._gpu(handle)
        return [g.power_min_mw, g.power_max_mw]

    @_nvml
    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: _Handle) -> int:
        return self._gpu(handle).power_default_mw

    @_nvml
    def nvmlDeviceGetPowerManagementLimit(self, handle: _Handle) -> int:
        g = self._gpu(handle)
        return g.power_default_mw if g.power_limit_mw is None else g.power_limit_mw

    @_nvml
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        g = self._gpu(handle)
        if g.enforced_limit_mw is not None:
            return g.enforced_limit_mw
        return g.power_default_mw if g.power_limit_mw is None else g.power_limit_mw

    @_nvml
    def nvmlDeviceSetPowerManagementLimit(self, handle: _Handle, limit: int) -> None:
        g = self._gpu(handle)
        if not g.power_min_mw <= int(limit) <= g.power_max_mw:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)

    # --- clocks ---------------------------------------------------------------------------------------
    @_nvml
    def nvmlDeviceGetSupportedMemoryClocks(self, handle: _Handle) -> list[int]:
        return list(self._gpu(handle).supported_mem_clocks)

    @_nvml
    def nvmlDeviceGetSupportedGraphicsClocks(self, handle: _Handle, memoryClockMHz: int) -> list[int]:
        g = self._gpu(handle)
        if memoryClockMHz not in g.supported_mem_clocks:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return list(g.supported_sm_clocks)

    @_nvml
    def nvmlDeviceSetGpuLockedClocks(self, handle: _Handle, minGpuClockMHz: int, maxGpuClockMHz: int) -> None:
        self._gpu(handle)
        if minGpuClockMHz > maxGpuClockMHz:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)

    @_nvml
    def nvmlDeviceResetGpuLockedClocks(self, handle: _Handle) -> None:
        self._gpu(handle)

    @_nvml
    def nvmlDeviceGetClockInfo(self, handle: _Handle, type: int) -> int:
        g = self._gpu(handle)
        if type == NVML_CLOCK_MEM:
            return g.mem_clock_mhz
        if g.locked_clocks is not None:
            return min(max(g.sm_clock_mhz, g.locked_clocks[0]), g.locked_clocks[1])
        return g.sm_clock_mhz

    @_nvml
    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        g = self._gpu(handle)
        return g.clock_events | (0x2 if g.locked_clocks is not None else 0)

    @_nvml
    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: _Handle) -> int:
        g = self._gpu(handle)
        return g.clock_events | (0x2 if g.locked_clocks is not None else 0)

    # --- telemetry ------------------------------------------------------------------------------------
    @_nvml
    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._gpu(handle).power_usage_mw

    @_nvml
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        g = self._gpu(handle)
        if g.energy_step_mj:
            g.energy_mj += g.energy_step_mj
            return g.energy_mj
        return _counter_mj(g)

    @_nvml
    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        return self._gpu(handle).temperature_c

    @_nvml
    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> c_nvmlUtilization_t:
        g = self._gpu(handle)
        return c_nvmlUtilization_t(g.utilization_pct, 0)

    def _field(self, g: FakeGpu, field_id: int, scope: int) -> tuple[int, int, float]:
        """(nvmlReturn, valueType, value) of one field."""
        if f"field:{field_id}" in g.unsupported or f"field:{field_id}:{scope}" in g.unsupported:
            return NVML_ERROR_NOT_SUPPORTED, NVML_VALUE_TYPE_UNSIGNED_INT, 0
        if field_id == NVML_FI_DEV_POWER_INSTANT:
            return NVML_SUCCESS, NVML_VALUE_TYPE_UNSIGNED_INT, g.power_instant_mw
        if field_id == NVML_FI_DEV_POWER_AVERAGE:
            value = g.memory_power_mw if scope == NVML_POWER_SCOPE_MEMORY else g.power_usage_mw
            return NVML_SUCCESS, NVML_VALUE_TYPE_UNSIGNED_INT, value
        if field_id == NVML_FI_DEV_ENERGY:
            return NVML_SUCCESS, NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, _counter_mj(g)
        return NVML_ERROR_NOT_SUPPORTED, NVML_VALUE_TYPE_UNSIGNED_INT, 0

    @_nvml
    def nvmlDeviceGetFieldValues(self, handle: _Handle, fieldIds: list) -> ctypes.Array:
        g = self._gpu(handle)
        values = (c_nvmlFieldValue_t * len(fieldIds))()
        attrs = {NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal", NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal"}
        for i, fid in enumerate(fieldIds):
            field_id, scope = (fid, 0) if isinstance(fid, int) else fid
            ret, vtype, value = self._field(g, field_id, scope)
            v = values[i]
            v.fieldId, v.scopeId, v.nvmlReturn, v.valueType = field_id, scope, ret, vtype
            setattr(v.value, attrs[vtype], int(value))
        return values

    @_nvml
    def nvmlDeviceGetSamples(self, device: _Handle, sampling_type: int, timeStamp: int) -> tuple[int, list]:
        g = self._gpu(device)
        newer = [s for s in g.power_samples if s[0] > timeStamp]
        if not newer:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        out = []
        for ts, mw in newer:
            s = c_nvmlSample_t()
            s.timeStamp, s.sampleValue.uiVal = ts, mw
            out.append(s)
        return NVML_VALUE_TYPE_UNSIGNED_INT, out

    # --- state ----------------------------------------------------------------------------------------
    @_nvml
    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[_ProcessInfo]:
        return [_ProcessInfo(pid, 2**30) for pid in self._gpu(handle).process_pids]

    @_nvml
    def nvmlDeviceGetMigMode(self, device: _Handle) -> list[int]:
        g = self._gpu(device)
        return [g.mig_mode, g.mig_mode]

    @_nvml
    def nvmlDeviceGetPersistenceMode(self, handle: _Handle) -> int:
        return self._gpu(handle).persistence_mode

    @_nvml
    def nvmlDeviceSetPersistenceMode(self, handle: _Handle, mode: int) -> None:
        self._gpu(handle)

    @_nvml
    def nvmlDeviceSetMigMode(self, device: _Handle, mode: int) -> None:
        self._gpu(device)


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a call argument."""
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if isinstance(value, _Handle):
        return {"gpu": value.index}
    return repr(value)


#: names of the NVML functions the fake models (checked against the real binding)
MODELLED_FUNCTIONS = sorted(n for n, v in vars(FakeNvml).items() if n.startswith("nvml") and callable(v))


def read_setter_log(path: str | os.PathLike) -> list[dict]:
    """The setter calls a subprocess made (one dict per call), [] when none was made."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
