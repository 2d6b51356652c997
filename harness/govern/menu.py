"""The settings a governor may choose from: a curve file's fit, cut to what the part allows.

For a per-GPU power budget the best setting is the one with the most tokens/s whose curve power
fits the budget: Max-P while the budget is loose, Max-Q and below as it tightens. Settings above
Max-P are never chosen (more power, no more tokens). Below the lowest setting nothing fits: the
governor holds that *floor* (the part's minimum power limit or the curve's lowest clock), with
the job still running, and says so; stopping jobs is the scheduler's business, not the governor's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.devices.base import Device
from harness.errors import CurveFileError
from harness.records.curves import CurveFile

#: resolution of the power-limit menu between the fit's grid points
POWER_STEP_W = 5.0

KNOBS = {"power_limit_w": "power-limit", "sm_clock_mhz": "sm-clock"}


@dataclass(frozen=True)
class Choice:
    """One GPU's setting and what the curve says it gives."""

    setting: float
    power_w: float  # curve mean power per GPU at this setting
    tokens_per_s: float  # curve tokens/s per GPU
    zone: str  # max-p | shed | max-q | below-max-q | floor


@dataclass(frozen=True)
class Menu:
    """Arrays indexed by setting (ascending), per GPU."""

    knob: str  # "power_limit_w" | "sm_clock_mhz"
    settings: np.ndarray
    power_w: np.ndarray
    tokens_per_s: np.ndarray
    max_p: int
    max_q: int
    default_setting: float
    idle_w: float

    @classmethod
    def from_curve(cls, curve: CurveFile, device: Device, phase: str | None = None,
                   batch_size: int | None = None, floor_setting: float | None = None) -> Menu:
        """The curve's fit inside the part's range (minimum .. default) and above ``floor_setting``."""
        fit = curve.fit_for(phase, batch_size)
        s = np.asarray(fit.settings, dtype=float)
        if curve.knob == "power_limit_w":
            lim = device.power_limits()
            lo, hi, default = lim.min_w, lim.default_w, lim.default_w
        else:
            clocks = device.supported_sm_clocks()
            lo, hi = float(min(clocks)), float(max(clocks))
            default = hi
        if floor_setting is not None:
            lo = max(lo, floor_setting)
        keep = (s >= lo - 1e-9) & (s <= hi + 1e-9)
        if not keep.any():
            raise CurveFileError(f"curve settings {s.min():g}-{s.max():g} lie outside what GPU "
                                 f"{device.info.index} allows ({lo:g}-{hi:g})")
        p = np.asarray(fit.power_mean_w, dtype=float)
        t = np.asarray(fit.tokens_per_s, dtype=float)
        # every settable value between the fit's grid points (the fit is monotone; planners
        # interpolate it the same way): power limits every ``POWER_STEP_W``, clocks as supported
        if curve.knob == "power_limit_w":
            grid = np.arange(s[keep].min(), s[keep].max() + 1e-9, POWER_STEP_W)
        else:
            grid = np.asarray([c for c in device.supported_sm_clocks() if s[keep].min() <= c <= s[keep].max()],
                              dtype=float)
        grid = np.union1d(grid, s[keep])
        p, t, s = np.interp(grid, s, p), np.interp(grid, s, t), grid
        if not (np.isfinite(p).all() and np.isfinite(t).all()) or (p <= 0).any():
            raise CurveFileError("curve fit has non-finite or non-positive power/tokens")
        top = t.max()
        max_p = int(min(np.flatnonzero(t >= top * (1 - 1e-12)), key=lambda i: p[i]))
        max_q = int(np.argmax(t / p))
        # where the analysis found a range that cannot be told from the best, its best setting
        # (e.g. decode: the lowest clock whose tokens/s is within the noise of the top)
        for ranges, which in ((curve.max_p, "p"), (curve.max_q, "q")):
            for r in ranges:
                if r.phase == fit.phase and r.batch_size == fit.batch_size and s[0] <= r.best <= s[-1]:
                    i = int(np.argmin(np.abs(s - r.best)))
                    max_p, max_q = (i, max_q) if which == "p" else (max_p, i)
        max_q = min(max_q, max_p)
        idle = curve.idle_power_w if curve.idle_power_w is not None else float(p.min()) * 0.3
        return cls(curve.knob, s, p, t, max_p, max_q, float(default), float(idle))

    @property
    def knob_name(self) -> str:
        return KNOBS[self.knob]

    @property
    def floor(self) -> Choice:
        return self._choice(0, "floor")

    def _choice(self, i: int, zone: str | None = None) -> Choice:
        if zone is None:
            if i >= self.max_p:
                zone = "max-p"
            elif i > self.max_q:
                zone = "shed"
            elif i == self.max_q:
                zone = "max-q"
            else:
                zone = "below-max-q"
        return Choice(float(self.settings[i]), float(self.power_w[i]), float(self.tokens_per_s[i]), zone)

    def best_for(self, budget_w: float | None) -> Choice:
        """Most tokens/s with curve power within ``budget_w`` (None: no limit, Max-P); the floor
        when nothing fits."""
        if budget_w is None:
            return self._choice(self.max_p)
        fits = np.flatnonzero((self.power_w <= budget_w + 1e-9) & (np.arange(len(self.settings)) <= self.max_p))
        if not fits.size:
            return self.floor
        best = fits[self.tokens_per_s[fits] >= self.tokens_per_s[fits].max() * (1 - 1e-12)]
        return self._choice(int(min(best, key=lambda i: self.power_w[i])))

    def at(self, setting: float) -> Choice:
        """The curve at a named setting (nearest setting of the menu)."""
        return self._choice(int(np.argmin(np.abs(self.settings - setting))))

    def uniform_cap(self, fraction: float) -> Choice:
        """The naive policy: every GPU capped at ``fraction`` of the default setting."""
        return self.at(max(self.settings[0], fraction * self.default_setting))
