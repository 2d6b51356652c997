"""What a run measures: the knob's settings, batch sizes, repeats and their order."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from harness.devices.base import Device
from harness.errors import UsageError
from harness.knobs import Knob, knob
from harness.profiles import MAX_SETTINGS

ORDERS = ("descending", "ascending", "interleaved")


@dataclass(frozen=True)
class PlannedPoint:
    setting: float
    batch_size: int
    repeat: int
    #: this point's window length when a search chose one (None: the plan's ``window_s``)
    window_s: float | None = None


@dataclass(frozen=True)
class SweepPlan:
    """What a run measures. ``knob`` is any spelling of a knob (see ``harness.knobs``); ``settings``
    are in its unit."""

    knob: str
    settings: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    repeats: int = 3
    order: str = "interleaved"
    warmup_min_s: float = 5.0
    warmup_max_s: float = 120.0
    window_s: float = 30.0
    search: str | None = None
    #: --search max-q: the practical margin (%) within which the chosen setting must be of the best tokens/J,
    #: and the device-time budget as a share of the knob's equivalent 1-repeat grid
    search_margin_pct: float = 1.0
    search_budget: float = 1 / 3
    max_time_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "knob", knob(self.knob).name)  # one spelling from here on
        if self.order not in ORDERS:
            raise UsageError(f"unknown order '{self.order}' (choose from {', '.join(ORDERS)})")
        if self.repeats < 1:
            raise UsageError("--repeats must be at least 1")
        if not self.settings:
            raise UsageError("the plan has no settings")

    @property
    def lever(self) -> Knob:
        """The knob this plan turns."""
        return knob(self.knob)

    def grid(self) -> list[PlannedPoint]:
        """Every (setting, batch, repeat) in measuring order. Repeats are the outer loop, so a
        thermal drift spreads over all settings instead of passing for a trend."""
        out = []
        for batch in self.batch_sizes:
            for r in range(self.repeats):
                for s in ordered(self.settings, self.order, r):
                    out.append(PlannedPoint(s, batch, r))
        return out


def ordered(settings: Sequence[float], order: str, repeat: int) -> list[float]:
    """Settings in measuring order; ``interleaved`` alternates ends (max, min, next max, ...)
    and reverses on odd repeats."""
    desc = sorted(set(settings), reverse=True)
    if order == "descending":
        return desc
    if order == "ascending":
        return desc[::-1]
    out: list[float] = []
    lo, hi = 0, len(desc) - 1
    while lo <= hi:
        out.append(desc[lo])
        if lo != hi:
            out.append(desc[hi])
        lo, hi = lo + 1, hi - 1
    return out if repeat % 2 == 0 else out[::-1]


def resolve_settings(device: Device, lever: Knob | str, points: int | None = None, step: float | None = None,
                     values: Sequence[float] | None = None, percent: Sequence[float] | None = None,
                     default_points: int = 9) -> tuple[float, ...]:
    """The knob's values from the device's constraints; anything outside them is refused here,
    before any setting is changed."""
    given = [name for name, v in (("--points", points), ("--step", step), ("--values", values),
                                  ("--percent", percent)) if v is not None]
    if len(given) > 1:
        raise UsageError(f"give the knob's values one way only (got {' and '.join(given)})")
    lever = knob(lever)
    lo, hi, discrete = lever.range(device)
    unit = lever.unit
    if values is not None:
        chosen = [float(v) for v in values]
    elif percent is not None:
        chosen = [hi * p / 100.0 for p in percent]
    elif step is not None:
        if step <= 0:
            raise UsageError("--step must be positive")
        n = int(math.floor((hi - lo) / step + 1e-9))
        if n + 1 > MAX_SETTINGS:
            raise UsageError(f"--step {step:g} {unit} makes {n + 1:,} settings over {lo:g}-{hi:g} {unit}; at most "
                             f"{MAX_SETTINGS} (a larger step, or --points)")
        chosen = [hi - i * step for i in range(n + 1)]
    else:
        n = points if points is not None else default_points
        if n < 1:
            raise UsageError("--points must be at least 1")
        chosen = [hi] if n == 1 else [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    bad = [v for v in chosen if v < lo - 1e-6 or v > hi + 1e-6]
    if bad:
        raise UsageError(f"{lever.name} value {bad[0]:g} {unit} is outside GPU {device.info.index}'s range "
                         f"{lo:g}-{hi:g} {unit}")
    if discrete is not None:
        chosen = [min(discrete, key=lambda c, v=v: abs(c - v)) for v in chosen]
    else:
        chosen = [round(v, 1) for v in chosen]
    return tuple(sorted(set(chosen), reverse=True))
