"""Intervals over repeats and "can this be told from the best?" tests.

Max-Q and Max-P are reported as the sets of settings that cannot be told from the best, so these
tests decide what a run is allowed to claim. Small samples use Student t (for a difference,
with the noise pooled over the curve's settings); with at least ``BOOTSTRAP_MIN`` repeats on both
sides the bootstrap (scipy.stats), which does not assume normal noise. A setting measured once
borrows the noise of the others (pooled within-setting variance, or, when nothing was repeated,
the scatter of neighbouring means), so a single-repeat sweep still gets honest ranges rather than an argmax of noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

CONFIDENCE = 0.95
#: differences smaller than this share of the best are never called "worse": a 0.1% gap that a
#: very steady simulated or real run resolves statistically is not one a power setting should chase
PRACTICAL_MARGIN = 0.0025
BOOTSTRAP_MIN = 5
N_RESAMPLES = 4999
_SEED = 20260101


@dataclass(frozen=True)
class Interval:
    """Mean of repeats with a two-sided ``CONFIDENCE`` interval; ``method`` says how it was made
    ("t", "bootstrap", "pooled", or "none" when nothing tells the noise)."""

    mean: float
    lo: float
    hi: float
    n: int
    std: float
    method: str

    @property
    def half_width(self) -> float:
        return max(self.hi - self.mean, self.mean - self.lo)


def _mean_axis(x, axis=-1):
    return np.mean(x, axis=axis)


def _diff_axis(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def mean_interval(x: np.ndarray, pooled_sigma: float | None = None, pooled_df: float = math.inf) -> Interval:
    """Interval of the mean of ``x``: bootstrap with ``BOOTSTRAP_MIN`` repeats or more; below that a
    t interval with the curve's pooled noise when it is known (two or three repeats say little about
    their own spread: with two, Student's factor is 12.7), else with ``x``'s own spread."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    m = float(np.mean(x))
    sd = float(np.std(x, ddof=1)) if n > 1 else math.nan
    if n >= BOOTSTRAP_MIN and sd > 0:
        res = st.bootstrap((x,), _mean_axis, confidence_level=CONFIDENCE, n_resamples=N_RESAMPLES,
                           method="percentile", vectorized=True, rng=np.random.default_rng(_SEED))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return Interval(m, lo, hi, n, sd, "bootstrap")
    if pooled_sigma is not None and pooled_sigma > 0 and pooled_df > 0:
        h = float(st.t.ppf(0.5 + CONFIDENCE / 2, pooled_df)) * pooled_sigma / math.sqrt(n)
        return Interval(m, m - h, m + h, n, sd if n > 1 else pooled_sigma, "pooled")
    if n > 1:
        h = float(st.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
        return Interval(m, m - h, m + h, n, sd, "t")
    return Interval(m, m, m, n, sd, "none")


def pooled_noise(groups: list[np.ndarray], means_in_order: np.ndarray | None = None) -> tuple[float | None, float]:
    """(sigma, degrees of freedom) of one measurement, from the spread within repeated settings;
    failing that, from the scatter of neighbouring means along the curve (second differences,
    which cancel a smooth trend: var(x[i-1] - 2x[i] + x[i+1]) = 6 sigma^2)."""
    ss = sum(float(np.sum((g - g.mean()) ** 2)) for g in groups if len(g) > 1)
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    if df > 0:
        return math.sqrt(ss / df), float(df)
    # at least three second differences: the spread of two is their difference, which on a curve of
    # four unrepeated settings is the change of its curvature, not noise (a concave training curve
    # read that way calls 200 W's half speed "cannot be told" from 700 W's)
    if means_in_order is not None and len(means_in_order) >= 5:
        d2 = np.diff(np.asarray(means_in_order, dtype=float), n=2)
        mad = float(np.median(np.abs(d2 - np.median(d2)))) * 1.4826
        sigma = mad / math.sqrt(6.0)
        return (sigma if sigma > 0 else None), float(len(d2))
    return None, 0.0


def cannot_tell_apart(best: np.ndarray, other: np.ndarray, pooled_sigma: float | None, pooled_df: float,
                      comparisons: int = 1, margin: float = PRACTICAL_MARGIN) -> bool:
    """True when the interval of mean(best) - mean(other) reaches zero: ``other`` cannot be told
    from the best. The interval is 95% over ``comparisons`` such tests together (Bonferroni): the
    best was picked among them, and per-test 95% would call one of ten equal settings "worse" by
    chance about every other run. A difference within ``margin`` of the best's mean (relative)
    counts as the same whatever the noise.

    With ``BOOTSTRAP_MIN`` repeats on both sides: a bootstrap interval of the difference. Otherwise
    a t interval with the curve's pooled noise (the settings of one curve share one noise level,
    and pooling gives the test the degrees of freedom that 2-4 repeats alone cannot: Welch's test on
    three values per side calls ties apart whenever both samples happen to be tight); Welch only
    when no pooled noise is known."""
    best = np.asarray(best, dtype=float)
    other = np.asarray(other, dtype=float)
    d = float(best.mean() - other.mean())
    if d <= margin * abs(float(best.mean())):
        return True
    nb, no = len(best), len(other)
    sb = float(np.std(best, ddof=1)) if nb > 1 else 0.0
    so = float(np.std(other, ddof=1)) if no > 1 else 0.0
    alpha = (1.0 - CONFIDENCE) / max(comparisons, 1)
    if nb >= BOOTSTRAP_MIN and no >= BOOTSTRAP_MIN and (sb > 0 or so > 0):
        res = st.bootstrap((best, other), _diff_axis, confidence_level=1.0 - alpha, n_resamples=N_RESAMPLES,
                           method="percentile", vectorized=True, paired=False, rng=np.random.default_rng(_SEED))
        low = float(res.confidence_interval.low)
        if math.isfinite(low):
            return low <= 0.0
    if pooled_sigma and pooled_sigma > 0 and pooled_df > 0:
        se = pooled_sigma * math.sqrt(1 / nb + 1 / no)
        return d <= float(st.t.ppf(1.0 - alpha / 2, pooled_df)) * se
    if nb > 1 and no > 1 and (sb > 0 or so > 0):
        vb, vo = sb**2 / nb, so**2 / no
        df = (vb + vo) ** 2 / (vb**2 / (nb - 1) + vo**2 / (no - 1))
        return d <= float(st.t.ppf(1.0 - alpha / 2, df)) * math.sqrt(vb + vo)
    return False
