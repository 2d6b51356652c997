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
import platform
import secrets
import socket
import sys
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO

import pandas as pd

from harness.errors import RunDirError

SCHEMA_VERSION = 1


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

TOOL = "tokbench"
MANIFEST = "manifest.json"
POINTS = "points.csv"
SAMPLES_DIR = "samples"
LOCK = ".lock"
RUN_STATUSES = ("running", "complete", "interrupted", "failed")
#: manifest keys under "comparison" that must match for two runs to be compared
COMPARISON_KEYS: tuple[str, ...] = ("gpu_model", "driver", "workload", "model_shape", "precision", "batch_sizes")
#: packages whose versions every manifest records (read from installed metadata, never imported)
SOFTWARE = ("tokbench", "torch", "transformers", "vllm", "nvidia-ml-py", "numpy", "pandas", "pyarrow")

_STR_FIELDS = tuple(f.name for f in fields(Point) if f.type in ("str", str))
_INT_FIELDS = tuple(f.name for f in fields(Point) if f.type in ("int", int))


def new_run_id(prefix: str) -> str:
    """``<prefix>-YYYYmmdd-HHMMSS-xxxx`` in UTC; sorts by start time, unique enough to never
    collide on one machine."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{secrets.token_hex(2)}"


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def software_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def host_info() -> dict[str, object]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
            "cpus": os.cpu_count()}


def base_manifest(comparison: dict | None = None) -> dict:
    """What every run records about itself; the caller adds devices, profile and ``comparison``
    (keys ``COMPARISON_KEYS``: the metadata that decides whether two runs may be compared)."""
    try:
        tool_version = metadata.version("tokbench")
    except metadata.PackageNotFoundError:
        tool_version = "unknown"
    return {
        "tool": TOOL, "tool_version": tool_version, "schema_version": SCHEMA_VERSION,
        "host": host_info(), "software": software_versions(), "command_line": list(sys.argv),
        "pid": os.getpid(), "start_utc": _utc_now(), "end_utc": None, "status": "running",
        "comparison": dict(comparison or {}),
    }


def incomparable(a: dict, b: dict) -> list[str]:
    """Why two manifests' runs may not be compared (empty when they may)."""
    ca, cb = a.get("comparison", {}), b.get("comparison", {})
    return [f"{k}: {ca.get(k)!r} vs {cb.get(k)!r}" for k in COMPARISON_KEYS if ca.get(k) != cb.get(k)]


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


class RunDir:
    """``results/<run-id>/``: ``manifest.json``, ``points.csv`` (one row per finished point,
    appended and fsynced), ``samples/point-NNNN.parquet`` (written before its row, atomically).

    The writer holds an advisory lock on ``.lock`` for its lifetime, so a reader can tell a live
    run from one whose writer died (``damaged``)."""

    def __init__(self, path: Path, manifest: dict) -> None:
        self.path = path
        self.manifest = manifest
        self._lockf: IO | None = None
        self.columns: tuple[str, ...] = POINT_COLUMNS  # what this directory's points.csv holds

    # --- create / open --------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, run_id: str | None, manifest: dict) -> RunDir:
        """Start a new run directory; never overwrites an existing one."""
        root = Path(root)
        run_id = run_id or new_run_id("run")
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise RunDirError(f"bad run id '{run_id}': use letters, digits, '-' and '_'")
        path = root / run_id
        try:
            root.mkdir(parents=True, exist_ok=True)
            path.mkdir()
        except FileExistsError:
            raise RunDirError(f"{path} already exists: tokbench never overwrites a run; choose another --run-id "
                              "or resume that run") from None
        except OSError as e:
            raise RunDirError(f"cannot create run directory {path}: {e.strerror}") from None
        (path / SAMPLES_DIR).mkdir()
        full = {**base_manifest(), **manifest, "run_id": run_id, "schema_version": SCHEMA_VERSION}
        full.setdefault("status", "running")
        run = cls(path, full)
        run._take_lock()
        _write_atomic(path / MANIFEST, (json.dumps(full, indent=2, default=str) + "\n").encode())
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
            raise RunDirError(f"{mpath}: damaged manifest (not valid JSON: {e})") from None
        if not isinstance(manifest, dict) or manifest.get("tool") != TOOL:
            raise RunDirError(f"{mpath}: not a tokbench manifest (tool is {manifest.get('tool')!r})"
                              if isinstance(manifest, dict) else f"{mpath}: not a tokbench manifest")
        version = manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            raise RunDirError(f"{path}: schema version {version!r}, this tokbench reads version {SCHEMA_VERSION}"
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
        run = cls(path, manifest)
        run.columns = tuple(header)
        return run

    # --- writing ------------------------------------------------------------------------------
    def _take_lock(self) -> None:
        self._lockf = open(self.path / LOCK, "a+")  # noqa: SIM115 (held for the writer's lifetime)
        fcntl.flock(self._lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)

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

    def update_manifest(self, **fields_: object) -> None:
        """Rewrite the manifest atomically with ``fields_`` changed (e.g. status, end_utc)."""
        status = fields_.get("status")
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"unknown run status '{status}'")
        if status in ("complete", "interrupted", "failed") and "end_utc" not in fields_:
            fields_["end_utc"] = _utc_now()
        self.manifest = {**self.manifest, **fields_}
        _write_atomic(self.path / MANIFEST, (json.dumps(self.manifest, indent=2, default=str) + "\n").encode())

    def close(self) -> None:
        if self._lockf is not None:
            self._lockf.close()
            self._lockf = None

    # --- reading ------------------------------------------------------------------------------
    def _complete_text(self) -> tuple[str, str]:
        """points.csv split into its complete lines and a trailing partial line (a killed write)."""
        text = (self.path / POINTS).read_text()
        if text.endswith("\n") or not text:
            return text, ""
        cut = text.rfind("\n") + 1
        return text[:cut], text[cut:]

    def points(self) -> pd.DataFrame:
        """Every finished point (a truncated last line is left out; ``damaged`` reports it)."""
        text, _ = self._complete_text()
        df = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values={c: [""] for c in POINT_COLUMNS
                                                                              if c not in _STR_FIELDS})
        for c in _STR_FIELDS:
            df[c] = df[c].astype(str)
        for c in _INT_FIELDS:
            df[c] = df[c].astype("int64")
        for c in POINT_COLUMNS:
            if c not in df.columns:  # a late column this directory predates
                df[c] = float("nan")
        return df

    def samples(self, point_index: int) -> pd.DataFrame:
        path = self.samples_path(point_index)
        if not path.is_file():
            raise RunDirError(f"{path}: no samples for point {point_index}")
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as e:
            raise RunDirError(f"{path}: damaged samples file ({e})") from None

    def _writer_alive(self) -> bool:
        if self._lockf is not None:
            return True
        lock = self.path / LOCK
        if not lock.exists():
            return False
        with open(lock, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False

    def damaged(self) -> list[str]:
        """What is wrong with this run directory, one line each (empty when nothing is)."""
        out: list[str] = []
        _, partial = self._complete_text()
        if partial:
            out.append(f"{POINTS}: last line is truncated (a point was being written when the run stopped): "
                       f"{partial[:60]!r}")
        try:
            pts = self.points()
            indices = set(pts["point_index"].tolist())
        except (ValueError, KeyError, pd.errors.ParserError) as e:
            out.append(f"{POINTS}: cannot be parsed ({e})")
            indices = set()
        sdir = self.path / SAMPLES_DIR
        files = sorted(sdir.glob("point-*.parquet")) if sdir.is_dir() else []
        for f in files:
            try:
                idx = int(f.stem.split("-", 1)[1])
            except ValueError:
                out.append(f"{SAMPLES_DIR}/{f.name}: unexpected file name")
                continue
            if idx not in indices:
                out.append(f"{SAMPLES_DIR}/{f.name}: point {idx} has samples but no row in {POINTS} "
                           "(the run stopped while recording it)")
        for idx in sorted(indices):
            if not self.samples_path(idx).is_file():
                out.append(f"{POINTS}: point {idx} has no samples file")
        for tmp in sorted(sdir.glob(".*.tmp")) if sdir.is_dir() else []:
            out.append(f"{SAMPLES_DIR}/{tmp.name}: unfinished samples write")
        if self.manifest.get("status") == "running" and not self._writer_alive():
            out.append("manifest status is 'running' but no process is writing this run (it was killed); "
                       "any point being measured then is lost")
        return out
