"""Fleet campaigns: a Slurm job array with one task per node, each running `tokbench sweep` on
its GPUs (one sweep per GPU, at once, unless the campaign asks for one lockstep sweep per node).

A campaign is a directory on the shared filesystem, ``<results-root>/<id>/``:

    campaign.json           what was asked for and every submission (job id, tasks)
    slurm/submit-N.sh       the batch scripts as submitted; slurm/<job>_<task>.out their logs
    tasks/task-N.json       written by task N when it starts and ends (host, GPUs, argv, exit code)
    <host>/task-N/gpu-G/    the run directory of GPU G's sweep (`tokbench sweep --out <host>/task-N
                            --run-id gpu-G`; `node/` with --node-sweep); a retry that cannot resume
                            writes gpu-G-retryK/ beside it

Each array task runs the hidden ``tokbench fleet task CAMPAIGN N``, which finds its GPUs (by UUID
on real nodes, simulated ones otherwise), records itself, and runs `tokbench sweep` as an argv list.
Slurm specifics live in ``harness.fleet.slurm``; reading the runs back lives in ``harness.fleet.collect``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import UsageError, first_validation_error
from harness.fleet import slurm

CAMPAIGN_SCHEMA = "tokbench.fleet"
CAMPAIGN_SCHEMA_VERSION = 1
DEFAULT_RESULTS_ROOT = Path("results/fleet")
#: the manifest status of a finished sweep; a task with any other run is resubmitted by --resume
DONE_STATUSES = frozenset({"complete"})

_PROFILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_SIM_GPU_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
_OVERRIDE_RE = re.compile(r"^\d{1,3}:[a-z_]+=[A-Za-z0-9_.+\-]+(,[a-z_]+=[A-Za-z0-9_.+\-]+)*$")
_VALUES_RE = re.compile(r"^[-+0-9.eE]+(,[-+0-9.eE]+)*$")
_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9_.\-]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Submission(_Strict):
    job_id: str
    tasks: list[int]
    submitted: str
    script: str  # path relative to the campaign directory


class Campaign(_Strict):
    """campaign.json. Every field was validated by ``new_campaign`` before it was written."""

    schema_: Literal["tokbench.fleet"] = Field(CAMPAIGN_SCHEMA, alias="schema")
    schema_version: int = CAMPAIGN_SCHEMA_VERSION
    id: str
    created: str
    tool_version: str
    profile: str
    nodes: int = Field(ge=1, le=10000)
    gpus_per_node: int = Field(ge=1, le=64)
    backend: Literal["nvml", "sim"]
    sim_gpu: str | None = None
    sim_seed: int = 0
    #: task index -> per-board overrides for that task's simulated node ("GPU:key=value")
    sim_overrides: dict[int, list[str]] = Field(default_factory=dict)
    points: int | None = None
    values: str | None = None
    repeats: int | None = None
    partition: str | None = None
    account: str | None = None
    time: str | None = None
    exclusive: bool = False
    cpus_per_task: int | None = Field(None, ge=1)
    request_gres: bool = True
    #: one sweep per GPU (default) or one sweep over all the node's GPUs (they step in lockstep)
    per_gpu: bool = True
    #: argv prefix that runs tokbench on the nodes
    launcher: list[str]
    submissions: list[Submission] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


@dataclass(frozen=True)
class FleetRequest:
    """What `tokbench fleet submit` was asked for (before validation)."""

    profile: str
    nodes: int
    gpus_per_node: int = 1
    backend: str = "nvml"
    sim_gpu: str | None = None
    sim_seed: int = 0
    sim_overrides: tuple[str, ...] = ()  # "TASK:GPU:key=value"
    points: int | None = None
    values: str | None = None
    repeats: int | None = None
    partition: str | None = None
    account: str | None = None
    time: str | None = None
    exclusive: bool = False
    cpus_per_task: int | None = None
    request_gres: bool = True
    per_gpu: bool = True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("tokbench")
    except Exception:
        return "0+unknown"


def default_launcher() -> list[str]:
    """How the nodes start tokbench: this interpreter with the CLI module, i.e. the very tokbench
    that submitted (sbatch exports the environment, PYTHONPATH included), whatever a job's PATH
    would pick."""
    return [sys.executable, "-m", "harness.cli"]


def _check_profile(profile: str) -> str:
    """An existing profile file (made absolute: tasks run elsewhere) or a plain profile name.
    A file path may hold any characters: it reaches `tokbench sweep` as one argv item."""
    p = Path(profile)
    if p.is_file():
        return str(p.resolve())
    if _PROFILE_NAME_RE.match(profile):
        return profile
    raise UsageError(f"profile {profile!r} is neither an existing file nor a plain profile name")


def _parse_overrides(specs: tuple[str, ...], nodes: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for spec in specs:
        task_s, sep, rest = spec.partition(":")
        if not sep or not task_s.isdigit() or not _OVERRIDE_RE.match(rest):
            raise UsageError(
                f"--sim-override {spec!r} refused: use TASK:GPU:key=value[,key=value], e.g. 1:0:leakage=1.4"
            )
        task = int(task_s)
        if task >= nodes:
            raise UsageError(f"--sim-override {spec!r}: task {task} is outside 0..{nodes - 1}")
        out.setdefault(task, []).append(rest)
    return out


def new_campaign(req: FleetRequest, launcher: list[str] | None = None) -> Campaign:
    """Validate a request into a campaign record (nothing is written or submitted)."""
    if req.nodes < 1:
        raise UsageError("--nodes must be at least 1")
    if req.gpus_per_node < 1:
        raise UsageError("--gpus-per-node must be at least 1")
    backend = "sim" if req.sim_gpu else req.backend
    if backend not in ("nvml", "sim"):
        raise UsageError(f"--backend {req.backend!r}: a fleet runs on 'nvml' (real GPUs) or 'sim'")
    sim_gpu = req.sim_gpu or ("h100-sxm" if backend == "sim" else None)
    if sim_gpu and not _SIM_GPU_RE.match(sim_gpu):
        raise UsageError(f"--sim-gpu {sim_gpu!r} refused: not a simulated part name")
    if req.sim_overrides and backend != "sim":
        raise UsageError("--sim-override needs the simulated backend (--sim-gpu)")
    if req.values is not None and not _VALUES_RE.match(req.values):
        raise UsageError(f"--values {req.values!r} refused: use numbers separated by commas")
    for name, n in (("--points", req.points), ("--repeats", req.repeats)):
        if n is not None and n < 1:
            raise UsageError(f"{name} must be at least 1")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    try:
        return Campaign(
            id=f"{stamp}-{secrets.token_hex(2)}",
            created=_now(),
            tool_version=_tool_version(),
            profile=_check_profile(req.profile),
            nodes=req.nodes,
            gpus_per_node=req.gpus_per_node,
            backend=backend,
            sim_gpu=sim_gpu,
            sim_seed=req.sim_seed,
            sim_overrides=_parse_overrides(req.sim_overrides, req.nodes),
            points=req.points,
            values=req.values,
            repeats=req.repeats,
            partition=slurm.check_partition(req.partition) if req.partition else None,
            account=slurm.check_account(req.account) if req.account else None,
            time=slurm.check_time(req.time) if req.time else None,
            exclusive=req.exclusive,
            cpus_per_task=req.cpus_per_task,
            request_gres=req.request_gres,
            per_gpu=req.per_gpu,
            launcher=launcher or default_launcher(),
        )
    except ValidationError as e:
        where, what = first_validation_error(e)
        raise UsageError(f"invalid fleet request: {where}: {what}") from e


# ---- campaign directory -----------------------------------------------------------------------


def save_campaign(c: Campaign, cdir: Path) -> None:
    tmp = cdir / "campaign.json.tmp"
    tmp.write_text(json.dumps(c.model_dump(mode="json", by_alias=True), indent=2) + "\n")
    tmp.replace(cdir / "campaign.json")


def load_campaign(cdir: Path) -> Campaign:
    path = cdir / "campaign.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise UsageError(f"{cdir}: not a fleet campaign (no campaign.json)") from err
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from e
    if not isinstance(raw, dict) or raw.get("schema") != CAMPAIGN_SCHEMA:
        raise UsageError(f"{path}: not a tokbench fleet campaign file")
    if raw.get("schema_version") != CAMPAIGN_SCHEMA_VERSION:
        raise UsageError(f"{path}: campaign schema version {raw.get('schema_version')!r} is not supported")
    try:
        return Campaign.model_validate(raw)
    except ValidationError as e:
        where, what = first_validation_error(e)
        raise UsageError(f"{path}: invalid at '{where}': {what}") from e


def resolve_campaign(ref: str | Path, results_root: Path = DEFAULT_RESULTS_ROOT) -> Path:
    """A campaign directory, given as a path or as an id under the results root."""
    p = Path(ref)
    for cand in (p, results_root / str(ref)):
        if (cand / "campaign.json").is_file():
            return cand.resolve()
    raise UsageError(f"no fleet campaign {str(ref)!r} (looked for campaign.json in {p} and {results_root / str(ref)})")


# ---- submission -------------------------------------------------------------------------------


def batch_request(c: Campaign, cdir: Path, tasks: list[int]) -> slurm.BatchRequest:
    return slurm.make_batch_request(
        job_name=f"tokbench-{c.id}",
        tasks=tasks,
        gpus_per_node=c.gpus_per_node,
        request_gres=c.request_gres,
        partition=c.partition,
        account=c.account,
        time=c.time,
        exclusive=c.exclusive,
        cpus_per_task=c.cpus_per_task,
        workdir=cdir,
        log_dir=cdir / "slurm",
        command=[*c.launcher, "fleet", "task", str(cdir)],
    )


@dataclass(frozen=True)
class SubmitResult:
    campaign_dir: Path
    job_id: str | None  # None on a dry run or when nothing was missing
    tasks: tuple[int, ...]
    script: str
    sbatch: str  # the sbatch command line, shell-quoted for display
    #: (task, sweep command) for each sweep the tasks will run, shell-quoted for display only
    #: (tasks run them as argv lists)
    task_commands: tuple[tuple[int, str], ...] = ()


def _submit_tasks(c: Campaign, cdir: Path, tasks: list[int], dry_run: bool) -> tuple[Campaign, SubmitResult]:
    req = batch_request(c, cdir, tasks)
    script = slurm.render_script(req)
    n = len(c.submissions)
    script_path = cdir / "slurm" / f"submit-{n}.sh"
    shown = shlex.join(slurm.sbatch_argv(req, script_path))
    # on real nodes "GPU-slurmN" stands for the UUID of the N-th GPU Slurm allocates
    placeholder = [f"GPU-slurm{i}" if c.backend == "nvml" else str(i) for i in range(c.gpus_per_node)]
    commands = tuple(
        (t, shlex.join(sweep_argv(c, t, unit, task_dir(cdir, "HOST", t) / name, resume=False)))
        for t in tasks
        for name, unit in run_units(c, placeholder)
    )
    if dry_run:
        return c, SubmitResult(cdir, None, tuple(tasks), script, shown, commands)
    slurm.require_slurm()
    (cdir / "slurm").mkdir(parents=True, exist_ok=True)
    (cdir / "tasks").mkdir(exist_ok=True)
    script_path.write_text(script)
    job_id = slurm.submit(req, script_path)
    sub = Submission(job_id=job_id, tasks=list(tasks), submitted=_now(), script=str(script_path.relative_to(cdir)))
    c = c.model_copy(update={"submissions": [*c.submissions, sub]})
    save_campaign(c, cdir)
    return c, SubmitResult(cdir, job_id, tuple(tasks), script, shown, commands)


def submit_campaign(
    req: FleetRequest, results_root: Path, dry_run: bool = False, launcher: list[str] | None = None
) -> SubmitResult:
    """Create a campaign under ``results_root`` and submit all its tasks (or, on a dry run, only
    say what would be submitted: nothing is written)."""
    c = new_campaign(req, launcher)
    cdir = slurm.check_path_for_slurm(results_root.resolve() / c.id)
    if dry_run:
        return _submit_tasks(c, cdir, list(range(c.nodes)), dry_run=True)[1]
    slurm.require_slurm()
    cdir.mkdir(parents=True, exist_ok=False)
    save_campaign(c, cdir)
    try:
        return _submit_tasks(c, cdir, list(range(c.nodes)), dry_run=False)[1]
    except slurm.SlurmError as e:
        raise slurm.SlurmError(f"{e} (campaign {c.id} was created; submit it later with --resume {c.id})") from e


def resume_campaign(cdir: Path, dry_run: bool = False) -> SubmitResult:
    """Re-submit only the tasks whose sweep has not finished and that Slurm is not running now."""
    c = load_campaign(cdir)
    missing = [s.task for s in campaign_status(cdir, c) if s.needs_resubmit]
    if not missing:
        return SubmitResult(cdir, None, (), "", "")
    return _submit_tasks(c, cdir, missing, dry_run)[1]


# ---- the array task ---------------------------------------------------------------------------


class RunRecord(_Strict):
    """One `tokbench sweep` a task ran: its GPUs, run directory, argv and exit code."""

    gpus: list[str]
    out: str  # run directory, relative to the campaign directory
    argv: list[str]  # empty: finished in an earlier attempt, kept as it is
    exit_code: int | None = None


class TaskRecord(_Strict):
    """tasks/task-N.json: what one array task ran, where, and how it ended."""

    task: int
    host: str
    job_id: str = ""
    slurm_gpus: list[str] = Field(default_factory=list)
    runs: list[RunRecord]
    started: str
    ended: str | None = None
    exit_code: int | None = None


def host_name(env: Mapping[str, str]) -> str:
    raw = env.get("SLURMD_NODENAME") or socket.gethostname().split(".", 1)[0] or "host"
    return _SAFE_NAME_RE.sub("_", raw)


def task_dir(cdir: Path, host: str, task: int) -> Path:
    return cdir / host / f"task-{task}"


def sweep_argv(c: Campaign, task: int, gpus: list[str], out: Path, resume: bool) -> list[str]:
    """The `tokbench sweep` command of one run, as an argv list (never a shell string). A resumed
    run takes every option from its own manifest, so only the directory is passed."""
    if resume:
        return [*c.launcher, "sweep", "--resume", str(out)]
    argv = [*c.launcher, "sweep", "--profile", c.profile, "--gpus", ",".join(gpus)]
    argv += ["--out", str(out.parent), "--run-id", out.name]
    if c.backend == "sim":
        argv += ["--backend", "sim", "--sim-gpu", str(c.sim_gpu), "--sim-count", str(c.gpus_per_node)]
        argv += ["--sim-seed", str(c.sim_seed + task)]
        for spec in c.sim_overrides.get(task, []):
            argv += ["--sim-override", spec]
    else:
        argv += ["--backend", "nvml"]
    if c.points is not None:
        argv += ["--points", str(c.points)]
    if c.values is not None:
        argv += ["--values", c.values]
    if c.repeats is not None:
        argv += ["--repeats", str(c.repeats)]
    return argv


def run_units(c: Campaign, gpus: list[str]) -> list[tuple[str, list[str]]]:
    """(run name, GPUs) of each sweep a task runs. Per GPU by default: a sweep steps all its GPUs
    in lockstep, so one slow board would drag its siblings' tokens/s and tokens/J down with it and
    could not be told apart from them; one sweep per GPU measures each board on its own."""
    if not c.per_gpu:
        return [("node", gpus)]
    return [(f"gpu-{_SAFE_NAME_RE.sub('_', g.removeprefix('GPU-'))}", [g]) for g in gpus]


def choose_run_dir(
    cdir: Path, task: int, host: str, name: str, gpus: list[str], prev: TaskRecord | None
) -> tuple[Path, str]:
    """(run directory, "keep" | "resume" | "new") for one run of this attempt. A run the previous
    attempt finished on the same host and GPUs is kept, an unfinished one resumed (a resumed sweep
    keeps its recorded GPUs, and Slurm may hand out others, hence the check); anything else
    starts fresh, in ``<name>-retryK`` if ``<name>`` is taken."""
    if prev is not None and prev.host == host:
        for r in prev.runs:
            old = cdir / r.out
            if r.gpus != gpus or not (old / "manifest.json").is_file():
                continue
            return old, "keep" if run_progress(old)[0] in DONE_STATUSES else "resume"
    out = task_dir(cdir, host, task) / name
    k = 0
    while out.exists():
        k += 1
        out = out.with_name(f"{name}-retry{k}")
    return out, "new"


def task_gpus(c: Campaign, env: Mapping[str, str], proc_dir: Path = slurm.PROC_GPUS) -> tuple[list[str], list[str]]:
    """(Slurm's GPU ids, what the sweeps get with --gpus). Simulated nodes sweep all their boards;
    real nodes sweep exactly the GPUs Slurm allocated, named by UUID."""
    slurm_ids = slurm.allocated_gpu_ids(env)
    if c.backend == "sim":
        return slurm_ids, [str(i) for i in range(c.gpus_per_node)]
    return slurm_ids, slurm.gpus_as_uuids(slurm_ids, proc_dir)


def _write_record(cdir: Path, rec: TaskRecord) -> None:
    path = cdir / "tasks" / f"task-{rec.task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec.model_dump(mode="json"), indent=2) + "\n")
    tmp.replace(path)


def read_record(cdir: Path, task: int) -> TaskRecord | None:
    path = cdir / "tasks" / f"task-{task}.json"
    try:
        return TaskRecord.model_validate_json(path.read_text())
    except (OSError, ValidationError):
        return None


def run_task(cdir: Path, task: int, env: Mapping[str, str] | None = None) -> int:
    """Body of one array task: find the GPUs, record, run the sweeps (concurrently), record how
    each ended. Returns 0 when every sweep succeeded, else the first failure's exit code."""
    env = dict(os.environ if env is None else env)
    c = load_campaign(cdir)
    if not 0 <= task < c.nodes:
        raise UsageError(f"task {task} is outside this campaign's 0..{c.nodes - 1}")
    host = host_name(env)
    slurm_ids, gpus = task_gpus(c, env)
    prev = read_record(cdir, task)
    runs = []
    for name, unit in run_units(c, gpus):
        out, mode = choose_run_dir(cdir, task, host, name, unit, prev)
        argv = [] if mode == "keep" else sweep_argv(c, task, unit, out, resume=mode == "resume")
        runs.append(RunRecord(gpus=unit, out=str(out.relative_to(cdir)), argv=argv))
    rec = TaskRecord(
        task=task,
        host=host,
        job_id=env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", "")),
        slurm_gpus=slurm_ids,
        runs=runs,
        started=_now(),
    )
    _write_record(cdir, rec)
    procs: list[subprocess.Popen | int] = []
    for r in runs:
        if not r.argv:
            print(f"tokbench fleet task: {r.out} finished in an earlier attempt; kept", flush=True)
            procs.append(0)
            continue
        (cdir / r.out).parent.mkdir(parents=True, exist_ok=True)
        print("tokbench fleet task:", shlex.join(r.argv), flush=True)
        try:
            procs.append(subprocess.Popen(r.argv, cwd=(cdir / r.out).parent, env=env))
        except OSError as e:
            print(f"tokbench fleet task: cannot start the sweep: {e}", file=sys.stderr, flush=True)
            procs.append(127)
    codes = [p if isinstance(p, int) else p.wait() for p in procs]
    done = [r.model_copy(update={"exit_code": code}) for r, code in zip(runs, codes, strict=True)]
    rc = next((code for code in codes if code != 0), 0)
    _write_record(cdir, rec.model_copy(update={"runs": done, "ended": _now(), "exit_code": rc}))
    return rc


# ---- status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskStatus:
    task: int
    job: str  # "<array job>_<task>", empty when never submitted
    slurm_state: str  # Slurm's state, "gone" once Slurm forgot the job, "unsubmitted"
    host: str
    run_dirs: tuple[Path, ...]  # the latest attempt's run directories
    run_status: str  # the runs' manifest status combined ("complete" only when all are)
    points_done: int
    exit_code: int | None

    @property
    def done(self) -> bool:
        return self.run_status in DONE_STATUSES

    @property
    def needs_resubmit(self) -> bool:
        return not self.done and self.slurm_state not in slurm.ACTIVE_STATES


def _run_dirs(cdir: Path, task: int, rec: TaskRecord | None) -> tuple[Path, ...]:
    if rec is not None:
        return tuple(cdir / r.out for r in rec.runs)
    return tuple(sorted(m.parent for m in cdir.glob(f"*/task-{task}/*/manifest.json")))


def combine_status(statuses: list[str]) -> str:
    """One word for a task's runs: complete only when every run is; else the worst one."""
    if statuses and all(s in DONE_STATUSES for s in statuses):
        return "complete"
    for word in ("failed", "damaged", "killed", "interrupted", "running"):
        if word in statuses:
            return word
    return "incomplete" if any(statuses) else ""


def run_progress(run_dir: Path | None) -> tuple[str, int]:
    """(manifest status, points recorded) of a run directory; ("damaged", 0) when it cannot be read."""
    from harness.errors import RunDirError
    from harness.records.rundir import RunDir

    if run_dir is None or not (run_dir / "manifest.json").is_file():
        return "", 0
    try:
        rd = RunDir.open(run_dir)
        return str(rd.manifest.get("status", "")), len(rd.points())
    except (RunDirError, ValueError, KeyError):
        return "damaged", 0


def _killed(run_status: str, slurm_state: str) -> str:
    """A run that says "running" while Slurm no longer runs its task was killed (timeout, node
    failure, scancel): its writer is gone even where a lock on a shared filesystem cannot tell."""
    if run_status == "running" and slurm_state not in slurm.ACTIVE_STATES and slurm_state != "unsubmitted":
        return "killed"
    return run_status


def campaign_status(cdir: Path, c: Campaign | None = None) -> list[TaskStatus]:
    c = c or load_campaign(cdir)
    latest: dict[int, str] = {}
    for sub in c.submissions:
        for t in sub.tasks:
            latest[t] = sub.job_id
    states: dict[str, dict[int, slurm.TaskState]] = {}
    out: list[TaskStatus] = []
    for t in range(c.nodes):
        job_id = latest.get(t)
        rec = read_record(cdir, t)
        if job_id is None:
            state, node = "unsubmitted", ""
        else:
            if job_id not in states:
                states[job_id] = slurm.job_states(job_id)
            ts = states[job_id].get(t)
            state, node = (ts.state, ts.node) if ts else ("gone", "")
        run_dirs = _run_dirs(cdir, t, rec)
        progress = [run_progress(d) for d in run_dirs]
        out.append(
            TaskStatus(
                task=t,
                job=f"{job_id}_{t}" if job_id else "",
                slurm_state=state,
                host=rec.host if rec else (node or (run_dirs[0].parent.parent.name if run_dirs else "")),
                run_dirs=run_dirs,
                run_status=_killed(combine_status([p[0] for p in progress]), state),
                points_done=sum(p[1] for p in progress),
                exit_code=rec.exit_code if rec else None,
            )
        )
    return out


# ---- governors: one `tokbench govern` per node, a long-running job step ------------------------
# `tokbench fleet govern-start` submits a job array whose task N runs (as a job step, through srun)
# the hidden `tokbench fleet govern-task DIR N`, which finds the node's GPUs like a sweep task and
# execs `tokbench govern` on them; `govern-stop` sends the steps SIGTERM, on which each governor
# restores its GPUs and exits. A fleet target in W is split evenly across the nodes; levels,
# prices, OpenADR and schedules are per node already. Files: <root>/<id>/governors.json,
# slurm/governors.sh, slurm/<job>_<task>.out, <host>/task-N.csv (each node's decision log).

GOVERNORS_SCHEMA = "tokbench.fleet.govern"


class GovernorFleet(_Strict):
    schema_: Literal["tokbench.fleet.govern"] = Field(GOVERNORS_SCHEMA, alias="schema")
    id: str
    nodes: int = Field(ge=1)
    gpus_per_node: int = Field(ge=1)
    backend: Literal["nvml", "sim"]
    sim_gpu: str | None = None
    curve: str
    #: the node's signal as `tokbench govern` options, e.g. ["--target-w", "5600"]
    signal: list[str]
    config: str | None = None
    partition: str | None = None
    account: str | None = None
    time: str | None = None
    request_gres: bool = True
    launcher: list[str]
    job_id: str = ""


def new_governors(*, curve: str, nodes: int, gpus_per_node: int, target_w: float | None = None,
                  schedule: str | None = None, feed: str | None = None, openadr: str | None = None,
                  config: str | None = None, sim_gpu: str | None = None, partition: str | None = None,
                  account: str | None = None, time: str | None = None, request_gres: bool = True,
                  launcher: list[str] | None = None) -> GovernorFleet:
    given = [(k, v) for k, v in (("--target-w", target_w), ("--schedule", schedule), ("--feed", feed),
                                 ("--openadr", openadr)) if v is not None]
    if len(given) != 1:
        raise UsageError("give the fleet one signal: --target-w, --schedule, --feed or --openadr")
    key, value = given[0]
    if key == "--target-w":
        value = f"{float(value) / nodes:g}"  # evenly per node
    elif key in ("--schedule",) or (key == "--feed" and not str(value).startswith(("http://", "https://"))):
        value = str(Path(value).resolve())
    if sim_gpu and not _SIM_GPU_RE.match(sim_gpu):
        raise UsageError(f"--sim-gpu {sim_gpu!r} refused: not a simulated part name")
    try:
        return GovernorFleet(
            id="govern-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + f"-{secrets.token_hex(2)}",
            nodes=nodes, gpus_per_node=gpus_per_node, backend="sim" if sim_gpu else "nvml", sim_gpu=sim_gpu,
            curve=str(Path(curve).resolve()), signal=[key, str(value)],
            config=str(Path(config).resolve()) if config else None,
            partition=slurm.check_partition(partition) if partition else None,
            account=slurm.check_account(account) if account else None,
            time=slurm.check_time(time) if time else None,
            request_gres=request_gres, launcher=launcher or default_launcher(),
        )
    except ValidationError as e:
        where, what = first_validation_error(e)
        raise UsageError(f"invalid governor request: {where}: {what}") from None


def governor_argv(g: GovernorFleet, gdir: Path, task: int, host: str, gpus: list[str]) -> list[str]:
    """The `tokbench govern` command of one node (an argv list, never a shell line)."""
    argv = [*g.launcher, "govern", "--curve", g.curve, *g.signal, "--gpus", ",".join(gpus),
            "--log", str(gdir / _SAFE_NAME_RE.sub("_", host) / f"task-{task}.csv")]
    if g.config:
        argv += ["--config", g.config]
    if g.backend == "sim":
        argv += ["--backend", "sim", "--sim-gpu", str(g.sim_gpu), "--sim-count", str(g.gpus_per_node),
                 "--sim-seed", str(task), "--realtime"]
    else:
        argv += ["--backend", "nvml"]
    return argv


def start_governors(g: GovernorFleet, results_root: Path, dry_run: bool = False) -> SubmitResult:
    gdir = slurm.check_path_for_slurm(results_root.resolve() / g.id)
    req = slurm.make_batch_request(
        job_name=f"tokbench-{g.id}", tasks=range(g.nodes), gpus_per_node=g.gpus_per_node,
        request_gres=g.request_gres, partition=g.partition, account=g.account, time=g.time, exclusive=False,
        workdir=gdir, log_dir=gdir / "slurm",
        command=["srun", "--ntasks=1", *g.launcher, "fleet", "govern-task", str(gdir)],
    )
    script = slurm.render_script(req).replace("runs `tokbench sweep` on its node", "runs `tokbench govern` on its node")
    path = gdir / "slurm" / "governors.sh"
    shown = shlex.join(slurm.sbatch_argv(req, path))
    gpus = [f"GPU-slurm{i}" if g.backend == "nvml" else str(i) for i in range(g.gpus_per_node)]
    commands = tuple((t, shlex.join(governor_argv(g, gdir, t, "HOST", gpus))) for t in range(g.nodes))
    if dry_run:
        return SubmitResult(gdir, None, tuple(range(g.nodes)), script, shown, commands)
    slurm.require_slurm()
    (gdir / "slurm").mkdir(parents=True, exist_ok=False)
    path.write_text(script)
    g = g.model_copy(update={"job_id": slurm.submit(req, path)})
    (gdir / "governors.json").write_text(json.dumps(g.model_dump(mode="json", by_alias=True), indent=2) + "\n")
    return SubmitResult(gdir, g.job_id, tuple(range(g.nodes)), script, shown, commands)


def load_governors(gdir: Path) -> GovernorFleet:
    try:
        return GovernorFleet.model_validate_json((gdir / "governors.json").read_text())
    except OSError:
        raise UsageError(f"{gdir}: not a governor fleet (no governors.json)") from None
    except ValidationError as e:
        where, what = first_validation_error(e)
        raise UsageError(f"{gdir / 'governors.json'}: invalid at '{where}': {what}") from None


def run_governor_task(gdir: Path, task: int, env: Mapping[str, str] | None = None,
                      proc_dir: Path = slurm.PROC_GPUS, execute=os.execvpe) -> None:
    """Body of one governor task: its GPUs (UUIDs of what Slurm allocated; every board of a
    simulated node), then exec `tokbench govern` so that the job step *is* the governor and
    Slurm's SIGTERM reaches its guard."""
    env = dict(os.environ if env is None else env)
    g = load_governors(gdir)
    if not 0 <= task < g.nodes:
        raise UsageError(f"task {task} is outside this fleet's 0..{g.nodes - 1}")
    gpus = ([str(i) for i in range(g.gpus_per_node)] if g.backend == "sim"
            else slurm.gpus_as_uuids(slurm.allocated_gpu_ids(env), proc_dir))
    argv = governor_argv(g, gdir, task, host_name(env), gpus)
    Path(argv[argv.index("--log") + 1]).parent.mkdir(parents=True, exist_ok=True)
    print("tokbench fleet govern-task:", shlex.join(argv), flush=True)
    execute(argv[0], argv, env)


def stop_governors(gdir: Path) -> str:
    """SIGTERM to every governor step of the fleet (each restores its GPUs and exits)."""
    g = load_governors(gdir)
    if not g.job_id:
        raise UsageError(f"{gdir}: this governor fleet was never submitted")
    slurm.require_slurm()
    proc = subprocess.run(["scancel", "--signal=TERM", g.job_id], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise slurm.SlurmError(f"scancel refused: {(proc.stderr or proc.stdout).strip()}")
    return g.job_id
