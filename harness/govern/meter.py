"""What the named GPUs draw, from their energy counters: the governor's own evidence.

The counter refreshes every ~100 ms, so a mean over a short span is coarse; means are taken over
at least ``window_s`` (the telemetry lag the docs quote) or since a given anchor."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from harness.devices.base import Device
from harness.telemetry.energy import counter_delta_j


class NodeMeter:
    def __init__(self, devices: Sequence[Device], window_s: float = 2.0) -> None:
        self.devices = list(devices)
        self.window_s = window_s
        self._hist: list[deque[tuple[float, int | None]]] = [deque() for _ in self.devices]
        self.sample()
        self._first = [h[0] for h in self._hist]

    def sample(self) -> None:
        """Read every counter once (call once per decision)."""
        for h, d in zip(self._hist, self.devices):
            h.append((d.clock.now(), d.read_energy_mj()))
            while len(h) > 2 and h[1][0] <= h[-1][0] - 4 * self.window_s:
                h.popleft()

    def energy_j(self) -> float | None:
        """Node energy since the first sample, J (None where a GPU has no counter)."""
        total = 0.0
        for i in range(len(self.devices)):
            e = self.mean_since(i, *self._first[i])
            if e is None:
                return None
            total += e * (self._hist[i][-1][0] - self._first[i][0])
        return total

    def latest(self, i: int) -> tuple[float, int | None]:
        return self._hist[i][-1]

    def mean_since(self, i: int, t0: float, e0: int | None) -> float | None:
        """Mean W of GPU ``i`` from an earlier sample to the latest; None when unknown."""
        t1, e1 = self._hist[i][-1]
        if e0 is None or e1 is None or t1 <= t0:
            return None
        joules = counter_delta_j(e0, e1)
        return None if joules is None else joules / (t1 - t0)

    def recent(self, i: int) -> float | None:
        """Mean W of GPU ``i`` over the last ``window_s`` (the driver's 1 s average where the part
        has no counter); None until a window has passed."""
        h = self._hist[i]
        t1 = h[-1][0]
        older = [s for s in h if s[0] <= t1 - self.window_s + 1e-9]
        if h[-1][1] is None:
            return self.devices[i].read().power_average_w
        if not older:
            return None
        return self.mean_since(i, *older[-1])
