"""The run manifest: the one builder of ``manifest.json``, and the upgrade that lets readers load
older run directories.

Each fact has one key (schema 2): ``start_utc``/``end_utc``, ``command_line`` (argv as a list),
``host`` (hostname, platform, machine, cpus), ``software`` (versions read from installed metadata,
never by importing), ``devices``, ``plan``, ``profile`` as resolved, ``status``. Schema 1 wrote some
facts twice with different values (``started`` and ``start_utc``, ``command`` and ``command_line``,
``host`` overwritten by a bare hostname); ``upgrade`` maps it onto schema 2 for every reader.
"""

from __future__ import annotations

import os
import platform
import shlex
import socket
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

TOOL = "tokbench"
SCHEMA_VERSION = 2
#: schema versions this tokbench reads (older ones through ``upgrade``)
READABLE_VERSIONS = (1, 2)
#: statuses a run can have: ``stopped`` is a run that ended cleanly on its --max-time budget
RUN_STATUSES = ("running", "complete", "stopped", "interrupted", "failed")
#: statuses after which a run is over (``running`` with no live writer means it was killed)
ENDED_STATUSES = ("complete", "stopped", "interrupted", "failed")
#: keys under "comparison" that must match for two runs to be compared
COMPARISON_KEYS: tuple[str, ...] = ("gpu_model", "driver", "workload", "model_shape", "precision", "batch_sizes")
#: packages whose versions every manifest records (read from installed metadata, never imported)
SOFTWARE = ("tokbench", "torch", "transformers", "vllm", "nvidia-ml-py", "numpy", "pandas", "pyarrow")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def tool_version() -> str:
    try:
        return metadata.version(TOOL)
    except metadata.PackageNotFoundError:
        return "unknown"


def software_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def host_info() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
            "cpus": os.cpu_count()}


def build_manifest(*, run_id: str, backend: str, knob: str, devices: list[dict], workload: dict,
                   comparison: dict, profile: dict | None = None, plan: dict | None = None,
                   options: dict | None = None, reopen: dict | None = None,
                   idle_power_w: dict[str, float] | None = None, command_line: list[str] | None = None,
                   host: dict | None = None, start_utc: str | None = None) -> dict:
    """Everything a run records about itself, each fact once. ``comparison`` holds the metadata
    (``COMPARISON_KEYS``) that decides whether two runs may be compared."""
    return {
        "tool": TOOL,
        "tool_version": tool_version(),
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": "running",
        "start_utc": start_utc or utc_now(),
        "end_utc": None,
        "command_line": list(sys.argv if command_line is None else command_line),
        "host": host or host_info(),
        "pid": os.getpid(),
        "software": software_versions(),
        "backend": backend,
        "knob": knob,
        "devices": devices,
        "workload": workload,
        "comparison": comparison,
        "profile": profile or {},
        "plan": plan or {},
        "options": options or {},
        "reopen": reopen or {},
        "idle_power_w": idle_power_w or {},
    }


def upgrade(manifest: dict) -> dict:
    """A manifest of any readable schema as schema 2 (a copy; the file is left as it is)."""
    if manifest.get("schema_version") != 1:
        return dict(manifest)
    m = dict(manifest)
    started, ended, command = m.pop("started", None), m.pop("ended", None), m.pop("command", None)
    m["start_utc"] = m.get("start_utc") or started
    m["end_utc"] = m.get("end_utc") or ended
    if not m.get("command_line") and command:
        m["command_line"] = shlex.split(str(command))
    if not isinstance(m.get("host"), dict):
        m["host"] = {"hostname": str(m.get("host") or "")}
    m["schema_version"] = SCHEMA_VERSION
    m["upgraded_from"] = 1
    return m


def command_text(manifest: dict) -> str:
    """The command line as one shell-quoted string (for reports and curve files)."""
    return shlex.join(str(a) for a in manifest.get("command_line") or [])


def hostname(manifest: dict) -> str:
    host = manifest.get("host")
    return str(host.get("hostname", "")) if isinstance(host, dict) else str(host or "")


def incomparable(a: dict, b: dict) -> list[str]:
    """Why two manifests' runs may not be compared (empty when they may)."""
    ca, cb = a.get("comparison", {}), b.get("comparison", {})
    return [f"{k}: {ca.get(k)!r} vs {cb.get(k)!r}" for k in COMPARISON_KEYS if ca.get(k) != cb.get(k)]
