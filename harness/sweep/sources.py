"""Which point to measure next: a fixed grid, or the adaptive Max-Q search."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from harness.sweep.plan import PlannedPoint, SweepPlan


@dataclass(frozen=True)
class Outcome:
    """What the sweep learnt from one planned point (node total over GPUs, first phase)."""

    planned: PlannedPoint
    tokens_per_s: float
    tokens_per_j: float
    valid: bool


class PointSource(Protocol):
    def next_point(self, done: Sequence[Outcome]) -> PlannedPoint | None: ...


@dataclass
class GridSource:
    """A fixed plan, in order (what a resumed run already has is skipped per GPU and phase by the loop,
    ``SweepContext.recorded``)."""

    plan: SweepPlan

    def __post_init__(self) -> None:
        self._todo: Iterator[PlannedPoint] = iter(self.plan.grid())

    def next_point(self, done: Sequence[Outcome]) -> PlannedPoint | None:
        return next(self._todo, None)


@dataclass
class MaxQSearch:
    """Adaptive search for the setting with the most tokens/J.

    A coarse pass over ``coarse`` evenly spread settings; then golden-section refinement inside
    the bracket around the best; each candidate near the best is repeated until the 95%
    confidence interval of its tokens/J is narrower than ``ci_pct`` percent of its mean. The
    search ends when the best's interval is that narrow *and* the bracket is below the knob's
    resolution, so a flat, noisy peak ends too (on the interval), not only a sharp one.
    """

    lo: float
    hi: float
    batch_size: int
    resolution: float
    ci_pct: float = 1.0
    coarse: int = 5
    max_points: int = 40
    snap: Callable[[float], float] = field(default=lambda v: round(v, 1))

    def __post_init__(self) -> None:
        n = self.coarse
        self._queue = [self.snap(self.hi - (self.hi - self.lo) * i / (n - 1)) for i in range(n)]

    def _stats(self, done: Sequence[Outcome]) -> dict[float, list[float]]:
        by: dict[float, list[float]] = {}
        for o in done:
            if o.valid:
                by.setdefault(o.planned.setting, []).append(o.tokens_per_j)
        return by

    def _plan(self, setting: float, done: Sequence[Outcome]) -> PlannedPoint:
        rep = sum(1 for o in done if o.planned.setting == setting)
        return PlannedPoint(setting, self.batch_size, rep)

    def next_point(self, done: Sequence[Outcome]) -> PlannedPoint | None:
        if len(done) >= self.max_points:
            return None
        if self._queue:
            return self._plan(self._queue.pop(0), done)
        by = self._stats(done)
        if not by:
            return None
        means = {s: statistics.fmean(v) for s, v in by.items()}
        best = max(means, key=means.__getitem__)
        # 1) enough repeats at the best for a confidence interval of the stated width
        if ci_half_width_pct(by[best]) > self.ci_pct:
            return self._plan(best, done)
        # 2) refine: golden-section point in the larger gap beside the best
        tried = sorted(means)
        i = tried.index(best)
        left = tried[i - 1] if i > 0 else None
        right = tried[i + 1] if i + 1 < len(tried) else None
        gaps = [(best - left, left) if left is not None else (0.0, None),
                (right - best, right) if right is not None else (0.0, None)]
        width, neighbour = max(gaps, key=lambda g: g[0])
        if neighbour is None or width <= self.resolution:
            # the bracket is resolved; make sure a close runner-up is not the true best
            rivals = [s for s in tried if s != best and len(by[s]) < 2
                      and means[s] >= means[best] * (1 - self.ci_pct / 100)]
            return self._plan(rivals[0], done) if rivals else None
        golden = 0.381966
        candidate = self.snap(best + (neighbour - best) * golden)
        if candidate in means or candidate == best:
            return None
        return self._plan(candidate, done)


def ci_half_width_pct(values: Sequence[float]) -> float:
    """Half-width of the 95% t-interval of the mean, in percent of the mean (inf for n < 2)."""
    n = len(values)
    if n < 2:
        return math.inf
    from scipy import stats

    mean = statistics.fmean(values)
    sd = statistics.stdev(values)
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return 100.0 * half / mean if mean else math.inf
