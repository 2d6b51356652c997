"""The sampler: cheap readings of every device at a steady rate, plus the driver's power history.

On real GPUs a background thread polls; on the simulated backend the simulation's own clock calls
the sampler (``call_every``), so a run stays deterministic and can sample at hundreds of Hz. The
energy counter is never polled here (one read costs ~4 ms on an H100): windows read it at edges.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import fields

import pandas as pd

from harness.devices.base import Device, Reading
from harness.errors import TokbenchError

READING_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Reading))
HISTORY_COLUMNS: tuple[str, ...] = ("t_s", "ts_us", "power_w")


class _History:
    """Drained power-history samples of one device, with the driver-to-device clock offset.

    Driver timestamps (us, host wall time on NVML) are mapped onto the device clock with an
    offset estimated as the smallest observed (now - newest sample time): the newest sample is
    never in the future, so the smallest lag is the best bound. On a real clock the minimum is
    taken over the last ``recent`` drains only, so the estimate follows the wall clock when NTP
    slews it against the monotonic clock; a simulated clock never drifts (and its drains can be
    phase-locked to the samples), so there the minimum is over all drains.
    """

    def __init__(self, recent: int | None = None) -> None:
        self.ts_us: list[int] = []
        self.power_w: list[float] = []
        self.offset_s: float | None = None
        self.drains = 0
        self._lags: deque[float] = deque(maxlen=recent) if recent else deque(maxlen=1)
        self._rolling = bool(recent)

    def add(self, now_s: float, samples: list) -> None:
        self.drains += 1
        last = self.ts_us[-1] if self.ts_us else -1
        fresh = [s for s in samples if s.ts_us > last]
        if not fresh:
            return
        fresh.sort(key=lambda s: s.ts_us)
        lag = now_s - fresh[-1].ts_us / 1e6
        if self._rolling:
            self._lags.append(lag)
            self.offset_s = min(self._lags)
        else:
            self.offset_s = lag if self.offset_s is None else min(self.offset_s, lag)
        self.ts_us.extend(s.ts_us for s in fresh)
        self.power_w.extend(s.power_w for s in fresh)

    @property
    def newest_us(self) -> int:
        return self.ts_us[-1] if self.ts_us else 0


class Sampler:
    """Polls every device's cheap readings at ``rate_hz`` and drains power history every
    ``drain_history_s`` (the H100's ring holds ~2.4 s, so 1 s loses nothing).

    ``threaded``: None chooses by the clock (thread for real clocks, simulated callbacks for
    simulated ones); True forces a thread (benchmarks of the thread's cost).
    """

    def __init__(self, devices: Sequence[Device], rate_hz: float = 20.0, drain_history_s: float = 1.0,
                 threaded: bool | None = None) -> None:
        if rate_hz <= 0 or drain_history_s <= 0:
            raise ValueError("rate_hz and drain_history_s must be positive")
        self.devices = list(devices)
        self.rate_hz = rate_hz
        self.period_s = 1.0 / rate_hz
        self.drain_history_s = drain_history_s
        simulated = all(getattr(d.clock, "simulated", False) for d in self.devices)
        self.threaded = (not simulated) if threaded is None else threaded
        self._lock = threading.Lock()
        self._t: dict[int, list[float]] = {d.info.index: [] for d in self.devices}
        self._rows: dict[int, list[Reading]] = {d.info.index: [] for d in self.devices}
        recent = None if simulated else 64
        self._hist: dict[int, _History] = {d.info.index: _History(recent) for d in self.devices}
        self._cancel: list = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        #: (device time, GPU index, message) of each failed read, for the windows that span them
        self.errors: list[tuple[float, int, str]] = []
        self.ticks = 0

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return bool(self._cancel) or self._thread is not None

    def start(self) -> None:
        """Begin sampling (again, after ``stop``); takes one reading of every device at once."""
        if self.running:
            return
        self._calibrate_history()
        self.tick()
        if not self.threaded:
            groups: dict[int, list[Device]] = {}
            for d in self.devices:
                groups.setdefault(id(d.clock), []).append(d)
            for devs in groups.values():
                clock = devs[0].clock
                self._cancel.append(clock.call_every(self.period_s, lambda _t, devs=devs: self.tick(devs)))
                self._cancel.append(clock.call_every(self.drain_history_s, lambda _t, devs=devs: self.drain(devs)))
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="tokbench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling; the buffers stay readable. Drains the history one last time."""
        for cancel in self._cancel:
            cancel()
        self._cancel = []
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.drain()

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        clock = self.devices[0].clock
        next_t = clock.now()
        last_drain = next_t
        while not self._stop.is_set():
            self.tick()
            now = clock.now()
            if now - last_drain >= self.drain_history_s:
                self.drain()
                last_drain = now
            next_t += self.period_s
            if next_t < now:  # fell behind (a slow read): skip, do not burst
                next_t = now
            # Event.wait rather than clock.sleep so that stop() ends the thread at once
            self._stop.wait(max(0.0, next_t - clock.now()))

    # --- sampling -------------------------------------------------------------------------
    def tick(self, devices: Sequence[Device] | None = None) -> None:
        """Read every device once (called by the thread or the simulated clock)."""
        for d in devices or self.devices:
            try:
                r = d.read()
            except TokbenchError as e:
                self._error(d, e)
                continue
            idx = d.info.index
            with self._lock:
                self._t[idx].append(r.t_s)
                self._rows[idx].append(r)
        self.ticks += 1

    def _calibrate_history(self) -> None:
        """Pin the driver-to-device clock offset: wait (at most one sample period and a bit) for a
        new history sample so the first offset estimate is tight."""
        for d in self.devices:
            hist = self._hist[d.info.index]
            if hist.offset_s is not None:
                continue  # a restart: the offset is known
            try:
                first = d.power_samples(hist.newest_us)
            except TokbenchError:
                first = None
            if first is None:
                continue
            hist.add(d.clock.now(), first)
            for _ in range(60):
                d.clock.sleep(0.0005)
                fresh = d.power_samples(hist.newest_us)
                if fresh:
                    hist.add(d.clock.now(), fresh)
                    break

    def drain(self, devices: Sequence[Device] | None = None) -> None:
        """Move new power-history samples of every device into the buffer. Windows call it at
        their end edge so the history covers the whole window."""
        for d in devices or self.devices:
            hist = self._hist[d.info.index]
            try:
                samples = d.power_samples(hist.newest_us)
            except TokbenchError as e:
                self._error(d, e)
                continue
            if samples is None:
                continue
            with self._lock:
                hist.add(d.clock.now(), samples)

    def drain_until(self, t: float, timeout_s: float = 0.1) -> None:
        """Drain until every device's history reaches device time ``t`` (a window's end tick), so
        the stretch after the window's last step is covered by samples taken after it. Waits at
        most ``timeout_s`` (one history sample period is ~20 ms)."""
        pending = [d for d in self.devices if self._hist[d.info.index].offset_s is not None]
        if not pending:
            self.drain()
            return
        clock = pending[0].clock
        deadline = clock.now() + timeout_s
        while True:
            self.drain(pending)
            pending = [d for d in pending if self._newest_t(d.info.index) < t]
            if not pending or clock.now() >= deadline:
                return
            clock.sleep(0.005)

    def _newest_t(self, gpu_index: int) -> float:
        hist = self._hist[gpu_index]
        return hist.newest_us / 1e6 + hist.offset_s if hist.offset_s is not None else -math.inf

    # --- queries ------------------------------------------------------------------------------
    def readings(self, gpu_index: int, t0: float, t1: float) -> pd.DataFrame:
        """Readings with ``t0 <= t_s <= t1`` as a DataFrame (one column per Reading field)."""
        with self._lock:
            ts = self._t[gpu_index]
            i, j = bisect.bisect_left(ts, t0), bisect.bisect_right(ts, t1)
            rows = [tuple(r.__dict__.values()) for r in self._rows[gpu_index][i:j]]
        return pd.DataFrame.from_records(rows, columns=list(READING_COLUMNS)).astype(
            {c: "float64" for c in READING_COLUMNS})

    def power_history(self, gpu_index: int, t0: float, t1: float) -> pd.DataFrame:
        """Drained power-history samples with device-clock time ``t_s`` in [t0, t1]."""
        with self._lock:
            hist = self._hist[gpu_index]
            if hist.offset_s is None:
                return pd.DataFrame({c: pd.Series(dtype="float64") for c in HISTORY_COLUMNS})
            lo_us = (t0 - hist.offset_s) * 1e6
            hi_us = (t1 - hist.offset_s) * 1e6
            i = bisect.bisect_left(hist.ts_us, lo_us)
            j = bisect.bisect_right(hist.ts_us, hi_us)
            ts_us = hist.ts_us[i:j]
            power = hist.power_w[i:j]
            offset = hist.offset_s
        df = pd.DataFrame({"ts_us": pd.Series(ts_us, dtype="int64"), "power_w": pd.Series(power, dtype="float64")})
        df.insert(0, "t_s", df["ts_us"] / 1e6 + offset)
        return df

    def latest(self, gpu_index: int) -> Reading | None:
        with self._lock:
            rows = self._rows[gpu_index]
            return rows[-1] if rows else None

    def has_history(self, gpu_index: int) -> bool:
        return self._hist[gpu_index].offset_s is not None

    def _error(self, d: Device, e: Exception) -> None:
        with self._lock:
            self.errors.append((d.clock.now(), d.info.index, str(e)))

    def errors_between(self, gpu_index: int, t0: float, t1: float) -> list[str]:
        """Messages of the failed reads of one GPU in [t0, t1]."""
        with self._lock:
            return [m for t, i, m in self.errors if i == gpu_index and t0 <= t <= t1]

    def forget_before(self, t: float) -> None:
        """Drop readings, history and errors older than ``t`` (device clock): a sweep calls it after
        every point, so memory stays flat however long the run."""
        with self._lock:
            self.errors = [e for e in self.errors if e[0] >= t]
            for idx, ts in self._t.items():
                i = bisect.bisect_left(ts, t)
                del ts[:i]
                del self._rows[idx][:i]
                hist = self._hist[idx]
                if hist.offset_s is not None and len(hist.ts_us) > 1:
                    k = bisect.bisect_left(hist.ts_us, (t - hist.offset_s) * 1e6)
                    k = min(k, len(hist.ts_us) - 1)  # keep the newest: drains continue after it
                    del hist.ts_us[:k]
                    del hist.power_w[:k]
