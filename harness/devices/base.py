"""The device protocol and its records.

Everything above this layer (telemetry, workloads, sweeps) talks to a GPU only through
``Device``; the NVML backend and the simulated backend are peers behind it. Units are in every
field name: watts (``_w``), milliwatts (``_mw``), megahertz (``_mhz``), seconds (``_s``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Protocol, runtime_checkable


class ClockEvent(IntFlag):
    """NVML clock-event (throttle) reason bits, as the driver reports them."""

    NONE = 0
    GPU_IDLE = 0x1
    APPLICATIONS_CLOCKS_SETTING = 0x2
    SW_POWER_CAP = 0x4
    HW_SLOWDOWN = 0x8
    SYNC_BOOST = 0x10
    SW_THERMAL_SLOWDOWN = 0x20
    HW_THERMAL_SLOWDOWN = 0x40
    HW_POWER_BRAKE_SLOWDOWN = 0x80
    DISPLAY_CLOCK_SETTING = 0x100


#: short names a report prints for each reason bit
CLOCK_EVENT_NAMES: dict[ClockEvent, str] = {
    ClockEvent.GPU_IDLE: "idle",
    ClockEvent.APPLICATIONS_CLOCKS_SETTING: "app_clocks",
    ClockEvent.SW_POWER_CAP: "sw_power_cap",
    ClockEvent.HW_SLOWDOWN: "hw_slowdown",
    ClockEvent.SYNC_BOOST: "sync_boost",
    ClockEvent.SW_THERMAL_SLOWDOWN: "sw_thermal",
    ClockEvent.HW_THERMAL_SLOWDOWN: "hw_thermal",
    ClockEvent.HW_POWER_BRAKE_SLOWDOWN: "power_brake",
    ClockEvent.DISPLAY_CLOCK_SETTING: "display_clocks",
}


@dataclass(frozen=True)
class PowerLimits:
    """Power-limit constraints and state, in watts. ``current_w`` is what was requested,
    ``enforced_w`` what the driver applies (another limiter can win)."""

    min_w: float
    max_w: float
    default_w: float
    current_w: float
    enforced_w: float


@dataclass(frozen=True)
class ClockLock:
    """A locked SM clock range in MHz (``lo_mhz == hi_mhz`` for a single value)."""

    lo_mhz: int
    hi_mhz: int


@dataclass(frozen=True)
class Capabilities:
    """What this part and this process can do."""

    energy_counter: bool
    instant_power: bool
    average_power: bool
    power_samples: bool
    memory_power: bool
    can_set_power_limit: bool
    can_lock_sm_clock: bool
    #: why settings cannot be changed, when they cannot (empty otherwise)
    permission_note: str = ""


@dataclass(frozen=True)
class DeviceInfo:
    """Identity and static facts of one GPU."""

    index: int
    uuid: str
    pci_bus_id: str
    name: str
    architecture: str
    driver: str
    memory_total_mb: int
    max_sm_clock_mhz: int
    max_mem_clock_mhz: int
    backend: str  # "nvml" or "sim"
    capabilities: Capabilities
    #: simulated part id (profiles/gpus/<part>.toml), empty on real hardware
    part: str = ""


@dataclass(frozen=True)
class Reading:
    """One poll of the cheap telemetry. Fields a part does not report are ``None``."""

    t_s: float
    power_instant_w: float | None
    power_average_w: float | None
    memory_power_w: float | None
    sm_clock_mhz: float | None
    mem_clock_mhz: float | None
    temperature_c: float | None
    utilization_pct: float | None
    memory_used_mb: float | None
    clock_events: int | None
    enforced_limit_w: float | None


@dataclass(frozen=True)
class PowerSample:
    """One entry of the driver's power-sample history (``nvmlDeviceGetSamples``)."""

    ts_us: int
    power_w: float


@dataclass(frozen=True)
class StateCheck:
    """What on this GPU could spoil a measurement."""

    foreign_processes: tuple[int, ...] = ()
    mig_enabled: bool = False
    clocks_locked: ClockLock | None = None
    persistence_mode: bool | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def problems(self) -> list[str]:
        """Human-readable list of what was found (persistence is information, not a problem)."""
        out = []
        if self.foreign_processes:
            pids = ", ".join(str(p) for p in self.foreign_processes)
            out.append(f"other processes computing (pid {pids})")
        if self.mig_enabled:
            out.append("MIG enabled")
        if self.clocks_locked is not None:
            out.append(f"SM clock locked at {self.clocks_locked.lo_mhz}-{self.clocks_locked.hi_mhz} MHz")
        out.extend(self.notes)
        return out


class Clock(Protocol):
    """The device's clock. Every duration the harness measures comes from here."""

    simulated: bool

    def now(self) -> float:
        """Monotonic seconds."""

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass (on a simulated clock: advance the simulation)."""


class WallClock:
    """The monotonic wall clock used with real GPUs."""

    simulated = False

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class SimClock(Protocol):
    """A simulated clock that can also call back at simulated times, so a sampler can be
    driven by the simulation itself (deterministic, no wall-time thread)."""

    simulated: bool

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def call_every(self, period_s: float, callback: Callable[[float], None]) -> Callable[[], None]:
        """Call ``callback(t)`` every ``period_s`` of simulated time; returns a cancel function."""


@runtime_checkable
class Device(Protocol):
    """One GPU, real or simulated."""

    info: DeviceInfo
    clock: Clock

    # --- power-limit knob -------------------------------------------------------------
    def power_limits(self) -> PowerLimits: ...

    def set_power_limit(self, watts: float) -> None: ...

    # --- SM-clock knob ----------------------------------------------------------------
    def supported_sm_clocks(self) -> list[int]:
        """Settable SM clocks in MHz, ascending."""

    def sm_clock_lock(self) -> ClockLock | None:
        """The locked SM clock range, or None when the clocks float."""

    def lock_sm_clock(self, lo_mhz: int, hi_mhz: int) -> None: ...

    def reset_sm_clock(self) -> None: ...

    # --- telemetry --------------------------------------------------------------------
    def read(self) -> Reading:
        """The cheap readings (1-3 us each on an H100). Never reads the energy counter."""

    def read_energy_mj(self) -> int | None:
        """Cumulative energy counter in mJ, or None where the part has none. Slow (~4 ms on an
        H100): read it at window edges only."""

    def power_samples(self, since_us: int) -> list[PowerSample] | None:
        """Power-history samples newer than ``since_us`` (None where the driver keeps none)."""

    def state_check(self) -> StateCheck: ...

    def close(self) -> None: ...


def supports_sim_load(device: Device) -> bool:
    """True for devices that accept simulated work (see ``harness.devices.simulated.Load``)."""
    return hasattr(device, "submit")
