"""Measurement windows: exact energy over the workload's steps, with validity flags.

Energy comes from the cumulative energy counter. The counter only changes every ~100 ms, so a
naive read at an edge is stale by up to one update. A window therefore waits (at most one update
period) for the counter to tick at each edge and knows the counter's value at that tick exactly;
the short stretch between the tick and the edge (the start of the first step, the sync after the
last) is filled in from the 50 Hz power history, whose error on a ~0.1 s stretch is negligible.
The window's seconds are the workload's own (sync to sync), not stretched to counter ticks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.devices.base import Device, Reading, StateCheck
from harness.errors import TokbenchError
from harness.knobs import POWER_LIMIT, SM_CLOCK
from harness.knobs import knob as knob_of
from harness.telemetry import energy as en
from harness.telemetry.flags import FLAG_NAMES, Tolerances
from harness.telemetry.rapl import Rapl
from harness.telemetry.sampler import READING_COLUMNS, Sampler

#: columns of a window's samples table (samples/point-NNNN.parquet)
SAMPLE_COLUMNS: tuple[str, ...] = ("source", "gpu_index", *READING_COLUMNS, "power_w", "ts_us", "energy_mj",
                                   "true_energy_j")
#: sample sources: "poll" (sampler), "edge" (reading at a window edge), "history" (driver power
#: samples, ``power_w``), "counter" (energy counter at a tick or read, ``energy_mj``), "truth"
#: (simulator ground truth at the window edges, ``true_energy_j``)
SAMPLE_SOURCES = ("poll", "edge", "history", "counter", "truth")

_rapl: Rapl | None = None


def _host_rapl() -> Rapl:
    global _rapl
    if _rapl is None:
        _rapl = Rapl()
    return _rapl


@dataclass(frozen=True, eq=False)
class WindowResult:
    """One GPU over one window. ``joules`` is the counter's where the part has one
    (``energy_source == "counter"``), else integrated sampled power (``"integrated"``)."""

    gpu_index: int
    t_start: float
    t_end: float
    seconds: float
    joules: float
    joules_integrated: float | None
    true_joules: float | None
    energy_source: str
    power_mean_w: float
    power_p99_w: float | None
    power_max_1s_w: float | None
    sm_clock_mean_mhz: float | None
    mem_clock_mean_mhz: float | None
    temp_start_c: float | None
    temp_end_c: float | None
    clock_event_shares: dict[str, float]
    flags: tuple[str, ...]
    host_joules: float | None
    samples: pd.DataFrame = field(repr=False)
    #: the enforced setting read back (W for power limits and observe, MHz for clock locks)
    enforced: float | None = None
    #: integrated energy over the window per power source ("history", "instant", "average")
    integrals_j: dict[str, float] = field(default_factory=dict)
    #: which source ``joules_integrated`` uses
    integral_source: str | None = None
    #: details behind the flags, one line each
    notes: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.flags

    @property
    def error_vs_true(self) -> float | None:
        """Relative error of ``joules`` against the simulator's ground truth."""
        if not self.true_joules:
            return None
        return self.joules / self.true_joules - 1.0

    def point_fields(self) -> dict:
        """The ``Point`` fields this window determines (tokens and settings come from the sweep)."""
        return {
            "gpu_index": self.gpu_index, "window_start_s": self.t_start, "window_end_s": self.t_end,
            "seconds": self.seconds, "joules": self.joules, "joules_integrated": self.joules_integrated,
            "true_joules": self.true_joules, "energy_source": self.energy_source,
            "power_mean_w": self.power_mean_w, "power_p99_w": self.power_p99_w,
            "power_max_1s_w": self.power_max_1s_w, "sm_clock_mean_mhz": self.sm_clock_mean_mhz,
            "mem_clock_mean_mhz": self.mem_clock_mean_mhz, "temp_start_c": self.temp_start_c,
            "temp_end_c": self.temp_end_c, "host_joules": self.host_joules,
            "clock_event_shares": en.format_shares(self.clock_event_shares), "flags": ";".join(self.flags),
        }


@dataclass
class _Edge:
    """The energy counter at one window edge."""

    energy_mj: int | None  # None: no counter (or the read failed)
    t_tick: float | None  # when the counter last changed (estimated); None when unaligned
    t_read: float
    read_failed: bool = False


def read_edge(device: Device, align: bool, max_wait_s: float) -> _Edge:
    """Read the counter; with ``align``, keep reading (each read takes ~4 ms) until it ticks, at
    most ``max_wait_s``, and take the tick time as the middle of the read that saw it change."""
    clock = device.clock
    has_counter = device.info.capabilities.energy_counter
    try:
        e_prev = device.read_energy_mj()
    except TokbenchError:
        e_prev = None
    t_prev = clock.now()
    if e_prev is None:
        return _Edge(None, None, t_prev, read_failed=has_counter)
    if not align:
        return _Edge(e_prev, None, t_prev)
    deadline = t_prev + max_wait_s
    while clock.now() < deadline:
        try:
            e = device.read_energy_mj()
        except TokbenchError:
            e = None
        t = clock.now()
        if e is None:
            return _Edge(e_prev, None, t, read_failed=True)
        if e != e_prev:
            return _Edge(e, (t_prev + t) / 2.0, t)
        t_prev = t
    return _Edge(e_prev, None, t_prev)


def _true_energy(device: Device) -> float | None:
    value = getattr(device, "true_energy_j", None)
    return float(value) if isinstance(value, int | float) else None


def _safe_read(device: Device) -> Reading | None:
    try:
        return device.read()
    except TokbenchError:
        return None


def _safe_state(device: Device) -> StateCheck | None:
    try:
        return device.state_check()
    except TokbenchError:
        return None


class Window:
    """A measured interval around a workload's steps (a context manager).

    ``__enter__`` synchronises the devices, aligns the start edge to an energy-counter tick and
    reads the counters (and host RAPL); ``__exit__`` synchronises, aligns the end edge, reads the
    counters and computes ``results`` (one ``WindowResult`` per GPU index). ``align=False`` reads
    the counter as it is (the naive way, off by up to one update per edge): for comparisons only.
    """

    def __init__(self, devices: Sequence[Device], sampler: Sampler | None, sync: Callable[[], None],
                 requested: dict[int, float] | None = None, knob: str = "power_limit_w",
                 min_seconds: float | None = None, tolerances: Tolerances | None = None, align: bool = True,
                 own_pids: frozenset[int] = frozenset()) -> None:
        self.devices = list(devices)
        self.sampler = sampler
        self.sync = sync
        self.requested = requested or {}
        self.knob = knob_of(knob).field
        self.tol = tolerances or Tolerances()
        self.min_seconds = self.tol.min_window_s if min_seconds is None else min_seconds
        self.align = align
        #: GPU processes that are this run's own although the driver reports another pid (in a
        #: container NVML reports host pids): never a foreign process
        self.own_pids = own_pids
        self.results: dict[int, WindowResult] = {}
        self.clock = self.devices[0].clock
        self._start: dict[int, _Edge] = {}
        self._start_reading: dict[int, Reading | None] = {}
        self._start_state: dict[int, StateCheck | None] = {}
        self._start_true: dict[int, float | None] = {}
        self._host_start: list[int] | None = None
        self.t_start = math.nan
        self.t_end = math.nan

    def __enter__(self) -> Window:
        self.sync()
        for d in self.devices:
            self._start_state[d.info.index] = _safe_state(d)
        for d in self.devices:
            self._start[d.info.index] = read_edge(d, self.align, self.tol.counter_period_s)
        for d in self.devices:
            self._start_reading[d.info.index] = _safe_read(d)
        self._host_start = self._read_host()
        self.t_start = self.clock.now()
        for d in self.devices:
            self._start_true[d.info.index] = _true_energy(d)
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is not None:
            return  # the workload failed: no result, the exception goes on
        self.sync()
        self.t_end = self.clock.now()
        end_true = {d.info.index: _true_energy(d) for d in self.devices}
        end_reading = {d.info.index: _safe_read(d) for d in self.devices}
        host_end = self._read_host()
        end_edges = {d.info.index: read_edge(d, self.align, self.tol.counter_period_s) for d in self.devices}
        end_state = {d.info.index: _safe_state(d) for d in self.devices}
        if self.sampler is not None:
            ticks = [e.t_tick for e in end_edges.values() if e.t_tick is not None]
            self.sampler.drain_until(max(ticks, default=self.t_end) + 0.021)
        host_j = _host_rapl().delta_j(self._host_start, host_end)
        for d in self.devices:
            i = d.info.index
            true_j = None
            if self._start_true[i] is not None and end_true[i] is not None:
                true_j = end_true[i] - self._start_true[i]
            self.results[i] = self._compute(d, end_edges[i], end_reading[i], end_state[i], true_j, host_j)

    def _read_host(self) -> list[int] | None:
        if getattr(self.clock, "simulated", False):
            return None  # simulated time: host joules would be meaningless
        return _host_rapl().read_uj()

    # --- the arithmetic ---------------------------------------------------------------------
    def _compute(self, d: Device, end: _Edge, end_reading: Reading | None, end_state: StateCheck | None,
                 true_j: float | None, host_j: float | None) -> WindowResult:
        i = d.info.index
        t0, t1 = self.t_start, self.t_end
        start = self._start[i]
        tol = self.tol
        flags: list[str] = []
        notes: list[str] = []
        seconds = t1 - t0
        lo = min(x for x in (start.t_tick, start.t_read, t0) if x is not None) - 1.0
        hi = max(x for x in (end.t_tick, end.t_read, t1) if x is not None)

        polls = self.sampler.readings(i, lo, hi) if self.sampler is not None else _empty_readings()
        # history one sample beyond the end tick: the sample covering the tick lies after it
        hist = self.sampler.power_history(i, lo, hi + 0.1) if self.sampler is not None else _empty_history()
        edges = _readings_frame([r for r in (self._start_reading[i], end_reading) if r is not None])
        both = pd.concat([polls, edges]).sort_values("t_s", kind="stable") if len(edges) else polls
        in_win = both[(both["t_s"] >= t0) & (both["t_s"] <= t1)]

        # power integrals per source, over the window and over the stretches tick -> edge
        sources: dict[str, Callable[[float, float], float | None]] = {}
        if len(hist):
            sources["history"] = lambda a, b: en.integrate_history(hist["t_s"], hist["power_w"], a, b)
        if both["power_instant_w"].notna().any():
            sources["instant"] = lambda a, b: en.integrate_held(both["t_s"], both["power_instant_w"], a, b)
        if both["power_average_w"].notna().any():
            sources["average"] = lambda a, b: en.integrate_held(both["t_s"], both["power_average_w"], a, b)
        integrals = {k: v for k, f in sources.items() if (v := f(t0, t1)) is not None}
        primary = next((s for s in ("history", "instant", "average") if s in integrals), None)
        chosen = primary if tol.integral_source == "best" else tol.integral_source
        integral = integrals.get(chosen) if chosen else None
        if primary == "history":
            # the device is synchronised (idle) between a tick and its edge: use only history
            # samples from that side of the edge, not the one straddling the load's start or end
            def correct(a: float, b: float) -> float | None:
                return _edge_history_integral(hist, a, b, t0, t1)
        else:
            correct = sources.get(primary) if primary else None

        # counter energy, corrected from the tick to the edge
        joules: float | None = None
        source = "integrated"
        if start.energy_mj is not None and end.energy_mj is not None:
            raw = en.counter_delta_j(start.energy_mj, end.energy_mj)
            if raw is None:
                flags.append("counter_reset")
                notes.append(f"energy counter went from {start.energy_mj} to {end.energy_mj} mJ")
            elif raw == 0 and integral:
                flags.append("counter_stuck")
                notes.append(f"energy counter did not move over {seconds:.2f} s while the GPU drew power: energy is "
                             "from integrated power")
            else:
                head = (correct(start.t_tick, t0) or 0.0) if (correct and start.t_tick is not None) else 0.0
                tail = (correct(t1, end.t_tick) or 0.0) if (correct and end.t_tick is not None) else 0.0
                joules, source = raw - head - tail, "counter"
                if primary != "history":
                    self._edge_bound(both, [(start.t_tick, t0), (t1, end.t_tick)], joules, flags, notes)
        if self.align and start.energy_mj is not None and end.energy_mj is not None and (
                start.t_tick is None or end.t_tick is None):
            flags.append("edge_unaligned")
        if start.read_failed or end.read_failed:
            flags.append("missing_field")
            notes.append("energy counter read failed at an edge")
        if joules is None:
            joules = integral if integral is not None else next(iter(integrals.values()), math.nan)
        if source == "counter" and integral is not None and joules > 0:
            rel = integral / joules - 1.0
            if abs(rel) > tol.integral_rel:
                flags.append("integral_mismatch")
                notes.append(f"integrated {chosen} power {rel:+.1%} against the counter")

        # power statistics from the 50 Hz history (polled instant power where there is none)
        h_in = hist[(hist["t_s"] >= t0) & (hist["t_s"] <= t1)]
        if len(h_in):
            p99 = en.percentile_power(h_in["power_w"])
            max_1s = en.max_rolling_mean(h_in["t_s"], h_in["power_w"])
        else:
            col = "power_instant_w" if in_win["power_instant_w"].notna().any() else "power_average_w"
            p99 = en.percentile_power(in_win[col])
            max_1s = en.max_rolling_mean(in_win["t_s"], in_win[col].fillna(0.0)) if len(in_win) > 1 else None

        t_arr = in_win["t_s"].to_numpy()
        shares = en.clock_event_shares(t_arr, in_win["clock_events"].to_numpy(), t0, t1)
        sm_mean = en.time_weighted_mean(t_arr, in_win["sm_clock_mhz"].to_numpy(), t0, t1)
        mem_mean = en.time_weighted_mean(t_arr, in_win["mem_clock_mhz"].to_numpy(), t0, t1)
        r0, r1 = self._start_reading[i], end_reading
        temp0 = r0.temperature_c if r0 is not None else None
        temp1 = r1.temperature_c if r1 is not None else None

        # validity
        if seconds < self.min_seconds:
            flags.append("too_short")
        errors = self.sampler.errors_between(i, t0, t1) if self.sampler is not None else []
        if errors:
            flags.append("sampler_error")
            notes.append(f"{len(errors)} sampler read(s) failed in the window, first: {errors[0]}")
        poll_t = polls["t_s"].to_numpy()
        if self.sampler is not None:
            gap = en.max_gap(poll_t, t0, t1)
            if gap > tol.gap_periods * self.sampler.period_s:
                flags.append("sample_gap")
                notes.append(f"no reading for {gap:.3f} s (sampler period {self.sampler.period_s:.3f} s)")
        if len(hist) > 2 and seconds > 0:
            spacing = float(np.median(np.diff(hist["t_s"].to_numpy())))
            hgap = en.max_gap(hist["t_s"].to_numpy(), t0, t1)
            if hgap > tol.history_gap_factor * max(spacing, 1e-3):
                flags.append("history_gap")
                notes.append(f"power history has a {hgap:.3f} s gap")
        missing = self._missing_fields(d, in_win)
        if missing:
            flags.append("missing_field")
            notes.append("empty readings: " + ", ".join(missing))
        if temp0 is not None and temp1 is not None and abs(temp1 - temp0) > tol.temp_drift_c:
            flags.append("temperature_drift")
            notes.append(f"temperature {temp0:g} -> {temp1:g} C")
        if shares.get("sw_thermal", 0) + shares.get("hw_thermal", 0) > tol.slowdown_share:
            flags.append("thermal_slowdown")
        if shares.get("hw_slowdown", 0) + shares.get("power_brake", 0) > tol.slowdown_share:
            flags.append("hw_slowdown")
        enforced = self._enforced(d, in_win, flags, notes)
        self._over_cap(d, enforced, float(joules) / seconds if seconds > 0 else math.nan, flags, notes)
        self._state_flags([self._start_state[i], end_state], flags, notes)

        samples = _samples_frame(i, polls, edges, hist, start, end, t0, t1, self._start_true[i], true_j)
        return WindowResult(
            gpu_index=i, t_start=t0, t_end=t1, seconds=seconds, joules=float(joules),
            joules_integrated=integral, true_joules=true_j, energy_source=source,
            power_mean_w=float(joules) / seconds if seconds > 0 else math.nan,
            power_p99_w=p99, power_max_1s_w=max_1s, sm_clock_mean_mhz=sm_mean, mem_clock_mean_mhz=mem_mean,
            temp_start_c=temp0, temp_end_c=temp1, clock_event_shares=shares,
            flags=tuple(dict.fromkeys(f for f in flags if f in FLAG_NAMES)), host_joules=host_j, samples=samples,
            enforced=enforced, integrals_j=integrals, integral_source=chosen, notes=tuple(notes),
        )

    def _edge_bound(self, readings: pd.DataFrame, stretches: list[tuple[float | None, float]], joules: float,
                    flags: list[str], notes: list[str]) -> None:
        """Without the driver's power history the tick-to-edge stretches are filled from polled power,
        which lags the load by up to ``power_lag_s``, so inside a stretch the true power can be anything
        the work drew: bound the error by each stretch times the spread of the power polled over the
        window, and flag the point when the bound exceeds ``edge_rel`` (steady work has a small spread
        and passes; work that starts or stops at the edges does not)."""
        power = readings["power_instant_w"].fillna(readings["power_average_w"]).dropna()
        spread = float(power.max() - power.min()) if len(power) > 1 else 0.0
        bound = sum(abs(b - a) * spread for a, b in stretches if a is not None)
        if joules > 0 and bound / joules > self.tol.edge_rel:
            flags.append("edge_uncertain")
            notes.append(f"no power history: the window's edges are uncertain by up to {bound:.1f} J "
                         f"({100 * bound / joules:.2f}%)")

    @staticmethod
    def _missing_fields(d: Device, in_win: pd.DataFrame) -> list[str]:
        """Power fields the part declares must be in every reading; the other fields must not
        drop out of some readings while present in others (a failing query, not an absent one)."""
        caps = d.info.capabilities
        declared = [c for c, has in (("power_instant_w", caps.instant_power), ("power_average_w", caps.average_power),
                                     ("memory_power_w", caps.memory_power)) if has]
        others = ["sm_clock_mhz", "mem_clock_mhz", "temperature_c", "clock_events"]
        missing = [c for c in declared if in_win[c].isna().any()]
        missing += [c for c in others if in_win[c].isna().any() and in_win[c].notna().any()]
        return missing

    def _enforced(self, d: Device, in_win: pd.DataFrame, flags: list[str], notes: list[str]) -> float | None:
        """Read back the setting the window ran at and compare it with the requested one."""
        i = d.info.index
        want = self.requested.get(i)
        if self.knob == SM_CLOCK.field:
            try:
                lock = d.sm_clock_lock()
            except TokbenchError:
                lock = None
            if lock is not None:
                got: float | None = float(lock.hi_mhz)
            elif d.info.backend == "nvml" and in_win["sm_clock_mhz"].notna().any():
                # NVML cannot read a lock back: the clocks actually seen must not exceed it
                seen = float(in_win["sm_clock_mhz"].max())
                got = seen if want is None or seen > want + self.tol.setting_mhz else float(want)
            else:
                got = None
            if want is not None and (got is None or abs(got - want) > self.tol.setting_mhz):
                flags.append("setting_mismatch")
                notes.append(f"SM clock requested {want:g} MHz, enforced {got if got is not None else 'none'}")
            return got
        try:
            enforced_w: float | None = d.power_limits().enforced_w
        except TokbenchError:
            enforced_w = None
        if self.knob == POWER_LIMIT.field and want is not None and (
                enforced_w is None or abs(enforced_w - want) > self.tol.setting_w):
            flags.append("setting_mismatch")
            notes.append(f"power limit requested {want:g} W, enforced {enforced_w}")
        return enforced_w

    def _over_cap(self, d: Device, enforced: float | None, mean_w: float, flags: list[str], notes: list[str]) -> None:
        """A window whose mean power exceeds the enforced power limit: the point is not at its cap."""
        limit_w = enforced if self.knob != "sm_clock_mhz" else None
        if self.knob == "sm_clock_mhz":
            try:
                limit_w = d.power_limits().enforced_w
            except TokbenchError:
                limit_w = None
        if limit_w and mean_w > limit_w * (1.0 + self.tol.over_cap_rel):
            flags.append("over_cap")
            notes.append(f"mean power {mean_w:.0f} W above the {limit_w:g} W limit")

    def _state_flags(self, states: list[StateCheck | None], flags: list[str], notes: list[str]) -> None:
        pids: set[int] = set()
        for s in states:
            if s is None:
                continue
            pids.update(set(s.foreign_processes) - self.own_pids)
            if s.mig_enabled:
                flags.append("mig_enabled")
            locked = s.clocks_locked is not None or any("clock" in n.lower() for n in s.notes)
            if locked and self.knob != SM_CLOCK.field:
                flags.append("clocks_locked")
        if pids:
            flags.append("foreign_process")
            notes.append("other processes on the GPU: pid " + ", ".join(str(p) for p in sorted(pids)))


def _edge_history_integral(hist: pd.DataFrame, a: float, b: float, t0: float, t1: float) -> float | None:
    """Energy over a tick-to-edge stretch [a, b] outside the window [t0, t1] from history samples
    whose interval lies wholly outside the window (falls back to all samples when none does)."""
    t = hist["t_s"].to_numpy()
    starts, ends = en.history_intervals(t)
    outside = (ends <= t0 + 1e-9) if b <= t0 + 1e-9 else (starts >= t1 - 1e-9)
    if outside.any():
        return en.integrate_history(t[outside], hist["power_w"].to_numpy()[outside], a, b)
    return en.integrate_history(t, hist["power_w"].to_numpy(), a, b)


def _empty_readings() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in READING_COLUMNS})


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame({"t_s": pd.Series(dtype="float64"), "ts_us": pd.Series(dtype="int64"),
                         "power_w": pd.Series(dtype="float64")})


def _readings_frame(readings: list[Reading]) -> pd.DataFrame:
    rows = [tuple(r.__dict__.values()) for r in readings]
    return pd.DataFrame.from_records(rows, columns=list(READING_COLUMNS)).astype(
        {c: "float64" for c in READING_COLUMNS})


def _samples_frame(i: int, polls: pd.DataFrame, edges: pd.DataFrame, hist: pd.DataFrame, start: _Edge,
                   end: _Edge, t0: float, t1: float, true0: float | None, true_j: float | None) -> pd.DataFrame:
    """Everything the window used, in one long table (one ``source`` per kind of sample)."""
    parts = [polls.assign(source="poll"), edges.assign(source="edge"), hist.assign(source="history")]
    counter = [(e.t_tick if e.t_tick is not None else e.t_read, e.energy_mj) for e in (start, end)
               if e.energy_mj is not None]
    if counter:
        parts.append(pd.DataFrame({"t_s": [c[0] for c in counter], "energy_mj": [float(c[1]) for c in counter],
                                   "source": "counter"}))
    if true0 is not None and true_j is not None:
        parts.append(pd.DataFrame({"t_s": [t0, t1], "true_energy_j": [true0, true0 + true_j], "source": "truth"}))
    df = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else \
        pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    df["gpu_index"] = i
    for c in SAMPLE_COLUMNS:
        if c not in df:
            df[c] = np.nan
    out = df[list(SAMPLE_COLUMNS)].copy()
    out["source"] = out["source"].astype(str)
    out["gpu_index"] = out["gpu_index"].astype("int64")
    out["ts_us"] = out["ts_us"].astype("Int64")
    for c in SAMPLE_COLUMNS:
        if c not in ("source", "gpu_index", "ts_us"):
            out[c] = out[c].astype("float64")
    return out.sort_values(["t_s"], kind="stable").reset_index(drop=True)


def measure_idle(devices: Sequence[Device], sampler: Sampler | None, seconds: float = 3.0) -> dict[int, float]:
    """Idle watts of each GPU: the counter over ``seconds`` of doing nothing."""
    with Window(devices, sampler, sync=lambda: None, knob="observe", min_seconds=0.0) as w:
        devices[0].clock.sleep(seconds)
    return {i: r.power_mean_w for i, r in w.results.items()}
