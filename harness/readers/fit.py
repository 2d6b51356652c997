"""Calibrated monotone curves: what planners read between measured settings.

Throughput and power do not fall when a GPU is given more power or clock, so the fit is monotone
by construction: first a weighted isotonic regression of the per-setting means (which only moves
means that break the order, and so stays within their noise), then a PCHIP interpolant through
those values, which keeps the order between points and does not overshoot (no wiggles). The fit is
defined only between the lowest and highest measured settings: nothing is extrapolated beyond the
part's range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.optimize import isotonic_regression

METHOD = "isotonic+pchip"


@dataclass(frozen=True)
class MonotoneCurve:
    """One monotone (non-decreasing) function of the setting, defined on [lo, hi] only."""

    settings: np.ndarray  # measured settings, ascending
    values: np.ndarray  # isotonic values at those settings
    means: np.ndarray  # measured means at those settings

    @property
    def lo(self) -> float:
        return float(self.settings[0])

    @property
    def hi(self) -> float:
        return float(self.settings[-1])

    @property
    def residuals(self) -> np.ndarray:
        """measured mean - fit, at each measured setting."""
        return self.means - self.values

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if np.any(x < self.lo - 1e-9) or np.any(x > self.hi + 1e-9):
            raise ValueError(f"setting outside the measured range {self.lo:g}..{self.hi:g}: no extrapolation")
        if len(self.settings) == 1:
            return np.full_like(x, self.values[0])
        return PchipInterpolator(self.settings, self.values, extrapolate=False)(np.clip(x, self.lo, self.hi))


def monotone_fit(settings, means, weights=None) -> MonotoneCurve:
    """Fit a non-decreasing curve through per-setting ``means`` (weights: e.g. repeats / variance)."""
    x = np.asarray(settings, dtype=float)
    y = np.asarray(means, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    w = None if weights is None else np.asarray(weights, dtype=float)[order]
    if w is not None and (not np.all(np.isfinite(w)) or np.any(w <= 0)):
        w = None
    iso = isotonic_regression(y, weights=w, increasing=True).x if len(y) > 1 else y.copy()
    return MonotoneCurve(x, np.asarray(iso, dtype=float), y)


def fit_grid(lo: float, hi: float, measured, step: float | None = None) -> np.ndarray:
    """Settings at which an exported fit is tabulated: a regular grid over [lo, hi] (about 5 W or
    15 MHz apart, at most 201 values) joined with every measured setting."""
    span = hi - lo
    if span <= 0:
        return np.array([lo])
    n = int(min(200, max(10, round(span / (step or 5.0)))))
    grid = np.union1d(np.linspace(lo, hi, n + 1), np.asarray(measured, dtype=float))
    return np.round(grid, 6)
