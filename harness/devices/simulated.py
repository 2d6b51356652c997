"""Simulated GPUs: physics, not lookup tables.

A ``SimNode`` holds the GPUs of one simulated host and one simulated clock. Time advances only
when someone waits (``sleep``, ``synchronize``, a slow sensor read), in event-driven sub-steps no
longer than the power-sample period, so a sweep runs far faster than real time and is
deterministic for its seed.

Per GPU and sub-step:

* the SM clock is the lowest of: the part's maximum, a clock lock, and the power-cap controller's
  ceiling. The controller regulates on the board's own reading (a sensor gain error moves the
  true power): a slow loop holds the mean over a 1 s window at the limit, a fast loop lets bursts
  sit at most ``cap_burst_margin`` above it, and the board's peak limiter holds instantaneous power
  under ``cap_peak_ratio`` x its maximum (fitted to the real H100 square-wave trace). While the
  cap binds, the part hops between V-f states ``cap_dither_mhz`` either side of the ceiling (a
  locked clock runs steady), which costs energy at equal throughput. Below the clock floor the
  ceiling becomes a duty cycle: the part idles part of the time, so any legal cap can be held;
* voltage follows the V-f curve; power = static (memory refresh and PHY, fabric) + leakage(V, T)
  + (V/Vmax)^2 f/fmax x (clock tree + SM activity + tensor work) + (V/Vmax)^2 x on-chip data
  movement + HBM device power, the last two proportional to the bytes moved per second: every
  watt above static answers the clock except the HBM term, and that one falls with the bytes;
* work (``Load``) is a list of kernel classes (weight GEMMs, attention, elementwise), each on its
  own roofline at the current clock: compute scales with 1/f, DRAM bandwidth holds down to
  ``bw_knee_mhz`` and falls with the clock below it; an engine's inefficiency adds overhead that
  is only partly clock-bound; host time runs before the GPU work, or beside it
  (``host_overlaps``, CUDA graphs);
* a first-order thermal model feeds leakage back;
* sensors: instant power (25 ms mean) and average power (1 s mean) fields refreshed every 100 ms,
  an energy counter in mJ refreshed every 100 ms whose read costs ~4 ms, a 20 ms power-sample
  ring buffer ~2.4 s deep, and a proportional gain error per board;
* boards differ in leakage, V-f offset and sustained speed (``*_sigma``), seeded per board.

Settings (power limit, clock lock) live in a state file per node, as a driver outlives processes.
``SimulatedGPU.steady_step`` answers from the same physics, without running, how long a sequence
of loads takes at a setting (what ``--dry-run`` needs).
"""

from __future__ import annotations

import bisect
import fcntl
import json
import math
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.devices.base import (
    Capabilities,
    ClockEvent,
    ClockLock,
    DeviceInfo,
    PowerLimits,
    PowerSample,
    Reading,
    StateCheck,
)
from harness.devices.catalog import PartSpec
from harness.errors import PermissionDenied, UsageError

#: simulated seconds at which every node's clock starts (an arbitrary, non-zero epoch)
SIM_EPOCH_S = 1000.0
#: how often (simulated seconds) the physics re-reads the node state file for settings another
#: process may have changed; this process's own changes apply at once
SETTINGS_POLL_S = 0.1
#: lowest duty cycle the cap controller can throttle a part to below its clock floor
MIN_DUTY = 0.02
#: smallest power-vs-ceiling slope the controller assumes (W/MHz): bounds its step when the clock
#: barely moves the power (idle SMs, host-bound work)
SLOPE_FLOOR_W_PER_MHZ = 0.02


@dataclass(frozen=True)
class Kernel:
    """One kernel class of a step (weight GEMMs, attention over the KV cache, elementwise ops).

    Each class is bounded by its own roofline at the current clock, so a step's time is the sum of
    its classes' times: compute in one class cannot hide memory traffic of another.
    """

    flops: float = 0.0
    bytes_moved: float = 0.0

    def __post_init__(self) -> None:
        if self.flops < 0 or self.bytes_moved < 0:
            raise ValueError("Kernel quantities must be non-negative")


@dataclass(frozen=True)
class Load:
    """One step of work for a simulated GPU.

    ``kernels`` are the step's kernel classes, each with its FLOPs (tensor cores, rate
    proportional to the SM clock) and bytes (DRAM, at the bandwidth the clock sustains); a load
    given only ``flops`` and ``bytes_moved`` is one class. ``efficiency`` (0-1] is the share of the
    roofline the engine reaches (the rest is overhead: small kernels, launches, synchronisation);
    ``host_s`` is host-side time (Python, CPU work) during which the GPU waits, clocks up; with
    ``host_overlaps`` the host prepares the next step while the GPU runs this one (CUDA graphs,
    asynchronous launches), so the step takes the longer of the two instead of their sum.
    """

    flops: float = 0.0
    bytes_moved: float = 0.0
    efficiency: float = 1.0
    host_s: float = 0.0
    kernels: tuple[Kernel, ...] = ()
    host_overlaps: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.efficiency <= 1:
            raise ValueError("Load.efficiency must be in (0, 1]")
        if self.flops < 0 or self.bytes_moved < 0 or self.host_s < 0:
            raise ValueError("Load quantities must be non-negative")
        if self.kernels:  # the totals are the classes' sums
            object.__setattr__(self, "flops", sum(k.flops for k in self.kernels))
            object.__setattr__(self, "bytes_moved", sum(k.bytes_moved for k in self.kernels))

    @classmethod
    def of(cls, kernels: tuple[Kernel, ...], efficiency: float = 1.0, host_s: float = 0.0,
           host_overlaps: bool = False) -> Load:
        return cls(efficiency=efficiency, host_s=host_s, kernels=tuple(kernels), host_overlaps=host_overlaps)

    def classes(self) -> tuple[Kernel, ...]:
        return self.kernels or (Kernel(self.flops, self.bytes_moved),)

    def scaled(self, factor: float, efficiency: float) -> Load:
        """The same step with every quantity times ``factor`` (run-to-run jitter) at ``efficiency``."""
        kernels = tuple(Kernel(k.flops * factor, k.bytes_moved * factor) for k in self.kernels)
        return Load(self.flops * factor, self.bytes_moved * factor, efficiency, self.host_s * factor, kernels,
                    self.host_overlaps)


@dataclass(frozen=True)
class BoardOverrides:
    """Per-board deviations from the part (a planted outlier, a foreign process, ...)."""

    leakage: float | None = None  # leakage multiplier
    vf_offset_v: float | None = None
    sensor_gain: float | None = None  # proportional gain error, e.g. 0.03 = reads 3% high
    efficiency: float | None = None  # multiplies every load's efficiency (a slow board)
    foreign_pids: tuple[int, ...] = ()
    can_set: bool = True

    @staticmethod
    def parse(spec: str) -> tuple[int, BoardOverrides]:
        """Parse ``"INDEX:key=value,key=value"`` (e.g. ``"1:leakage=1.4,efficiency=0.9"``)."""
        try:
            idx_s, _, body = spec.partition(":")
            index = int(idx_s)
            kwargs: dict[str, object] = {}
            for item in filter(None, body.split(",")):
                key, _, value = item.partition("=")
                key = key.strip()
                if key == "foreign_pids":
                    kwargs[key] = tuple(int(p) for p in value.split("+") if p)
                elif key == "can_set":
                    kwargs[key] = value.strip().lower() in ("1", "true", "yes")
                elif key in ("leakage", "vf_offset_v", "sensor_gain", "efficiency"):
                    kwargs[key] = float(value)
                else:
                    raise ValueError(f"unknown key '{key}'")
            return index, BoardOverrides(**kwargs)  # type: ignore[arg-type]
        except ValueError as e:
            raise UsageError(
                f"bad simulated-board override '{spec}' ({e}); expected INDEX:key=value,... with keys "
                "leakage, vf_offset_v, sensor_gain, efficiency, foreign_pids (pid+pid), can_set"
            ) from e


# --------------------------------------------------------------------------------------------
# physics (pure functions of the part, the board and the operating point)


def voltage(part: PartSpec, f_mhz: float, vf_offset_v: float = 0.0) -> float:
    """Core voltage for an SM clock: flat at v_min up to the knee, then a power law to v_max."""
    if f_mhz <= part.vf_knee_mhz:
        v = part.v_min
    else:
        x = min(1.0, (f_mhz - part.vf_knee_mhz) / (part.sm_clock_max_mhz - part.vf_knee_mhz))
        v = part.v_min + (part.v_max - part.v_min) * x**part.vf_exponent
    return v + vf_offset_v


def dynamic_scale(part: PartSpec, f_mhz: float, v: float) -> float:
    """(V/Vmax)^2 * f/fmax: dynamic power relative to full clock and voltage."""
    return (v / part.v_max) ** 2 * (f_mhz / part.sm_clock_max_mhz)


def leakage_w(part: PartSpec, v: float, temp_c: float, leak_mult: float) -> float:
    return part.leak_w * leak_mult * (v / part.v_max) * math.exp(part.leak_per_c * (temp_c - part.leak_ref_c))


@dataclass(frozen=True)
class Activity:
    """What the silicon is doing during a sub-step."""

    busy: float  # share of SMs executing something (0 when waiting on the host)
    compute_util: float  # share of tensor-core peak at the current clock
    mem_util: float  # share of the part's peak DRAM bandwidth (bytes per second, not per clock)

    def times(self, duty: float) -> Activity:
        """The activity of a part that works only a share ``duty`` of the time (throttled below its
        clock floor) and idles the rest."""
        return Activity(self.busy * duty, self.compute_util * duty, self.mem_util * duty)


IDLE = Activity(0.0, 0.0, 0.0)


def power_w(part: PartSpec, f_mhz: float, v: float, temp_c: float, leak_mult: float,
            act: Activity, p0: bool) -> float:
    """True board power for an operating point.

    Everything above static power answers a lever the controller has: clock tree, SM and tensor
    work scale with V^2 f; on-chip data movement (L2, crossbar) with V^2 times the bytes moved per
    second (which the clock bounds, see ``bandwidth_tbs``); only the HBM device term is
    clock-independent, and the bytes it moves still fall when the clock does.
    """
    leak = leakage_w(part, v, temp_c, leak_mult)
    if not p0:
        return part.idle_base_w + leak
    s = dynamic_scale(part, f_mhz, v)
    dyn = part.clock_tree_w + part.busy_dyn_w * act.busy + part.compute_dyn_w * act.compute_util
    onchip = (v / part.v_max) ** 2 * part.onchip_mem_w * act.mem_util
    return part.p0_base_w + leak + s * dyn + onchip + part.hbm_power_w * act.mem_util


def bandwidth_tbs(part: PartSpec, f_mhz: float) -> float:
    """DRAM bandwidth the SMs and L2 can sustain at ``f_mhz``: the full figure down to
    ``bw_knee_mhz``, below which too few requests are in flight and it falls with the clock."""
    return part.mem_bandwidth_tbs * min(1.0, f_mhz / part.bw_knee_mhz)


@dataclass(frozen=True)
class StepTime:
    """Seconds a load takes at one clock, split the way the power model needs it."""

    compute_s: float  # tensor-core time summed over the kernel classes
    roofline_s: float  # sum over kernel classes of max(compute, memory)
    overhead_s: float  # the engine's shortfall from the roofline
    bytes_moved: float

    @property
    def total_s(self) -> float:
        return self.roofline_s + self.overhead_s

    def activity(self, peak_bw_tbs: float) -> Activity:
        total = self.total_s
        if total <= 0:
            return Activity(1.0, 0.0, 0.0)
        return Activity(1.0, self.compute_s / total, self.bytes_moved / total / (peak_bw_tbs * 1e12))


def step_time(part: PartSpec, load: Load, f_mhz: float) -> StepTime:
    """Time of ``load`` at clock ``f_mhz``: each kernel class on its own roofline at that clock
    (compute scales with 1/f, memory with the bandwidth the clock sustains), plus the engine's
    overhead, a multiple of the roofline time at full clock of which a share
    ``overhead_clock_share`` stretches with 1/f."""
    fmax = part.sm_clock_max_mhz
    peak = part.peak_bf16_tflops * 1e12
    bw, bw_full = bandwidth_tbs(part, f_mhz) * 1e12, part.mem_bandwidth_tbs * 1e12
    compute = roof = roof_full = 0.0
    for k in load.classes():
        t_c = k.flops / peak * fmax / f_mhz
        compute += t_c
        roof += max(t_c, k.bytes_moved / bw)
        roof_full += max(k.flops / peak, k.bytes_moved / bw_full)
    share = part.overhead_clock_share
    overhead = (1.0 / load.efficiency - 1.0) * roof_full * ((1 - share) + share * fmax / f_mhz)
    return StepTime(compute, roof, overhead, load.bytes_moved)


def highest_clock(lo_mhz: float, hi_mhz: float, fits: Callable[[float], bool], steps: int) -> float:
    """The highest clock in [lo, hi] at which ``fits`` holds (power under a limit falls with the
    clock), by bisection over ``steps`` halvings; ``lo`` when none does."""
    lo, hi = lo_mhz, hi_mhz
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def roofline_s(part: PartSpec, load: Load, f_mhz: float) -> float:
    """Lower bound on a load's time at ``f_mhz``: its kernel classes at their rooflines, no engine
    overhead, no host time (what no engine can beat at that clock)."""
    return step_time(part, Load.of(load.classes()), f_mhz).roofline_s


@dataclass(frozen=True)
class SteadyStep:
    """A workload step once it runs steadily at a setting (``SimulatedGPU.steady_step``)."""

    seconds: float
    watts: float  # true mean power over the step, host gaps included
    temp_c: float  # the temperature that power settles at
    thermal_tau_s: float  # how fast the temperature gets there


# --------------------------------------------------------------------------------------------
# node state file (what a driver would keep)


def state_dir() -> Path:
    env = os.environ.get("TOKBENCH_SIM_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tokbench" / "sim"


class NodeState:
    """Power limits and clock locks of a simulated node, in a JSON file.

    Writes take an flock and replace the file atomically; reads are cached and reloaded only when
    the file changes (a stat per read), because the simulation consults them every sub-step and
    another process (a restore after a kill) may change them at any time.
    """

    def __init__(self, node_name: str) -> None:
        self.path = state_dir() / f"{node_name}.json"
        self._stamp: tuple[int, int, int] | None = None
        self._data: dict = {}

    def _load(self) -> dict:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._data = None, {}
            return self._data
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                self._data = json.loads(self.path.read_text())
            except (json.JSONDecodeError, FileNotFoundError):
                self._data = {}
            self._stamp = stamp
        return self._data

    def get(self, index: int) -> dict:
        return self._load().get(str(index), {})

    def update(self, index: int, **values: object) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            self._stamp = None
            data = json.loads(json.dumps(self._load()))
            entry = data.setdefault(str(index), {})
            for k, v in values.items():
                if v is None:
                    entry.pop(k, None)
                else:
                    entry[k] = v
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
            self._stamp = None


# --------------------------------------------------------------------------------------------
# the node and its clock


class SimNode:
    """A simulated host: its GPUs share one simulated clock."""

    simulated = True

    def __init__(self, part: PartSpec, count: int = 1, seed: int = 0, name: str | None = None,
                 overrides: dict[int, BoardOverrides] | None = None, max_substep_s: float | None = None) -> None:
        if count < 1:
            raise UsageError("a simulated node needs at least one GPU")
        self.part = part
        self.seed = seed
        self.name = name or f"sim-{part.id}-x{count}-seed{seed}"
        self.state = NodeState(self.name)
        self._t = SIM_EPOCH_S
        self._max_dt = max_substep_s or part.samples_period_s
        self._callbacks: list[list] = []  # [next_t, period, fn, active]
        overrides = overrides or {}
        unknown = set(overrides) - set(range(count))
        if unknown:
            raise UsageError(f"override for simulated GPU {sorted(unknown)[0]}, but the node has {count}")
        self.gpus = [SimulatedGPU(self, i, overrides.get(i, BoardOverrides())) for i in range(count)]

    # --- clock protocol -------------------------------------------------------------------
    def now(self) -> float:
        return self._t

    def sleep(self, seconds: float) -> None:
        self.advance_until(self._t + max(0.0, seconds))

    def call_every(self, period_s: float, callback: Callable[[float], None]) -> Callable[[], None]:
        entry = [self._t + period_s, period_s, callback, True]
        self._callbacks.append(entry)

        def cancel() -> None:
            entry[3] = False
            if entry in self._callbacks:
                self._callbacks.remove(entry)

        return cancel

    # --- simulation -------------------------------------------------------------------------
    def advance_until(self, t_end: float, until: Callable[[], bool] | None = None) -> None:
        """Advance the simulation to ``t_end`` (or until ``until()`` is true)."""
        while self._t < t_end - 1e-12:
            if until is not None and until():
                return
            dt = min(t_end - self._t, self._max_dt)
            for g in self.gpus:
                dt = min(dt, g.time_to_next_event())
            for cb in self._callbacks:
                dt = min(dt, max(cb[0] - self._t, 0.0))
            dt = max(dt, 1e-9)
            for g in self.gpus:
                g.integrate(self._t, dt)
            self._t += dt
            for g in self.gpus:
                g.after_step(self._t)
            for cb in list(self._callbacks):
                if cb[3] and cb[0] <= self._t + 1e-12:
                    cb[0] += cb[1]
                    cb[2](self._t)

    def run_until_idle(self, gpu: SimulatedGPU, timeout_s: float = 3600.0) -> None:
        self.advance_until(self._t + timeout_s, until=lambda: not gpu.queue)


@dataclass
class _Running:
    """A load in progress: ``host_left`` seconds of host time, then (or meanwhile, if the load's host
    time overlaps) ``work_left`` (0-1) of GPU work."""

    load: Load
    host_left: float
    work_left: float = 1.0
    timing: StepTime | None = None  # at the clock of the current sub-step

    def gpu_active(self) -> bool:
        return self.work_left > 1e-9 and (self.host_left <= 0 or self.load.host_overlaps)


@dataclass
class _Sensors:
    """Sensor state of one board: last published values and their next refresh times."""

    instant_w: float
    average_w: float
    energy_mj: int
    next_field_t: float
    next_energy_t: float
    next_sample_t: float
    samples: deque = field(default_factory=deque)


class SimulatedGPU:
    """One simulated board behind the ``Device`` protocol (plus ``submit``/``synchronize``)."""

    def __init__(self, node: SimNode, index: int, overrides: BoardOverrides) -> None:
        self.node = node
        self.part = part = node.part
        self.index = index
        self.overrides = overrides
        self.clock = node
        rng = random.Random(f"{node.seed}:{index}:board")
        # every board draws all its deviations, so an override changes only what it names
        leak, vf, gain, speed = (rng.gauss(1.0, part.leak_sigma), rng.gauss(0.0, part.vf_offset_sigma_v),
                                 rng.gauss(0.0, part.sensor_gain_sigma), rng.gauss(1.0, part.speed_sigma))
        self.leak_mult = overrides.leakage if overrides.leakage is not None else max(0.5, leak)
        self.vf_offset_v = overrides.vf_offset_v if overrides.vf_offset_v is not None else vf
        self.sensor_gain = overrides.sensor_gain if overrides.sensor_gain is not None else gain
        # process variation beyond leakage and voltage: a board's sustained throughput at a given
        # clock and power (bins, memory stacks, cooling), part of the published same-SKU spread
        self.speed = max(0.5, speed)
        self._jitter = random.Random(f"{node.seed}:{index}:jitter")
        uuid_rng = random.Random(f"{node.name}:{index}:uuid")
        self.uuid = "GPU-SIM-" + "-".join(f"{uuid_rng.getrandbits(32):08x}" for _ in range(3))
        self.info = DeviceInfo(
            index=index,
            uuid=self.uuid,
            pci_bus_id=f"00000000:{0x18 + 0x10 * index:02X}:00.0",
            name=part.name,
            architecture=part.architecture,
            driver="sim",
            memory_total_mb=part.memory_total_mb,
            max_sm_clock_mhz=part.sm_clock_max_mhz,
            max_mem_clock_mhz=part.mem_clock_mhz,
            backend="sim",
            part=part.id,
            capabilities=Capabilities(
                energy_counter=part.has_energy_counter,
                instant_power=part.has_instant_power,
                average_power=True,
                power_samples=part.has_power_samples,
                memory_power=part.has_memory_power,
                can_set_power_limit=self._may_set(),
                can_lock_sm_clock=self._may_set(),
                permission_note="" if self._may_set() else "simulated board set read-only",
            ),
        )
        # physical state: start idle, in thermal equilibrium
        v_idle = voltage(part, part.idle_sm_clock_mhz, self.vf_offset_v)
        self.temp_c = part.ambient_c
        for _ in range(50):
            p_idle = power_w(part, part.idle_sm_clock_mhz, v_idle, self.temp_c, self.leak_mult, IDLE, False)
            self.temp_c = part.ambient_c + part.thermal_resistance_c_per_w * p_idle
        # the power-cap controller: a slow loop holds the ~1 s mean at the limit, a fast one lets
        # short bursts exceed it by at most ``cap_burst_margin``; each is a clock ceiling in MHz,
        # which below the clock floor becomes a duty cycle (the part idles part of the time)
        self.f_slow_mhz = self.f_fast_mhz = float(part.sm_clock_max_mhz)
        self.p_slow_w = self.p_fast_w = p_idle * (1.0 + self.sensor_gain)
        self.duty = 1.0
        self.last_busy_t = -1e9
        self.true_energy_j = 0.0
        self.queue: deque[_Running] = deque()
        self.p_now_w = p_idle
        self.f_now_mhz = float(part.idle_sm_clock_mhz)
        self.act = IDLE
        self.events = int(ClockEvent.GPU_IDLE)
        self._limit_w = part.power_default_w
        self._cached_settings: dict = {}
        self._settings_read_at = -math.inf
        # cumulative true energy at sub-step boundaries, for sensor window means (seeded with an
        # idle past so the first windows read idle power)
        past = part.average_window_s + 1.0
        self._hist_t: deque[float] = deque([node.now() - past, node.now()])
        self._hist_e: deque[float] = deque([-p_idle * past, 0.0])
        phase = random.Random(f"{node.seed}:{index}:sensor")
        t0 = node.now()
        counter_offset_mj = phase.randrange(10**9, 10**10)
        self._counter_offset_mj = counter_offset_mj
        self.sensors = _Sensors(
            instant_w=p_idle, average_w=p_idle, energy_mj=counter_offset_mj,
            next_field_t=t0 + phase.uniform(0, part.sensor_update_s),
            next_energy_t=t0 + phase.uniform(0, part.energy_update_s),
            next_sample_t=t0 + part.samples_period_s,
            samples=deque(maxlen=part.samples_depth),
        )
        self._sample_epoch_us = 1_700_000_000_000_000 + phase.randrange(10**12)

    # --- settings (persisted in the node state file) --------------------------------------
    def _setting(self) -> dict:
        return self.node.state.get(self.index)

    def _settings_changed(self) -> None:
        """A setting changed here: the physics must see it at the next sub-step."""
        self._settings_read_at = -math.inf

    def power_limits(self) -> PowerLimits:
        cur = float(self._setting().get("power_limit_w", self.part.power_default_w))
        return PowerLimits(self.part.power_min_w, self.part.power_max_w, self.part.power_default_w, cur, cur)

    def set_power_limit(self, watts: float) -> None:
        self._check_permission("set the power limit")
        if not self.part.power_min_w <= watts <= self.part.power_max_w:
            raise UsageError(f"GPU {self.index}: power limit {watts:g} W outside "
                             f"{self.part.power_min_w:g}-{self.part.power_max_w:g} W")
        self.node.state.update(self.index, power_limit_w=float(watts))
        self._settings_changed()

    def supported_sm_clocks(self) -> list[int]:
        p = self.part
        return list(range(p.sm_clock_min_mhz, p.sm_clock_max_mhz + 1, p.sm_clock_step_mhz))

    def sm_clock_lock(self) -> ClockLock | None:
        lock = self._setting().get("sm_clock_lock")
        return ClockLock(int(lock[0]), int(lock[1])) if lock else None

    def lock_sm_clock(self, lo_mhz: int, hi_mhz: int) -> None:
        self._check_permission("lock the SM clock")
        p = self.part
        if not p.sm_clock_min_mhz <= lo_mhz <= hi_mhz <= p.sm_clock_max_mhz:
            raise UsageError(f"GPU {self.index}: SM clock range {lo_mhz}-{hi_mhz} MHz outside "
                             f"{p.sm_clock_min_mhz}-{p.sm_clock_max_mhz} MHz")
        self.node.state.update(self.index, sm_clock_lock=[int(lo_mhz), int(hi_mhz)])
        self._settings_changed()

    def reset_sm_clock(self) -> None:
        self._check_permission("reset the SM clock")
        self.node.state.update(self.index, sm_clock_lock=None)
        self._settings_changed()

    def _may_set(self) -> bool:
        """Simulated privilege: refused per board (override) or for the whole process
        (TOKBENCH_SIM_READONLY=1, as a non-root user would be)."""
        return self.overrides.can_set and os.environ.get("TOKBENCH_SIM_READONLY") != "1"

    def _check_permission(self, what: str) -> None:
        if not self._may_set():
            raise PermissionDenied(what)

    # --- work -------------------------------------------------------------------------------
    def submit(self, load: Load) -> None:
        """Queue one step of work (returns at once, like a CUDA launch)."""
        eff = load.efficiency * (self.overrides.efficiency or 1.0) * self.speed
        jitter = math.exp(self._jitter.gauss(0.0, self.part.step_jitter_sigma)) if self.part.step_jitter_sigma else 1.0
        load = load.scaled(jitter, min(1.0, eff))
        self.queue.append(_Running(load, host_left=load.host_s))

    def synchronize(self) -> None:
        self.node.run_until_idle(self)

    def steady_step(self, loads: list[Load], limit_w: float | None = None,
                    lock_mhz: float | None = None) -> SteadyStep:
        """How long the sequence ``loads`` takes on this board once it runs steadily at a power limit
        (default: the one in force) and a clock lock (default: none), from the physics alone, without
        advancing the clock: the highest clock at which the sequence's mean power (host gaps
        included) stays under the limit, at the temperature that power settles to; below the clock
        floor, the duty cycle that holds it. The cap's V-f dither and its transients are left out, so
        this is a planning figure (what ``--dry-run`` needs), within a few percent of a window."""
        part = self.part
        scale = (self.overrides.efficiency or 1.0) * self.speed
        runs = [load.scaled(1.0, min(1.0, load.efficiency * scale)) for load in loads]
        limit = (limit_w if limit_w is not None else
                 float(self._setting().get("power_limit_w", part.power_default_w))) / (1.0 + self.sensor_gain)
        f_top = float(min(lock_mhz, part.sm_clock_max_mhz) if lock_mhz is not None else part.sm_clock_max_mhz)
        floor = float(part.sm_clock_min_mhz)

        def at(f: float, temp_c: float) -> tuple[float, float]:
            """(seconds, joules) of the sequence at clock ``f``."""
            v = voltage(part, f, self.vf_offset_v)
            waiting = power_w(part, f, v, temp_c, self.leak_mult, IDLE, True)
            seconds = joules = 0.0
            for load in runs:
                t = step_time(part, load, f)
                busy = power_w(part, f, v, temp_c, self.leak_mult, t.activity(part.mem_bandwidth_tbs), True)
                total = max(load.host_s, t.total_s) if load.host_overlaps else load.host_s + t.total_s
                seconds += total
                joules += busy * t.total_s + waiting * (total - t.total_s)
            return seconds, joules

        temp = part.ambient_c + part.thermal_resistance_c_per_w * limit
        f = f_top
        for _ in range(3):  # the temperature follows the power it settles at
            def fits(f_mhz: float, temp_c: float = temp) -> bool:
                seconds, joules = at(f_mhz, temp_c)
                return joules / seconds <= limit

            f = f_top if fits(f_top) else highest_clock(floor, f_top, fits, 20)
            s, j = at(f, temp)
            temp = part.ambient_c + part.thermal_resistance_c_per_w * j / s
        if f <= floor + 1e-6 and j / s > limit:  # idles part of the time to hold the cap
            idle = power_w(part, floor, voltage(part, floor, self.vf_offset_v), temp, self.leak_mult, IDLE, True)
            stretch = max(1.0, (j / s - idle) / max(limit - idle, 1e-9))
            s, j = s * stretch, j + idle * s * (stretch - 1.0)
            temp = part.ambient_c + part.thermal_resistance_c_per_w * j / s
        return SteadyStep(s, j / s, temp, part.thermal_tau_s)

    # --- physics step -----------------------------------------------------------------------
    @property
    def f_cap_mhz(self) -> float:
        """The cap controller's clock ceiling (below the clock floor: floor x duty)."""
        return min(self.f_slow_mhz, self.f_fast_mhz)

    def _clock_and_duty(self, x_mhz: float, f_top: float) -> tuple[float, float]:
        """SM clock and duty cycle for a controller ceiling ``x_mhz`` while working."""
        floor = float(self.part.sm_clock_min_mhz)
        return max(min(f_top, x_mhz), floor), min(1.0, x_mhz / floor)

    def _operating_point(self, t: float) -> None:
        part = self.part
        settings = self._cached_settings
        lock = settings.get("sm_clock_lock")
        limit = float(settings.get("power_limit_w", part.power_default_w))
        busy_now = bool(self.queue)
        p0 = busy_now or (t - self.last_busy_t) < part.p0_hold_s or lock is not None
        f_top = float(part.sm_clock_max_mhz if lock is None else lock[1])
        events = 0
        duty = 1.0
        dither = 0.0
        if not p0:
            f = float(part.idle_sm_clock_mhz)
            events |= ClockEvent.GPU_IDLE
        else:
            f = f_top
            if busy_now:  # the cap's ceiling applies to work (it may pull below a lock's floor)
                f, duty = self._clock_and_duty(self.f_cap_mhz, f_top)
                if self.f_cap_mhz < f_top - 1.0:
                    events |= ClockEvent.SW_POWER_CAP
                    # a binding cap holds its mean by hopping between V-f states either side of the
                    # ceiling; the swing closes at the top (the cap stops binding) and at the floor
                    dither = max(0.0, min(part.cap_dither_mhz, f_top - f, f - part.sm_clock_min_mhz))
            else:  # between bursts the clock floats up
                events |= ClockEvent.GPU_IDLE
        if self.temp_c > part.slowdown_c:
            f = min(f, f_top * max(0.3, 1.0 - 0.05 * (self.temp_c - part.slowdown_c)))
            events |= ClockEvent.SW_THERMAL_SLOWDOWN
        act = IDLE
        working = bool(self.queue) and self.queue[0].gpu_active()
        v = voltage(part, f, self.vf_offset_v)
        if working and dither > 0:
            p, act = self._dithered(f, dither)
        else:
            if self.queue:
                run = self.queue[0]
                run.timing = step_time(part, run.load, f)
                if working:
                    act = run.timing.activity(part.mem_bandwidth_tbs).times(duty)
            p = power_w(part, f, v, self.temp_c, self.leak_mult, act, p0)
        ceiling_w = part.power_max_w * part.cap_peak_ratio / (1.0 + self.sensor_gain)
        if p0 and act.busy > 0 and p > ceiling_w:
            f, v, act = self._peak_limited(f, duty, ceiling_w)
            p = power_w(part, f, v, self.temp_c, self.leak_mult, act, p0)
            events |= ClockEvent.SW_POWER_CAP
            # anti-windup: the averaging loops take over from the clock the limiter holds
            self.f_fast_mhz = min(self.f_fast_mhz, f + part.sm_clock_step_mhz)
            self.f_slow_mhz = min(self.f_slow_mhz, f + part.sm_clock_step_mhz)
        self.f_now_mhz = f
        self.duty = duty
        self.act = act
        self.events = int(events)
        self.p_now_w = p
        self._limit_w = limit

    def _dithered(self, f_mhz: float, dither_mhz: float) -> tuple[float, Activity]:
        """Power and activity of the running load while the cap controller hops between the V-f
        states ``f_mhz`` +- ``dither_mhz``, half the time in each, faster than the 20 ms power
        samples: the work advances at the mean of the two rates (the load's timing becomes the
        mix), power is the mean of the two powers. Under a convex power curve and a throughput that
        saturates with the clock, the mix costs more energy per token than a steady clock at the
        same mean, which is why a locked clock beats a cap at equal throughput."""
        part, run = self.part, self.queue[0]
        states = []
        for f in (f_mhz - dither_mhz, f_mhz + dither_mhz):
            t = step_time(part, run.load, f)
            a = t.activity(part.mem_bandwidth_tbs)
            v = voltage(part, f, self.vf_offset_v)
            states.append((t, a, power_w(part, f, v, self.temp_c, self.leak_mult, a, True)))
        (t_lo, a_lo, p_lo), (t_hi, a_hi, p_hi) = states
        total = 2.0 / (1.0 / t_lo.total_s + 1.0 / t_hi.total_s)  # half the time at each rate
        run.timing = StepTime(
            compute_s=0.5 * total * (t_lo.compute_s / t_lo.total_s + t_hi.compute_s / t_hi.total_s),
            roofline_s=0.5 * total * (t_lo.roofline_s / t_lo.total_s + t_hi.roofline_s / t_hi.total_s),
            overhead_s=0.5 * total * (t_lo.overhead_s / t_lo.total_s + t_hi.overhead_s / t_hi.total_s),
            bytes_moved=t_lo.bytes_moved,
        )
        act = Activity(0.5 * (a_lo.busy + a_hi.busy), 0.5 * (a_lo.compute_util + a_hi.compute_util),
                       0.5 * (a_lo.mem_util + a_hi.mem_util))
        return 0.5 * (p_lo + p_hi), act

    def _peak_limited(self, f_mhz: float, duty: float, ceiling_w: float) -> tuple[float, float, Activity]:
        """The highest clock (>= the floor) at which the running load draws at most ``ceiling_w``:
        the board's fast limiter, which holds instantaneous power under a multiple of its maximum
        limit within a sample period whatever the averaging loops do (the real trace peaks at
        ~1.3x the 700 W maximum)."""
        part, run = self.part, self.queue[0]

        def at(f: float) -> tuple[float, Activity, float]:
            run.timing = step_time(part, run.load, f)
            act = run.timing.activity(part.mem_bandwidth_tbs).times(duty)
            v = voltage(part, f, self.vf_offset_v)
            return v, act, power_w(part, f, v, self.temp_c, self.leak_mult, act, True)

        lo = highest_clock(float(part.sm_clock_min_mhz), f_mhz, lambda f: at(f)[2] <= ceiling_w, 12)
        v, act, _ = at(lo)
        return lo, v, act

    def _work_seconds(self, run: _Running) -> float:
        """Seconds the rest of a running load's GPU work takes at the current operating point."""
        assert run.timing is not None
        return run.work_left * run.timing.total_s / self.duty

    def time_to_next_event(self) -> float:
        """Seconds until this board's next discontinuity: a load phase ending or a sensor refresh."""
        if self.node.now() - self._settings_read_at >= SETTINGS_POLL_S:
            self._cached_settings = self._setting()
            self._settings_read_at = self.node.now()
        self._operating_point(self.node.now())
        t = self.node.now()
        s = self.sensors
        dt = min(s.next_field_t, s.next_energy_t, s.next_sample_t) - t
        if self.queue:
            run = self.queue[0]
            if run.host_left > 0:
                dt = min(dt, run.host_left)
            if run.gpu_active():
                dt = min(dt, self._work_seconds(run))
        return max(dt, 1e-9)

    def integrate(self, t: float, dt: float) -> None:
        """Advance this board by ``dt`` at the operating point computed for ``t``."""
        part = self.part
        p = self.p_now_w
        self.true_energy_j += p * dt
        # work progress
        if self.queue:
            run = self.queue[0]
            if run.gpu_active():
                assert run.timing is not None
                total = run.timing.total_s / self.duty
                run.work_left -= dt / total if total > 0 else 1.0
            if run.host_left > 0:
                run.host_left = max(0.0, run.host_left - dt)
            if run.host_left <= 1e-12 and run.work_left <= 1e-9:
                self.queue.popleft()
            self.last_busy_t = t + dt
        # thermal
        target = part.ambient_c + part.thermal_resistance_c_per_w * p
        self.temp_c += (target - self.temp_c) * (1.0 - math.exp(-dt / part.thermal_tau_s))
        # energy history for sensor means (keep a little over the longest window)
        self._hist_t.append(t + dt)
        self._hist_e.append(self.true_energy_j)
        horizon = t + dt - max(part.average_window_s, part.samples_period_s, part.cap_filter_s) - 0.2
        while len(self._hist_t) > 2 and self._hist_t[1] < horizon:
            self._hist_t.popleft()
            self._hist_e.popleft()
        self._control(t + dt, dt)

    def _control(self, t_end: float, dt: float) -> None:
        """Power-cap controller: integral action on the board's own power reading (gain error
        included: a board that over-reads regulates to less true power), filtered twice.

        The slow loop holds the mean over the last ``cap_filter_s`` (~1 s) at the limit; the fast loop
        (``cap_fast_filter_s``) lets bursts sit at most ``cap_burst_margin`` above it, as on the
        real square-wave trace. Both hold while no work is pending, so the gaps between bursts do
        not wind the ceiling back up.
        """
        part = self.part
        gain = 1.0 + self.sensor_gain
        a_slow = dt / part.cap_filter_s  # share of the slow window one sub-step replaces
        a_fast = -math.expm1(-dt / part.cap_fast_filter_s)  # exact for power held over the sub-step
        self.p_slow_w = gain * self._mean_power(t_end, part.cap_filter_s)
        self.p_fast_w += a_fast * (gain * self.p_now_w - self.p_fast_w)
        if self.queue:  # work pending (running, or its host part)
            # integral action in power terms: a ceiling step that closes the error over the loop's
            # settling time whatever the load's slope, stepped implicitly (the step's own effect on
            # the filtered power is accounted for), so it stays stable at the longest sub-step
            slope = max(gain * self._power_slope_w_per_mhz(), SLOPE_FLOOR_W_PER_MHZ)
            error, recent = self._limit_w - self.p_slow_w, self._limit_w - self.p_fast_w
            # act on what the window's mean and the recent power agree on, by the smaller margin:
            # an excess (or a gap) already gone is history
            step = math.copysign(min(abs(error), abs(recent)), error) if (error > 0) == (recent > 0) else 0.0
            r = dt / part.cap_settle_s
            self.f_slow_mhz += r * step / slope / (1.0 + r * a_slow)
            r = dt / part.cap_fast_settle_s
            error = self._limit_w * (1.0 + part.cap_burst_margin) - self.p_fast_w
            self.f_fast_mhz += r * error / slope / (1.0 + r * a_fast)
        # anti-windup: neither ceiling sits far above the one in force, so whichever loop must act
        # next acts from there at once
        lo, hi, step = float(part.sm_clock_min_mhz) * MIN_DUTY, float(part.sm_clock_max_mhz), part.sm_clock_step_mhz
        self.f_fast_mhz = min(max(self.f_fast_mhz, lo), hi, self.f_slow_mhz + step)
        self.f_slow_mhz = min(max(self.f_slow_mhz, lo), hi, self.f_fast_mhz + step)

    def _power_slope_w_per_mhz(self) -> float:
        """d(power)/d(controller ceiling) at the current operating point (W per MHz, >= 0)."""
        part = self.part
        x = self.f_cap_mhz
        step = float(part.sm_clock_step_mhz)
        lock = self._cached_settings.get("sm_clock_lock")
        f_top = float(part.sm_clock_max_mhz if lock is None else lock[1])
        if x >= f_top:
            x = f_top
        # the running load's activity, also while its host part runs: the slope the work will see
        run = self.queue[0] if self.queue else None
        work = run.timing.activity(part.mem_bandwidth_tbs) if run is not None and run.timing else IDLE

        def p_at(ceiling: float) -> float:
            f, duty = self._clock_and_duty(ceiling, f_top)
            v = voltage(part, f, self.vf_offset_v)
            return power_w(part, f, v, self.temp_c, self.leak_mult, work.times(duty), True)

        lo = max(x - step, float(part.sm_clock_min_mhz) * MIN_DUTY)
        if x - lo < 1e-6:
            return 0.0
        return max(0.0, (p_at(x) - p_at(lo)) / (x - lo))

    def _energy_at(self, t: float) -> float:
        ts, es = self._hist_t, self._hist_e
        if t <= ts[0]:
            return es[0]
        i = bisect.bisect_left(ts, t)
        if i >= len(ts):
            return es[-1]
        t0, t1 = ts[i - 1], ts[i]
        return es[i - 1] + (es[i] - es[i - 1]) * (t - t0) / (t1 - t0 if t1 > t0 else 1.0)

    def _mean_power(self, t: float, window_s: float) -> float:
        start = max(t - window_s, self._hist_t[0])
        if t - start <= 0:
            return self.p_now_w
        return (self._energy_at(t) - self._energy_at(start)) / (t - start)

    def after_step(self, t: float) -> None:
        """Refresh whichever sensors are due at ``t``."""
        part, s, gain = self.part, self.sensors, 1.0 + self.sensor_gain
        if t >= s.next_field_t - 1e-12:
            s.instant_w = gain * self._mean_power(t, part.instant_window_s)
            s.average_w = gain * self._mean_power(t, part.average_window_s)
            s.next_field_t += part.sensor_update_s
        if t >= s.next_energy_t - 1e-12:
            s.energy_mj = self._counter_offset_mj + int(gain * self.true_energy_j * 1000.0)
            s.next_energy_t += part.energy_update_s
        if t >= s.next_sample_t - 1e-12:
            ts_us = self._sample_epoch_us + int(round((t - SIM_EPOCH_S) * 1e6))
            s.samples.append(PowerSample(ts_us, gain * self._mean_power(t, part.samples_period_s)))
            s.next_sample_t += part.samples_period_s

    # --- telemetry (Device protocol) ----------------------------------------------------------
    def read(self) -> Reading:
        self.node.sleep(self.part.cheap_read_cost_s * 8)
        s = self.sensors
        busy = self.act.busy > 0
        return Reading(
            t_s=self.node.now(),
            power_instant_w=s.instant_w if self.part.has_instant_power else None,
            power_average_w=s.average_w,
            memory_power_w=(self.part.memory_power_idle_w + self.part.hbm_power_w * self.act.mem_util)
            if self.part.has_memory_power else None,
            sm_clock_mhz=self.f_now_mhz,
            mem_clock_mhz=float(self.part.mem_clock_mhz),
            temperature_c=round(self.temp_c),
            utilization_pct=100.0 if busy else 0.0,
            memory_used_mb=float(self.part.memory_total_mb // 2 if self.queue else 512),
            clock_events=self.events,
            enforced_limit_w=self._setting().get("power_limit_w", self.part.power_default_w),
        )

    def read_energy_mj(self) -> int | None:
        if not self.part.has_energy_counter:
            return None
        self.node.sleep(self.part.energy_read_cost_s)
        return self.sensors.energy_mj

    def power_samples(self, since_us: int) -> list[PowerSample] | None:
        if not self.part.has_power_samples:
            return None
        return [s for s in self.sensors.samples if s.ts_us > since_us]

    def state_check(self) -> StateCheck:
        return StateCheck(
            foreign_processes=self.overrides.foreign_pids,
            mig_enabled=False,
            clocks_locked=self.sm_clock_lock(),
            persistence_mode=True,
        )

    def close(self) -> None:
        """Nothing to release: settings stay in the node state, as a driver keeps them."""

    # --- test hooks ------------------------------------------------------------------------
    def reset_energy_counter(self) -> None:
        """Simulate a driver reload: the counter restarts from zero."""
        self._counter_offset_mj = -int((1.0 + self.sensor_gain) * self.true_energy_j * 1000.0)
        self.sensors.energy_mj = 0

    @property
    def true_energy_mj(self) -> float:
        return self.true_energy_j * 1000.0
