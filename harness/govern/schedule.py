"""Follow a `tokbench plan` schedule.csv in time: in each interval, this node's GPUs take the
settings the plan chose for the fleet, in the plan's proportions.

The plan mixes at most two settings per interval (``setting_hi`` on ``gpus_hi`` GPUs,
``setting_lo`` on ``gpus_lo``) and parks the rest. A node of n GPUs gives round(n x share) of its
GPUs to each; a parked GPU is held at the floor (the governor does not stop jobs). The planned
tokens of the node are the plan's ``tokens_per_s_curve`` x n / fleet GPUs.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import pandas as pd

from harness.govern.signals import Directive, SignalError

NEEDED = ("setting_hi", "gpus_hi", "setting_lo", "gpus_lo", "gpus_running", "gpus_off", "tokens_per_s_curve")


def read_schedule(path: str | Path, workload: int | None = None) -> pd.DataFrame:
    """The schedule's per-interval columns of one workload, indexed by UTC start time."""
    try:
        df = pd.read_csv(path, index_col=0)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise SignalError(f"{path}: not a readable schedule.csv ({e})") from None
    prefix = "" if workload is None and "setting_hi" in df else f"w{workload or 0}_"
    cols = {c: prefix + c for c in NEEDED}
    missing = [v for v in cols.values() if v not in df]
    if missing:
        raise SignalError(f"{path}: not a `tokbench plan` schedule (missing {', '.join(missing)})")
    out = df[list(cols.values())].rename(columns={v: k for k, v in cols.items()})
    try:
        idx = pd.to_datetime(out.index)
    except (ValueError, TypeError):
        raise SignalError(f"{path}: first column must hold interval start times") from None
    out.index = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    if len(out) < 1 or not out.index.is_monotonic_increasing:
        raise SignalError(f"{path}: intervals must be in time order")
    return out


def node_split(row: pd.Series, n: int) -> tuple[float, ...]:
    """Settings for n GPUs in the plan's proportions (NaN: parked)."""
    total = float(row["gpus_running"] + row["gpus_off"])
    if total <= 0:
        return (math.nan,) * n
    k_hi = round(n * float(row["gpus_hi"]) / total)
    k_run = round(n * float(row["gpus_running"]) / total)
    hi, lo = float(row["setting_hi"]), float(row["setting_lo"])
    out = []
    for i in range(n):
        if i < k_hi:
            out.append(hi)
        elif i < k_run:
            out.append(lo if math.isfinite(lo) else hi)
        else:
            out.append(math.nan)
    return tuple(out)


class ScheduleSignal:
    """``poll(now)`` gives the plan's interval holding ``now``; after the last one, no constraint."""

    def __init__(self, path: str | Path, gpus: int, workload: int | None = None) -> None:
        self.path = Path(path)
        self.name = f"schedule {self.path.name}"
        self.frame = read_schedule(path, workload)
        self.gpus = gpus
        idx = self.frame.index
        self.step = (idx[1] - idx[0]) if len(idx) > 1 else pd.Timedelta(hours=1)

    @property
    def start(self) -> datetime:
        return self.frame.index[0].to_pydatetime()

    @property
    def end(self) -> datetime:
        return (self.frame.index[-1] + self.step).to_pydatetime()

    def interval(self, now: datetime) -> int | None:
        i = int(self.frame.index.searchsorted(pd.Timestamp(now), side="right")) - 1
        if i < 0 or now >= self.end:
            return None
        return i

    def poll(self, now: datetime) -> Directive:
        i = self.interval(now)
        if i is None:
            raise SignalError(f"{self.name}: {now.isoformat(timespec='seconds')} is outside the schedule "
                              f"({self.start.isoformat()} .. {self.end.isoformat()})")
        row = self.frame.iloc[i]
        total = float(row["gpus_running"] + row["gpus_off"])
        planned = float(row["tokens_per_s_curve"]) * self.gpus / total if total > 0 else 0.0
        start = self.frame.index[i]
        return Directive(self.name, f"interval {i} ({start:%Y-%m-%d %H:%M})", settings=node_split(row, self.gpus),
                         planned_tokens_per_s=planned, issued=None)

    def close(self) -> None:
        pass
