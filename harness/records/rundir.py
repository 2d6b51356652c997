"""Run directory records.

``Point`` is one measured window of one GPU at one setting, one batch and one phase; its fields
are the columns of ``points.csv``. ``RunDir`` writes and reads the run directory: a finished point
is never lost, and a damaged directory says exactly what is wrong with it.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import secrets
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pandas as pd

from harness.errors import RunDirError
from harness.records.filelock import held, holder_pid
from harness.records.manifest import (
    ENDED_STATUSES,
    READABLE_VERSIONS,
    RUN_STATUSES,
    SCHEMA_VERSION,
    TOOL,
    upgrade,
    utc_now,
)


@dataclass(frozen=True)
class Point:
    """One measured window. Energy comes from the counter where the part has one
    (``energy_source == "counter"``); ``joules_integrated`` is the cross-check from sampled
    power; ``true_joules`` is the simulator's ground truth (empty on real hardware)."""

    point_index: int
    gpu_index: int
    gpu_uuid: str
    knob: str  # "power_limit_w" | "sm_clock_mhz" | "observe"
    setting: float  # requested W or MHz (the current value when observing)
    enforced: float  # what the device reported after setting
    batch_size: int
    phase: str
    repeat: int
    window_start_s: float
    window_end_s: float
    seconds: float
    steps: int
    input_tokens: int
    output_tokens: int
    tokens: int
    joules: float
    joules_integrated: float | None
    true_joules: float | None
    energy_source: str  # "counter" | "integrated"
    power_mean_w: float
    power_p99_w: float | None
    power_max_1s_w: float | None
    sm_clock_mean_mhz: float | None
    mem_clock_mean_mhz: float | None
    temp_start_c: float | None
    temp_end_c: float | None
    warmup_s: float
    tokens_per_s: float
    tokens_per_j: float
    j_per_token: float
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    tokens_per_s_per_user: float | None = None
    host_joules: float | None = None
    #: share of window time each clock-event reason was active, "name=share;..." (see CLOCK_EVENT_NAMES)
    clock_event_shares: str = ""
    #: validity flag names, ";"-separated; empty when the point is clean
    flags: str = ""
    extra: dict = field(default_factory=dict, compare=False, repr=False)
    # --- serving under load (endpoint workloads, docs/serving.md); None for every other workload.
    # Means are ttft_ms / tpot_ms above; latencies are over requests that ended in the window.
    ttft_ms_p50: float | None = None
    ttft_ms_p90: float | None = None
    ttft_ms_p99: float | None = None
    tpot_ms_p50: float | None = None
    tpot_ms_p90: float | None = None
    tpot_ms_p99: float | None = None
    itl_ms_mean: float | None = None
    itl_ms_p50: float | None = None
    itl_ms_p90: float | None = None
    itl_ms_p99: float | None = None
    e2e_ms_mean: float | None = None
    e2e_ms_p50: float | None = None
    e2e_ms_p90: float | None = None
    e2e_ms_p99: float | None = None
    output_tokens_per_s: float | None = None
    requests_ok: int | None = None
    requests_errors: int | None = None
    requests_timeouts: int | None = None
    #: requests (and their output tokens) per second that met the profile's TTFT/TPOT targets
    goodput_rps: float | None = None
    goodput_tokens_per_s: float | None = None
    #: time-averaged requests in flight (closed loop: the concurrency, if the client kept up)
    mean_in_flight: float | None = None

    @property
    def valid(self) -> bool:
        return not self.flags


POINT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Point) if f.name != "extra")
#: columns added after ``extra`` (all optional): a points.csv written before them lacks them and
#: still opens; they read back empty, and a resumed run keeps writing its own columns
_FIELD_NAMES = [f.name for f in fields(Point)]
_LATE_COLUMNS: tuple[str, ...] = tuple(_FIELD_NAMES[_FIELD_NAMES.index("extra") + 1:])


# --------------------------------------------------------------------------------------------
# run directory

MANIFEST = "manifest.json"
POINTS = "points.csv"
SAMPLES_DIR = "samples"
#: samples of points whose row was never written (a kill between the two), kept for forensics
ORPHANS_DIR = "orphans"
LOCK = ".lock"

_STR_FIELDS = tuple(f.name for f in fields(Point) if f.type in ("str", str))
_INT_FIELDS = tuple(f.name for f in fields(Point) if f.type in ("int", int))


def new_run_id(prefix: str) -> str:
    """``<prefix>-YYYYmmdd-HHMMSS-xxxxxxxx`` in UTC; sorts by start time. Runs started in the same second
    (a node's GPUs launched together) differ by 32 random bits: two collide once in four billion pairs
    (16 bits collided in ~2% of 50 ids drawn at once, and a collision refuses the second run)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{secrets.token_hex(4)}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(float(value))  # float(): numpy scalars repr as np.float64(...)
    return value


def point_key(gpu_uuid: str, setting: float, batch_size: int, repeat: int, phase: str) -> tuple:
    """What identifies a planned measurement of one GPU: resume skips exactly these."""
    return (str(gpu_uuid), float(setting), int(batch_size), int(repeat), str(phase))


class RunDir:
    """``results/<run-id>/``: ``manifest.json``, ``points.csv`` (one row per finished point,
    appended and fsynced), ``samples/point-NNNN.parquet`` (written before its row, atomically).

    This class owns every write to a run directory. The writer holds an advisory lock on ``.lock``
    for its lifetime, so a second writer is refused and a reader can tell a live run from one whose
    writer died (``damaged``). Readers get the manifest upgraded to the current schema."""

    def __init__(self, path: Path, manifest: dict) -> None:
        self.path = path
        self.manifest = manifest
        self._lockf: IO | None = None
        self.columns: tuple[str, ...] = POINT_COLUMNS  # what this directory's points.csv holds

    # --- create / open --------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, run_id: str | None, manifest: dict) -> RunDir:
        """Start a new run directory with ``manifest`` (from ``records.manifest.build_manifest``);
        never overwrites an existing one."""
        root = Path(root)
        run_id = run_id or new_run_id("run")
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise RunDirError(f"bad run id '{run_id}': use letters, digits, '-' and '_'")
        path = root / run_id
        try:
            root.mkdir(parents=True, exist_ok=True)
            path.mkdir()
        except FileExistsError as err:
            raise RunDirError(f"{path} already exists: tokbench never overwrites a run; choose another --run-id "
                              "or resume that run") from err
        except OSError as e:
            raise RunDirError(f"cannot create run directory {path}: {e.strerror}") from e
        (path / SAMPLES_DIR).mkdir()
        run = cls(path, {**manifest, "run_id": run_id})
        run._take_lock()
        run._write_manifest()
        with open(path / POINTS, "w", newline="") as f:
            csv.writer(f).writerow(POINT_COLUMNS)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(path)
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """Open a run for reading; says exactly what is wrong when it cannot."""
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"{path}: no such run directory")
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise RunDirError(f"{path}: not a tokbench run (no {MANIFEST})")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunDirError(f"{mpath}: damaged manifest (not valid JSON: {e})") from e
        if not isinstance(manifest, dict) or manifest.get("tool") != TOOL:
            raise RunDirError(f"{mpath}: not a tokbench manifest (tool is {manifest.get('tool')!r})"
                              if isinstance(manifest, dict) else f"{mpath}: not a tokbench manifest")
        version = manifest.get("schema_version")
        if version not in READABLE_VERSIONS:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            readable = ", ".join(map(str, READABLE_VERSIONS))
            raise RunDirError(f"{path}: schema version {version!r}, this tokbench reads versions {readable}"
                              + ("; upgrade tokbench to read it" if newer else ""))
        ppath = path / POINTS
        if not ppath.is_file():
            raise RunDirError(f"{path}: {POINTS} is missing")
        with open(ppath, newline="") as f:
            header = next(csv.reader(f), [])
        late = tuple(header) == POINT_COLUMNS[:len(header)] and set(POINT_COLUMNS[len(header):]) <= set(_LATE_COLUMNS)
        if tuple(header) != POINT_COLUMNS and not late:
            missing = [c for c in POINT_COLUMNS if c not in header]
            extra = [c for c in header if c not in POINT_COLUMNS]
            raise RunDirError(f"{ppath}: columns differ from schema {SCHEMA_VERSION}"
                              + (f"; missing {', '.join(missing)}" if missing else "")
                              + (f"; unexpected {', '.join(extra)}" if extra else "")
                              + ("; same columns in another order" if not missing and not extra else ""))
        run = cls(path, upgrade(manifest))
        run.columns = tuple(header)
        return run

    @classmethod
    def resume(cls, path: Path) -> tuple[RunDir, list[str]]:
        """Open an unfinished run for writing again: take its lock (refused while another process
        writes it), cut a row torn by a kill, and move aside samples whose row was never written,
        so the point they belong to is measured again. Returns the run and what was repaired."""
        run = cls.open(path)
        if run.manifest.get("status") == "complete":
            raise RunDirError(f"{run.path}: the run is complete; nothing to resume")
        try:
            run._take_lock()
        except BlockingIOError as err:
            pid = holder_pid(run.path / LOCK) or "?"
            raise RunDirError(f"{run.path}: another process is writing this run (pid {pid}); "
                              "two writers would interleave its rows") from err
        repaired = run._repair()
        return run, repaired

    # --- writing ------------------------------------------------------------------------------
    def _take_lock(self) -> None:
        f = open(self.path / LOCK, "a+")  # noqa: SIM115 (held for the writer's lifetime)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lockf = f

    def _repair(self) -> list[str]:
        """Make a killed run's files consistent again (called with the lock held)."""
        done: list[str] = []
        text, partial = self._complete_text()
        if partial:
            with open(self.path / POINTS, "r+", newline="") as f:
                f.truncate(len(text.encode()))
                f.flush()
                os.fsync(f.fileno())
            done.append(f"dropped a row cut short by the kill ({partial[:40]!r}...); that point is measured again")
        indices = set(self.points()["point_index"].tolist())
        sdir = self.path / SAMPLES_DIR
        for tmp in sdir.glob(".*.tmp"):
            tmp.unlink()
        for f in sorted(sdir.glob("point-*.parquet")):
            idx = _sample_index(f)
            if idx is not None and idx not in indices:
                (sdir / ORPHANS_DIR).mkdir(exist_ok=True)
                os.replace(f, sdir / ORPHANS_DIR / f.name)
                done.append(f"samples of point {idx} had no row (killed while recording it): moved to "
                            f"{SAMPLES_DIR}/{ORPHANS_DIR}/, the point is measured again")
        return done

    def next_point_index(self) -> int:
        """The first point index never used in this directory (rows, samples and orphans)."""
        used = set(self.points()["point_index"].tolist())
        sdir = self.path / SAMPLES_DIR
        for f in list(sdir.glob("point-*.parquet")) + list((sdir / ORPHANS_DIR).glob("point-*.parquet")):
            idx = _sample_index(f)
            if idx is not None:
                used.add(idx)
        return max(used) + 1 if used else 0

    def done_keys(self) -> set[tuple]:
        """``point_key`` of every recorded row (per GPU: a kill between two GPUs' rows leaves the
        other GPU's point to measure)."""
        return {point_key(r.gpu_uuid, r.setting, r.batch_size, r.repeat, r.phase) for r in self.points().itertuples()}

    def records(self) -> list[Point]:
        """Every finished point as a ``Point`` (what a resumed run, or a search resumed from it, knows)."""
        names = {f.name for f in fields(Point)} - {"extra"}
        out = []
        for row in self.points().to_dict("records"):
            clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items() if k in names}
            clean["flags"] = clean.get("flags") or ""
            clean["clock_event_shares"] = clean.get("clock_event_shares") or ""
            out.append(Point(**clean))
        return out

    def recorded(self) -> dict[tuple, Point]:
        """Every finished point by its ``point_key``: what a resumed run skips, and what a search resumed
        from it has already learnt."""
        return {point_key(p.gpu_uuid, p.setting, p.batch_size, p.repeat, p.phase): p for p in self.records()}

    def samples_path(self, point_index: int) -> Path:
        return self.path / SAMPLES_DIR / f"point-{point_index:04d}.parquet"

    def append_point(self, point: Point, samples: pd.DataFrame) -> None:
        """Samples first (atomically), then the points.csv row (flushed and fsynced): a row in
        points.csv always has its samples on disk."""
        self.write_samples(point.point_index, samples)
        self.write_row(point)

    def write_samples(self, point_index: int, samples: pd.DataFrame) -> None:
        target = self.samples_path(point_index)
        if target.exists():
            raise RunDirError(f"{target}: point {point_index} already recorded")
        buf = io.BytesIO()
        samples.to_parquet(buf, index=False)
        _write_atomic(target, buf.getvalue())

    def write_row(self, point: Point) -> None:
        line = io.StringIO()
        csv.writer(line).writerow([_csv_cell(getattr(point, c)) for c in self.columns])
        with open(self.path / POINTS, "a", newline="") as f:
            f.write(line.getvalue())
            f.flush()
            os.fsync(f.fileno())

    def _write_manifest(self) -> None:
        _write_atomic(self.path / MANIFEST, (json.dumps(self.manifest, indent=2, default=str) + "\n").encode())

    def update_manifest(self, **fields_: object) -> None:
        """Rewrite the manifest atomically with ``fields_`` changed (e.g. status); an ended status
        stamps ``end_utc``."""
        status = fields_.get("status")
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"unknown run status '{status}'")
        if status in ENDED_STATUSES and "end_utc" not in fields_:
            fields_["end_utc"] = utc_now()
        elif status == "running":
            fields_.setdefault("end_utc", None)
        self.manifest = {**self.manifest, **fields_}
        self._write_manifest()

    def close(self) -> None:
        if self._lockf is not None:
            self._lockf.close()
            self._lockf = None

    # --- reading ------------------------------------------------------------------------------
    def _complete_text(self) -> tuple[str, str]:
        """points.csv split into its complete lines and a trailing partial line (a killed write)."""
        text = (self.path / POINTS).read_text(errors="replace")
        if text.endswith("\n") or not text:
            return text, ""
        cut = text.rfind("\n") + 1
        return text[:cut], text[cut:]

    def points(self) -> pd.DataFrame:
        """Every finished point. A truncated last line is left out, and so is any row a crash
        damaged (wrong field count, a non-number where an integer belongs); ``damaged`` reports both,
        so one bad row never costs the rest of the run."""
        df, _ = self._parse_points()
        return df

    def _parse_points(self) -> tuple[pd.DataFrame, int]:
        text, _ = self._complete_text()
        try:
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, on_bad_lines="skip",
                             engine="python")
        except (ValueError, pd.errors.ParserError) as e:
            raise RunDirError(f"{self.path / POINTS}: cannot be parsed ({str(e).splitlines()[0]})") from e
        n_lines = max(text.count("\n") - 1, 0)
        for c in POINT_COLUMNS:
            if c not in df.columns:
                if c not in _LATE_COLUMNS:
                    raise RunDirError(f"{self.path / POINTS}: column {c} is missing")
                df[c] = ""  # a late column this directory predates: reads back empty
        ints = df[list(_INT_FIELDS)].apply(pd.to_numeric, errors="coerce")
        ok = ints.notna().all(axis=1)
        df = df[ok].reset_index(drop=True)
        for c in _INT_FIELDS:
            df[c] = ints.loc[ok, c].astype("int64").to_numpy()
        for c in POINT_COLUMNS:
            if c not in _STR_FIELDS and c not in _INT_FIELDS:
                df[c] = pd.to_numeric(df[c].replace("", None), errors="coerce")
        return df, n_lines - len(df)

    def samples(self, point_index: int) -> pd.DataFrame:
        path = self.samples_path(point_index)
        if not path.is_file():
            raise RunDirError(f"{path}: no samples for point {point_index}")
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as e:
            raise RunDirError(f"{path}: damaged samples file ({e})") from e

    def writer_alive(self) -> bool:
        return self._lockf is not None or held(self.path / LOCK)

    def damaged(self) -> list[str]:
        """What is wrong with this run directory, one line each (empty when nothing is)."""
        out: list[str] = []
        _, partial = self._complete_text()
        if partial:
            out.append(f"{POINTS}: last line is truncated (a point was being written when the run stopped): "
                       f"{partial[:60]!r}")
        try:
            pts, bad_rows = self._parse_points()
            indices = set(pts["point_index"].tolist())
            if bad_rows:
                out.append(f"{POINTS}: {bad_rows} damaged row(s) left out")
        except RunDirError as e:
            out.append(str(e))
            indices = set()
        sdir = self.path / SAMPLES_DIR
        files = sorted(sdir.glob("point-*.parquet")) if sdir.is_dir() else []
        for f in files:
            idx = _sample_index(f)
            if idx is None:
                out.append(f"{SAMPLES_DIR}/{f.name}: unexpected file name")
            elif idx not in indices:
                out.append(f"{SAMPLES_DIR}/{f.name}: point {idx} has samples but no row in {POINTS} "
                           "(the run stopped while recording it)")
        for idx in sorted(indices):
            if not self.samples_path(idx).is_file():
                out.append(f"{POINTS}: point {idx} has no samples file")
        for tmp in sorted(sdir.glob(".*.tmp")) if sdir.is_dir() else []:
            out.append(f"{SAMPLES_DIR}/{tmp.name}: unfinished samples write")
        if self.manifest.get("status") == "running" and not self.writer_alive():
            out.append("manifest status is 'running' but no process is writing this run (it was killed); "
                       "any point being measured then is lost")
        return out


def _sample_index(path: Path) -> int | None:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return None
