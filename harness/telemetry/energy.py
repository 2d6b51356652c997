"""Pure functions that turn readings into joules, watts and shares.

Kept free of devices and clocks so that live windows, replayed traces and benchmarks all go
through the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.devices.base import CLOCK_EVENT_NAMES

#: NVML's energy counter is an unsigned 64-bit count of millijoules
COUNTER_MODULUS_MJ = 2**64


def counter_delta_j(start_mj: int, end_mj: int) -> float | None:
    """Joules between two counter reads, or None when the counter was reset in between.

    A decrease near the top of the 64-bit range is a wrap (add the modulus); any other decrease
    is a reset (a driver reload restarts the counter from zero), whose delta cannot be known.
    """
    if end_mj >= start_mj:
        return (end_mj - start_mj) / 1000.0
    if start_mj > COUNTER_MODULUS_MJ - 2**40:  # within ~35 years of the top: a wrap
        return (end_mj + COUNTER_MODULUS_MJ - start_mj) / 1000.0
    return None


def integrate_held(t_s: Sequence[float], power_w: Sequence[float], t0: float, t1: float) -> float | None:
    """Energy over [t0, t1] from polled power, each value held until the next poll.

    A polled field shows the value published at the poll time, so sample-and-hold is what the
    reading actually claims. Before the first poll in the window the previous value (if the
    caller passed one) holds; with no usable value at all the result is None.
    """
    t = np.asarray(t_s, dtype=float)
    p = np.asarray(power_w, dtype=float)
    ok = ~np.isnan(p)
    t, p = t[ok], p[ok]
    if t1 <= t0 or t.size == 0 or t[0] > t1:
        return None
    # value in force at t0: last poll at or before t0, else the first poll (held backwards)
    i0 = int(np.searchsorted(t, t0, side="right")) - 1
    inside = (t > t0) & (t < t1)
    edges = np.concatenate(([t0], t[inside], [t1]))
    values = np.concatenate(([p[max(i0, 0)]], p[inside]))
    return float(np.sum(values * np.diff(edges)))


def history_intervals(t_s: np.ndarray, period_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of the interval each power-history sample averages.

    A driver sample at time t is the mean since the previous sample; the first one is given the
    median spacing (or ``period_s``).
    """
    t = np.asarray(t_s, dtype=float)
    if t.size == 0:
        return t, t
    gaps = np.diff(t)
    first = period_s if period_s is not None else (float(np.median(gaps)) if gaps.size else 0.02)
    starts = np.concatenate(([t[0] - first], t[:-1]))
    return starts, t


def integrate_history(t_s: Sequence[float], power_w: Sequence[float], t0: float, t1: float) -> float | None:
    """Energy over [t0, t1] from the driver's power history (each sample a mean over its interval),
    counting only the overlap of each interval with the window."""
    t = np.asarray(t_s, dtype=float)
    p = np.asarray(power_w, dtype=float)
    if t1 <= t0 or t.size == 0:
        return None
    starts, ends = history_intervals(t)
    overlap = np.clip(np.minimum(ends, t1) - np.maximum(starts, t0), 0.0, None)
    covered = float(overlap.sum())
    if covered <= 0:
        return None
    energy = float(np.sum(p * overlap))
    # parts of the window the history does not cover (before its first or after its last
    # sample) take the nearest sample's power, so a slightly short drain does not read low
    missing = (t1 - t0) - covered
    if missing > 1e-9:
        head = max(0.0, min(starts[0], t1) - t0)
        tail = max(0.0, t1 - max(ends[-1], t0))
        energy += head * p[0] + tail * p[-1]
    return energy


def percentile_power(power_w: Sequence[float], q: float = 99.0) -> float | None:
    p = np.asarray(power_w, dtype=float)
    p = p[~np.isnan(p)]
    return float(np.percentile(p, q)) if p.size else None


def max_rolling_mean(t_s: Sequence[float], power_w: Sequence[float], span_s: float = 1.0) -> float | None:
    """Highest mean power over any ``span_s`` stretch of a power history (what a facility must
    provision for). None when the history covers less than ``span_s``."""
    t = np.asarray(t_s, dtype=float)
    p = np.asarray(power_w, dtype=float)
    if t.size < 2:
        return None
    starts, ends = history_intervals(t)
    if ends[-1] - starts[0] < span_s - 1e-9:
        return None
    cum = np.concatenate(([0.0], np.cumsum(p * (ends - starts))))
    knots = np.concatenate(([starts[0]], ends))
    # mean over (t_i - span, t_i] for every sample end that has a full span behind it
    usable = ends - span_s >= starts[0] - 1e-9
    e_back = np.interp(ends[usable] - span_s, knots, cum)
    return float(np.max((cum[1:][usable] - e_back) / span_s))


def hold_weights(t_s: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Seconds of [t0, t1] during which each poll's value was the latest one."""
    t = np.asarray(t_s, dtype=float)
    if t.size == 0:
        return t
    edges = np.clip(np.concatenate((t, [t1])), t0, t1)
    edges[0] = t0 if t[0] > t0 else edges[0]
    return np.clip(np.diff(edges), 0.0, None)


def time_weighted_mean(t_s: np.ndarray, values: np.ndarray, t0: float, t1: float) -> float | None:
    v = np.asarray(values, dtype=float)
    w = hold_weights(t_s, t0, t1)
    ok = ~np.isnan(v) & (w > 0)
    if not ok.any():
        return None
    return float(np.sum(v[ok] * w[ok]) / np.sum(w[ok]))


def clock_event_shares(t_s: np.ndarray, events: np.ndarray, t0: float, t1: float) -> dict[str, float]:
    """Share of [t0, t1] during which each clock-event reason bit was set (only reasons seen)."""
    ev = np.asarray(events, dtype=float)
    w = hold_weights(t_s, t0, t1)
    ok = ~np.isnan(ev)
    total = float(w[ok].sum())
    if total <= 0:
        return {}
    bits = ev[ok].astype(np.int64)
    out: dict[str, float] = {}
    for bit, name in CLOCK_EVENT_NAMES.items():
        share = float(w[ok][(bits & int(bit)) != 0].sum()) / total
        if share > 0:
            out[name] = round(share, 6)
    return out


def max_gap(t_s: Sequence[float], t0: float, t1: float) -> float:
    """Longest stretch of [t0, t1] with no sample (the whole window when there is none)."""
    t = np.asarray(t_s, dtype=float)
    t = t[(t >= t0) & (t <= t1)]
    edges = np.concatenate(([t0], t, [t1]))
    return float(np.max(np.diff(edges)))


def format_shares(shares: dict[str, float]) -> str:
    """``{"sw_power_cap": 0.5, "idle": 0.0}`` -> ``"sw_power_cap=0.5"`` (the points.csv cell; reasons
    never active are left out)."""
    return ";".join(f"{k}={v:.4g}" for k, v in sorted(shares.items()) if v > 0)


def parse_shares(cell: str) -> dict[str, float]:
    """The points.csv cell back into ``{reason: share}``."""
    out: dict[str, float] = {}
    for item in filter(None, (cell or "").split(";")):
        key, _, value = item.partition("=")
        out[key] = float(value)
    return out
