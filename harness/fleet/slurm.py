"""The only code that talks to Slurm: value validation, batch-script rendering, ``sbatch``, job
states, and the mapping from the GPUs Slurm allocated to NVML UUIDs.

Why plain ``sbatch`` with a generated script (and not submitit): a fleet task runs a command
(`tokbench sweep`), not a pickled Python callable, so submitit's main feature buys nothing while
adding a dependency and a second Python environment contract on the nodes; a generated script is
what an operator can read (``--dry-run`` prints it), what a site's admins already review, and it
needs nothing on the nodes but Slurm and tokbench itself.

Safety: values that Slurm parses (partition, account, time, job name, array spec) are checked
against narrow patterns and refused otherwise; the only path that enters the script is quoted with
``shlex.quote``; everything else (profile, sweep options) stays in ``campaign.json`` and reaches
`tokbench sweep` as an argv list, never through a shell.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import TokbenchError, UsageError


class SlurmError(TokbenchError):
    """Slurm is missing or refused a request."""


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_NAME_LIST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}(,[A-Za-z0-9][A-Za-z0-9_.\-]{0,63})*$")
# Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, and the unlimited words.
_TIME_RE = re.compile(r"^(\d{1,6}(:\d{1,2}){0,2}|\d{1,4}-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE)$")


def check_partition(value: str) -> str:
    """A partition name, or a comma-separated list of them (Slurm takes the first that fits)."""
    if not _NAME_LIST_RE.match(value):
        raise UsageError(
            f"partition {value!r} refused: use letters, digits, '_', '.', '-' (comma-separated list allowed)"
        )
    return value


def check_account(value: str) -> str:
    if not _NAME_RE.match(value):
        raise UsageError(f"account {value!r} refused: use letters, digits, '_', '.', '-'")
    return value


def check_time(value: str) -> str:
    if not _TIME_RE.match(value):
        raise UsageError(f"time {value!r} refused: use a Slurm time such as 90, 2:00:00 or 1-12:00:00")
    return value


def check_path_for_slurm(path: Path) -> Path:
    """Slurm expands '%' patterns in output paths and the script is line-based: refuse both."""
    text = str(path)
    if "%" in text or any(ord(c) < 32 for c in text):
        raise UsageError(f"path {text!r} refused: it must not contain '%' or control characters")
    return path


def array_spec(tasks: Iterable[int]) -> str:
    """Compress task indices into Slurm's array syntax: [0,1,2,5,7,8] -> '0-2,5,7-8'."""
    idx = sorted(set(tasks))
    if not idx or idx[0] < 0:
        raise UsageError("a job array needs at least one non-negative task index")
    parts: list[str] = []
    start = prev = idx[0]
    for i in idx[1:] + [None]:  # type: ignore[list-item]
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def parse_array_spec(spec: str) -> list[int]:
    """Inverse of ``array_spec``; also accepts a throttle suffix ('0-3%2') and steps ('0-6:2')."""
    spec = spec.split("%", 1)[0]
    out: list[int] = []
    for part in spec.split(","):
        if not part:
            continue
        step = 1
        if ":" in part:
            part, step_s = part.split(":", 1)
            step = int(step_s)
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1, step))
        else:
            out.append(int(part))
    return out


@dataclass(frozen=True)
class BatchRequest:
    """What one ``sbatch`` call asks for. Build it only through ``make_batch_request``: every field
    has been validated there."""

    job_name: str
    tasks: tuple[int, ...]
    gpus_per_node: int
    request_gres: bool
    partition: str | None
    account: str | None
    time: str | None
    exclusive: bool
    cpus_per_task: int | None
    workdir: Path
    log_dir: Path
    command: tuple[str, ...]  # the per-task command; "$SLURM_ARRAY_TASK_ID" is appended


def make_batch_request(
    *,
    job_name: str,
    tasks: Iterable[int],
    gpus_per_node: int,
    request_gres: bool,
    partition: str | None,
    account: str | None,
    time: str | None,
    exclusive: bool,
    workdir: Path,
    cpus_per_task: int | None = None,
    log_dir: Path,
    command: Iterable[str],
) -> BatchRequest:
    if not _NAME_RE.match(job_name):
        raise UsageError(f"job name {job_name!r} refused")
    if gpus_per_node < 1:
        raise UsageError("--gpus-per-node must be at least 1")
    if cpus_per_task is not None and cpus_per_task < 1:
        raise UsageError("--cpus-per-task must be at least 1")
    return BatchRequest(
        job_name=job_name,
        tasks=tuple(sorted(set(tasks))),
        gpus_per_node=gpus_per_node,
        request_gres=request_gres,
        partition=check_partition(partition) if partition else None,
        account=check_account(account) if account else None,
        time=check_time(time) if time else None,
        exclusive=exclusive,
        cpus_per_task=cpus_per_task,
        workdir=check_path_for_slurm(workdir),
        log_dir=check_path_for_slurm(log_dir),
        command=tuple(command),
    )


def render_script(req: BatchRequest) -> str:
    """The batch script. Directives carry only validated tokens; the command is shell-quoted."""
    lines = [
        "#!/bin/bash",
        f"# tokbench fleet: each array task runs `tokbench sweep` on its node ({req.job_name}).",
        f"#SBATCH --job-name={req.job_name}",
        f"#SBATCH --array={array_spec(req.tasks)}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
    ]
    if req.request_gres:
        lines.append(f"#SBATCH --gres=gpu:{req.gpus_per_node}")
    if req.exclusive:
        lines.append("#SBATCH --exclusive")
    if req.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={int(req.cpus_per_task)}")
    if req.partition:
        lines.append(f"#SBATCH --partition={req.partition}")
    if req.account:
        lines.append(f"#SBATCH --account={req.account}")
    if req.time:
        lines.append(f"#SBATCH --time={req.time}")
    lines += [
        "set -euo pipefail",
        "exec " + " ".join(shlex.quote(a) for a in req.command) + ' "$SLURM_ARRAY_TASK_ID"',
        "",
    ]
    return "\n".join(lines)


def sbatch_argv(req: BatchRequest, script: Path) -> list[str]:
    """Paths go on the command line as argv items (never through a shell or a directive)."""
    return [
        "sbatch",
        "--parsable",
        f"--chdir={req.workdir}",
        f"--output={req.log_dir / '%A_%a.out'}",
        str(script),
    ]


def require_slurm() -> None:
    missing = [c for c in ("sbatch", "scontrol") if shutil.which(c) is None]
    if missing:
        raise SlurmError(
            f"Slurm is not installed here ({', '.join(missing)} not found); run on a login node, "
            "or start a local test cluster with scripts/slurm_cluster.sh start"
        )


def submit(req: BatchRequest, script: Path) -> str:
    """Submit and return the job id."""
    require_slurm()
    proc = subprocess.run(sbatch_argv(req, script), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise SlurmError(f"sbatch refused the job: {msg[-1] if msg else 'exit ' + str(proc.returncode)}")
    job_id = proc.stdout.strip().split(";", 1)[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered {proc.stdout.strip()!r}, not a job id")
    return job_id


@dataclass(frozen=True)
class TaskState:
    """Slurm's view of one array task."""

    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    exit_code: str = ""
    node: str = ""


_KEY_RE = {k: re.compile(rf"(?:^|\s){k}=(\S*)") for k in ("ArrayTaskId", "JobState", "ExitCode", "NodeList")}


def parse_scontrol_jobs(text: str) -> dict[int, TaskState]:
    """Parse `scontrol -o show job ARRAYJOB` (one line per task; pending tasks share one line
    with a range in ArrayTaskId)."""
    out: dict[int, TaskState] = {}
    for line in text.splitlines():
        fields = {k: (m.group(1) if (m := r.search(line)) else "") for k, r in _KEY_RE.items()}
        if not fields["ArrayTaskId"] or not fields["JobState"]:
            continue
        node = "" if fields["NodeList"] in ("", "(null)") else fields["NodeList"]
        for t in parse_array_spec(fields["ArrayTaskId"]):
            out[t] = TaskState(fields["JobState"], fields["ExitCode"], node)
    return out


def job_states(job_id: str) -> dict[int, TaskState]:
    """Per-task states of an array job; empty once Slurm has forgotten the job (no accounting
    storage is assumed, so ``sacct`` is not consulted)."""
    if shutil.which("scontrol") is None:
        return {}
    proc = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {}
    return parse_scontrol_jobs(proc.stdout)


ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"})


# ---- GPUs Slurm gave a task -------------------------------------------------------------------

PROC_GPUS = Path("/proc/driver/nvidia/gpus")


def allocated_gpu_ids(env: Mapping[str, str]) -> list[str]:
    """The GPUs Slurm allocated, as it names them. ``SLURM_JOB_GPUS``/``SLURM_STEP_GPUS`` hold the
    node-global indices (the N of /dev/nvidiaN); ``CUDA_VISIBLE_DEVICES`` may be renumbered from 0
    when the site constrains devices with cgroups, so it is the last resort."""
    for key in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES"):
        raw = env.get(key, "").strip()
        if raw:
            return [p.strip() for p in raw.split(",") if p.strip()]
    return []


def minor_to_uuid(proc_dir: Path = PROC_GPUS) -> dict[str, str]:
    """Map device minor numbers to UUIDs from the driver's /proc files (no NVML needed: NVML
    ignores CUDA_VISIBLE_DEVICES and numbers GPUs its own way)."""
    out: dict[str, str] = {}
    if not proc_dir.is_dir():
        return out
    for info in sorted(proc_dir.glob("*/information")):
        fields: dict[str, str] = {}
        for line in info.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "Device Minor" in fields and "GPU UUID" in fields:
            out[fields["Device Minor"]] = fields["GPU UUID"]
    return out


def gpus_as_uuids(ids: list[str], proc_dir: Path = PROC_GPUS) -> list[str]:
    """Slurm's GPU ids -> UUIDs; refuses rather than guesses, since sweeping a GPU the job was not
    given would change another job's power limit."""
    if not ids:
        raise UsageError("Slurm allocated no GPU to this task (no SLURM_JOB_GPUS or CUDA_VISIBLE_DEVICES)")
    if all(i.startswith(("GPU-", "MIG-")) for i in ids):
        return ids
    table = minor_to_uuid(proc_dir)
    missing = [i for i in ids if i not in table]
    if missing:
        raise UsageError(
            f"cannot match Slurm GPU(s) {','.join(missing)} to a UUID: {proc_dir} lists minors "
            f"{','.join(sorted(table)) or 'none'}"
        )
    return [table[i] for i in ids]
