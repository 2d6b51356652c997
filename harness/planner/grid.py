"""The grid signal: a CSV of evenly spaced intervals with what the grid offers in each.

Columns: ``timestamp`` (required; ISO 8601), and any of ``available_mw`` (what the site may import),
``price_per_mwh``, ``carbon_kg_per_mwh``, ``event`` (1 in a grid stress event), plus one column of
MW per on-site generator that the site file names. A gap, a repeated or unordered timestamp, an
empty cell or a value that is not a finite number is refused with the row it is on: a planner fed a
silently interpolated signal would promise power the grid never offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import ProfileError

KNOWN_COLUMNS = ("available_mw", "price_per_mwh", "carbon_kg_per_mwh", "event")


@dataclass(frozen=True)
class GridSignal:
    """Validated intervals: ``frame`` is indexed by timestamp; ``step_h`` is the interval length."""

    frame: pd.DataFrame
    step_h: float
    source: str

    def __len__(self) -> int:
        return len(self.frame)

    def column(self, name: str) -> np.ndarray | None:
        return self.frame[name].to_numpy(dtype=float) if name in self.frame else None


def _row(df: pd.DataFrame, i: int) -> int:
    """The 1-based line in the file (header is line 1)."""
    return int(df.index[i]) + 2


def load_grid(path: Path, extra_columns: tuple[str, ...] = ()) -> GridSignal:
    """Read and validate a grid file; ``extra_columns`` are generation columns the site needs."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such grid file") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ProfileError(f"{path}: not a readable CSV grid file ({str(e).splitlines()[0]})") from e
    df.columns = [c.strip() for c in df.columns]
    if "timestamp" not in df.columns:
        raise ProfileError(f"{path}: grid file needs a 'timestamp' column")
    if len(df) == 0:
        raise ProfileError(f"{path}: grid file has no intervals")
    for name in extra_columns:
        if name not in df.columns:
            raise ProfileError(f"{path}: grid file has no column '{name}' (named by the site's generation)")
    numeric = [c for c in (*KNOWN_COLUMNS, *extra_columns) if c in df.columns]
    if not numeric:
        raise ProfileError(f"{path}: grid file has none of the columns {', '.join(KNOWN_COLUMNS)}")

    times = pd.to_datetime(df["timestamp"].str.strip(), errors="coerce", utc=True)
    if times.isna().any():
        i = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise ProfileError(f"{path}: line {_row(df, i)}: bad timestamp {df['timestamp'].iloc[i]!r}")
    times = times.dt.tz_localize(None)
    seconds = times.to_numpy().astype("datetime64[s]").astype(np.int64)
    steps = np.diff(seconds) if len(df) > 1 else np.array([], dtype=np.int64)
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise ProfileError(f"{path}: line {_row(df, i)}: timestamps must increase (repeat or out of order)")
    step_s = int(steps[0]) if len(steps) else 3600
    if (steps != step_s).any():
        i = int(np.flatnonzero(steps != step_s)[0]) + 1
        raise ProfileError(
            f"{path}: line {_row(df, i)}: gap in the grid signal ({steps[i - 1] / 3600:g} h after the "
            f"previous interval, expected every {step_s / 3600:g} h)"
        )

    values: dict[str, np.ndarray] = {}
    for c in numeric:
        col = pd.to_numeric(df[c].str.strip(), errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(col)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ProfileError(f"{path}: line {_row(df, i)}: bad value {df[c].iloc[i]!r} in column '{c}'")
        if c != "price_per_mwh" and (col < 0).any():
            i = int(np.flatnonzero(col < 0)[0])
            raise ProfileError(f"{path}: line {_row(df, i)}: negative value {col[i]:g} in column '{c}'")
        if c == "event" and not np.isin(col, (0.0, 1.0)).all():
            i = int(np.flatnonzero(~np.isin(col, (0.0, 1.0)))[0])
            raise ProfileError(f"{path}: line {_row(df, i)}: 'event' must be 0 or 1, not {col[i]:g}")
        values[c] = col
    frame = pd.DataFrame(values, index=pd.DatetimeIndex(times, name="timestamp"))
    return GridSignal(frame=frame, step_h=step_s / 3600.0, source=str(path))
