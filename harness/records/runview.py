"""Read-only view of a run directory for the readers (analysis, report, export, compare).

Readers never write a sweep's records, and must survive what a killed or foreign sweep leaves
behind: the manifest and ``points.csv`` are checked and every problem is one ``RunDirError`` line;
telemetry Parquet files are read lazily and defensively (missing columns are simply absent, a
damaged file is skipped and reported), because a report should still come out of a run whose last
point was cut short.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.errors import RunDirError
from harness.records.rundir import POINT_COLUMNS, RunDir

#: telemetry columns the report uses (others in the files are ignored)
TELEMETRY_COLUMNS = ("t_s", "power_instant_w", "power_average_w", "sm_clock_mhz", "temperature_c", "clock_events")
_NUMERIC = [c for c in POINT_COLUMNS if c not in ("gpu_uuid", "knob", "phase", "energy_source",
                                                  "clock_event_shares", "flags")]
_POINT_FILE = re.compile(r"point-(\d+)")

#: sample sources that are sampler readings (the rest: power history, counter ticks, ground truth)
_POLL_SOURCES = pa.array(["poll", "edge"])


@dataclass(frozen=True)
class PartInfo:
    """The part a run measured (first GPU's identity; a node holds one kind of part)."""

    name: str
    architecture: str
    backend: str
    driver: str
    uuids: tuple[str, ...]
    power_limit_min_w: float
    power_limit_max_w: float
    power_limit_default_w: float
    max_sm_clock_mhz: int


@dataclass(frozen=True)
class Telemetry:
    """Samples of one point. ``history`` is the driver's 50 Hz power history (t_s, power_w)."""

    point_index: int
    samples: pd.DataFrame
    history: pd.DataFrame | None = None


@dataclass(frozen=True)
class RunData:
    """One run directory, loaded: manifest, points (one row per GPU, setting, batch, phase,
    repeat), and lazy access to its telemetry."""

    path: Path
    manifest: dict[str, Any]
    points: pd.DataFrame
    problems: tuple[str, ...] = field(default=())

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)

    @property
    def knob(self) -> str:
        knob = self.manifest.get("knob")
        if knob is None and len(self.points):
            knob = str(self.points["knob"].iloc[0])
        return str(knob or "power_limit_w")

    @property
    def workload(self) -> dict[str, Any]:
        return dict(self.manifest.get("workload") or {})

    @property
    def comparison_key(self) -> dict[str, Any]:
        """The workload fields that must match for two runs to be compared
        (``WorkloadSpec.comparison_key``, the one definition of them)."""
        from dataclasses import fields

        from workloads.base import WorkloadSpec

        known = {f.name for f in fields(WorkloadSpec)}
        w = {k: v for k, v in self.workload.items() if k in known}
        try:
            return WorkloadSpec(**w).comparison_key()
        except TypeError:  # a manifest without a complete workload: compare what it has
            keys = WorkloadSpec("", "", "", "", "", 0).comparison_key().keys()
            return {k: w.get(k) for k in keys}

    @cached_property
    def part(self) -> PartInfo:
        devs = self.manifest.get("devices") or []
        d = devs[0] if devs else {}
        lim = d.get("power_limits") or {}
        settings = self.points["setting"] if len(self.points) else pd.Series([0.0])
        return PartInfo(
            name=str(d.get("name") or "unknown GPU"),
            architecture=str(d.get("architecture") or ""),
            backend=str(d.get("backend") or self.manifest.get("backend") or "sim"),
            driver=str(d.get("driver") or ""),
            uuids=tuple(str(x.get("uuid", "")) for x in devs if x.get("uuid")),
            power_limit_min_w=float(lim.get("min_w", settings.min())),
            power_limit_max_w=float(lim.get("max_w", settings.max())),
            power_limit_default_w=float(lim.get("default_w", lim.get("max_w", settings.max()))),
            max_sm_clock_mhz=int(d.get("max_sm_clock_mhz") or 0),
        )

    @property
    def idle_power_w(self) -> float | None:
        idle = self.manifest.get("idle_power_w") or {}
        vals = [float(v) for v in (idle.values() if isinstance(idle, dict) else [idle]) if v is not None]
        return float(np.mean(vals)) if vals else None

    def sample_files(self) -> dict[int, list[Path]]:
        """Telemetry files per point index (a point may have a samples file and a history file)."""
        out: dict[int, list[Path]] = {}
        for f in sorted((self.path / "samples").glob("*.parquet")):
            m = _POINT_FILE.search(f.name)
            if m:
                out.setdefault(int(m.group(1)), []).append(f)
        return out

    def telemetry(self, point_index: int, columns: tuple[str, ...] = TELEMETRY_COLUMNS) -> Telemetry | None:
        """The samples (and power history) of one point, or None when it has none readable."""
        files = self.sample_files().get(point_index, [])
        return _read_telemetry(point_index, files, columns)

    def all_telemetry(self, columns: tuple[str, ...] = TELEMETRY_COLUMNS) -> list[Telemetry]:
        out = []
        for idx, files in self.sample_files().items():
            t = _read_telemetry(idx, files, columns)
            if t is not None:
                out.append(t)
        return out


def _read_telemetry(point_index: int, files: list[Path], columns: tuple[str, ...]) -> Telemetry | None:
    """One point's samples. A sweep writes one file whose ``source`` column tells sampler polls
    ("poll", "edge") from the driver's power history ("history", ``power_w``); a file of history
    alone (``t_s``, ``power_w``) is read as history too. Rows are split in Arrow, before pandas."""
    samples: list[pd.DataFrame] = []
    history: list[pd.DataFrame] = []
    for f in files:
        try:
            names = set(pq.read_schema(f).names)
            want = [c for c in dict.fromkeys((*columns, "gpu_index", "source", "power_w")) if c in names]
            table = pq.read_table(f, columns=want)
        except Exception:  # a damaged file (killed writer) must not stop a report
            continue
        poll_cols = [c for c in want if c not in ("source", "power_w")]
        hist_cols = [c for c in ("t_s", "power_w", "gpu_index") if c in names]
        if "source" in names:
            src = table.column("source").cast("string")
            history.append(table.filter(pc.equal(src, "history")).select(hist_cols).to_pandas())
            samples.append(table.filter(pc.is_in(src, value_set=_POLL_SOURCES)).select(poll_cols).to_pandas())
        elif "power_w" in names and "power_instant_w" not in names:
            history.append(table.select(hist_cols).to_pandas())
        else:
            samples.append(table.select(poll_cols).to_pandas())
    samples = [s for s in samples if len(s)]
    history = [h for h in history if len(h)]
    if not samples and not history:
        return None
    s = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame({"t_s": []})
    h = pd.concat(history, ignore_index=True) if history else None
    return Telemetry(point_index, s, h)


def load_run(path: str | Path) -> RunData:
    """Load a run directory for reading; every problem that stops reading is one ``RunDirError``
    line, and what can be read around (a truncated last row, a missing samples file) is listed in
    ``problems``."""
    p = Path(path)
    rd = RunDir.open(p)  # checks the manifest, its tool and schema version, and the points header
    try:
        points = rd.points()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise RunDirError(f"{p / 'points.csv'}: damaged points file ({str(e).splitlines()[0]})") from e
    problems = list(rd.damaged())
    for c in _NUMERIC:
        if c in points.columns:
            points[c] = pd.to_numeric(points[c], errors="coerce")
    bad = points[["setting", "tokens_per_s", "tokens_per_j"]].isna().any(axis=1)
    if bad.any():
        problems.append(f"{int(bad.sum())} damaged row(s) in points.csv skipped")
        points = points[~bad].reset_index(drop=True)
    for c in ("flags", "clock_event_shares", "phase", "knob"):
        points[c] = points[c].fillna("").astype(str).replace("nan", "")
    if not len(points):
        raise RunDirError(f"{p}: no finished point in the run" + (f" ({problems[0]})" if problems else ""))
    return RunData(p, rd.manifest, points, tuple(problems))
