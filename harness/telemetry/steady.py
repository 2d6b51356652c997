"""Steady-state detection: warm-ups last as long as the device needs, and no longer."""

from __future__ import annotations

from collections import deque


class SteadyState:
    """Settled once power and SM clock have both stayed within a band of ``band_pct`` percent
    (max - min relative to their mean) for ``hold_s`` seconds.

    Feed it readings in time order. ``update`` returns True once settled **or** timed out (so a
    warm-up loop always ends); ``timed_out`` tells which. ``settled_since`` is the start of the
    stable stretch (the settling point), ``settled_at`` the time it was confirmed
    (``settled_since + hold_s`` or a little later).
    """

    def __init__(self, band_pct: float = 3.0, hold_s: float = 3.0, timeout_s: float = 120.0) -> None:
        if band_pct <= 0 or hold_s <= 0 or timeout_s <= 0:
            raise ValueError("band_pct, hold_s and timeout_s must be positive")
        self.band = band_pct / 100.0
        self.hold_s = hold_s
        self.timeout_s = timeout_s
        self.started_at: float | None = None
        self.settled_at: float | None = None
        self.settled_since: float | None = None
        self.timed_out = False
        self._buf: deque[tuple[float, float, float]] = deque()

    @property
    def done(self) -> bool:
        return self.settled_at is not None or self.timed_out

    def _in_band(self, values: list[float]) -> bool:
        lo, hi = min(values), max(values)
        mean = sum(values) / len(values)
        return mean > 0 and (hi - lo) <= self.band * mean

    def update(self, t: float, power_w: float, sm_clock_mhz: float) -> bool:
        if self.done:
            return True
        if self.started_at is None:
            self.started_at = t
        buf = self._buf
        buf.append((t, power_w, sm_clock_mhz))
        # shrink from the left until the remaining stretch is in band (it always is for one point)
        while len(buf) > 1 and not (self._in_band([b[1] for b in buf]) and self._in_band([b[2] for b in buf])):
            buf.popleft()
        if t - buf[0][0] >= self.hold_s:
            self.settled_since = buf[0][0]
            self.settled_at = t
            return True
        if t - self.started_at >= self.timeout_s:
            self.timed_out = True
            return True
        return False

    @property
    def warmup_s(self) -> float | None:
        """How long the warm-up took (to confirmation or timeout)."""
        end = self.settled_at if self.settled_at is not None else (self._buf[-1][0] if self.timed_out else None)
        return None if end is None or self.started_at is None else end - self.started_at
