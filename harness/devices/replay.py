"""Replay recorded sensor traces through the live measurement path.

``ReplayDevice`` is a ``Device`` whose readings come from a trace recorded on a real GPU
(tests/data/traces/): polled power fields and the energy counter from a square-wave recording, and/or
the driver's power-sample history. Its clock is simulated (an event clock), so a ``Sampler`` and a
``Window`` run over it exactly as they do over a simulated or real GPU.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from harness.devices.base import (
    Capabilities,
    ClockLock,
    DeviceInfo,
    PowerLimits,
    PowerSample,
    Reading,
    StateCheck,
)
from harness.errors import NotSupported

#: cost of one energy-counter read on the H100 the traces come from (CALIBRATION.md)
ENERGY_READ_COST_S = 0.0039


class EventClock:
    """A simulated clock: time moves only in ``sleep``, firing ``call_every`` callbacks on the way."""

    simulated = True

    def __init__(self, t0: float = 0.0) -> None:
        self._t = t0
        self._seq = 0
        self._heap: list[tuple[float, int, list]] = []

    def now(self) -> float:
        return self._t

    def sleep(self, seconds: float) -> None:
        target = self._t + max(0.0, seconds)
        while self._heap and self._heap[0][0] <= target:
            t_due, _, entry = heapq.heappop(self._heap)
            if not entry[2]:
                continue
            self._t = max(self._t, t_due)
            self._push(t_due + entry[0], entry)
            entry[1](self._t)
        self._t = max(self._t, target)

    def _push(self, t: float, entry: list) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, entry))

    def call_every(self, period_s: float, callback: Callable[[float], None]) -> Callable[[], None]:
        entry = [period_s, callback, True]
        self._push(self._t + period_s, entry)

        def cancel() -> None:
            entry[2] = False

        return cancel


def load_square_wave(path: Path) -> pd.DataFrame:
    """tests/data/traces/h100-square-wave.csv: t_s, power_avg_mW, energy_mJ, power_instant_mW, load."""
    return pd.read_csv(path)


def load_power_samples(path: Path) -> pd.DataFrame:
    """tests/data/traces/h100-power-samples.csv: ts_us, value_mW."""
    return pd.read_csv(path)


class ReplayDevice:
    """A ``Device`` that plays back a recorded trace on an ``EventClock``.

    ``polls``: the square-wave recording (t_s from 0); ``samples``: a power-sample history
    (ts_us driver time). When both are given the history's clock is shifted so its last sample
    falls at the end of the polled trace. Fields a trace does not hold read as None.
    """

    def __init__(self, polls: pd.DataFrame | None = None, samples: pd.DataFrame | None = None,
                 index: int = 0, name: str = "NVIDIA H100 80GB HBM3 (replay)") -> None:
        self.clock = EventClock(0.0)
        self._polls = polls
        self._samples = samples
        if polls is not None:
            self._t = polls["t_s"].to_numpy(dtype=float)
            self._avg = polls["power_avg_mW"].to_numpy(dtype=float) / 1000.0
            self._inst = polls["power_instant_mW"].to_numpy(dtype=float) / 1000.0
            self._energy = polls["energy_mJ"].to_numpy(dtype=np.int64)
            self.end_s = float(self._t[-1])
        if samples is not None:
            self._s_us = samples["ts_us"].to_numpy(dtype=np.int64)
            self._s_w = samples["value_mW"].to_numpy(dtype=float) / 1000.0
            # driver time at clock 0: the history starts 20 ms into the replay (or ends with the polls)
            span_us = int(self._s_us[-1] - self._s_us[0])
            end_s = self.end_s if polls is not None else span_us / 1e6 + 0.02
            self._us_at_zero = int(self._s_us[-1] - end_s * 1e6)
            if polls is None:
                self.end_s = end_s
        self.info = DeviceInfo(
            index=index, uuid=f"GPU-REPLAY-{index}", pci_bus_id="", name=name, architecture="Hopper",
            driver="replay", memory_total_mb=81559, max_sm_clock_mhz=1980, max_mem_clock_mhz=2619, backend="replay",
            capabilities=Capabilities(
                energy_counter=polls is not None, instant_power=polls is not None, average_power=polls is not None,
                power_samples=samples is not None, memory_power=False, can_set_power_limit=False,
                can_lock_sm_clock=False, permission_note="a replayed trace cannot be changed"),
        )

    def _row(self) -> int:
        return max(0, int(np.searchsorted(self._t, self.clock.now(), side="right")) - 1)

    # --- telemetry ------------------------------------------------------------------------------
    def read(self) -> Reading:
        inst = avg = None
        if self._polls is not None:
            i = self._row()
            inst, avg = float(self._inst[i]), float(self._avg[i])
        return Reading(self.clock.now(), inst, avg, None, None, None, None, None, None, None, None)

    def read_energy_mj(self) -> int | None:
        if self._polls is None:
            return None
        self.clock.sleep(ENERGY_READ_COST_S)
        return int(self._energy[self._row()])

    def power_samples(self, since_us: int) -> list[PowerSample] | None:
        if self._samples is None:
            return None
        now_us = self._us_at_zero + self.clock.now() * 1e6
        ok = (self._s_us > since_us) & (self._s_us <= now_us)
        return [PowerSample(int(t), float(w)) for t, w in zip(self._s_us[ok], self._s_w[ok])]

    def counter_j_at(self, t: float) -> float:
        """The recorded counter at replay time ``t``, interpolated between its ticks (the reference
        a window's energy is checked against)."""
        ticks = np.flatnonzero(np.diff(self._energy, prepend=self._energy[0] - 1) != 0)
        return float(np.interp(t, self._t[ticks], self._energy[ticks])) / 1000.0

    # --- settings: a recording cannot be changed ---------------------------------------------------
    def power_limits(self) -> PowerLimits:
        return PowerLimits(200.0, 700.0, 700.0, 700.0, 700.0)

    def set_power_limit(self, watts: float) -> None:
        raise NotSupported("a replayed trace cannot change its power limit")

    def supported_sm_clocks(self) -> list[int]:
        return []

    def sm_clock_lock(self) -> ClockLock | None:
        return None

    def lock_sm_clock(self, lo_mhz: int, hi_mhz: int) -> None:
        raise NotSupported("a replayed trace cannot lock its clocks")

    def reset_sm_clock(self) -> None:
        raise NotSupported("a replayed trace cannot reset its clocks")

    def state_check(self) -> StateCheck:
        return StateCheck(persistence_mode=True)

    def close(self) -> None:
        """Nothing to release."""
