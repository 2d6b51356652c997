"""Fleet submission without Slurm: validation, the batch script, quoting, GPU mapping, job
states, the array task, and --resume's choice of tasks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.fleet import campaign as fleet
from harness.fleet import slurm
from harness.records.rundir import POINT_COLUMNS

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "x y \"q\" 'a' $(touch PWNED1); touch PWNED2 `touch PWNED3`"

# A stand-in for the tokbench that a node runs: `fleet task` goes to the real CLI, `sweep`
# records its argv and writes a small finished run directory.
FAKE_TOKBENCH = r"""#!{python}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
if args[:2] == ["fleet", "task"]:
    sys.path.insert(0, {repo!r})
    from harness.cli import main
    sys.argv = ["tokbench", *args]
    main()
assert args[0] == "sweep", args
opt = {{args[i]: args[i + 1] for i in range(1, len(args) - 1, 2)}}
out = Path(opt["--out"]) / opt["--run-id"] if "--out" in opt else Path(opt["--resume"])
out.mkdir(parents=True, exist_ok=True)
(out / "argv.json").write_text(json.dumps(args))
gpus = opt.get("--gpus") or json.loads((out / "manifest.json").read_text())["gpus"]
bad = gpus in os.environ.get("FAKE_FAIL_GPUS", "").split(",")
status = "interrupted" if bad else "complete"
(out / "manifest.json").write_text(json.dumps({{"tool": "tokbench", "schema_version": 1, "status": status,
                                                "gpus": gpus}}))
(out / "points.csv").write_text({points_csv!r})
sys.exit(3 if bad else 0)
"""


def _fake_tokbench(tmp: Path) -> Path:
    exe = tmp / "fake-tokbench"
    ints = {"point_index", "gpu_index", "batch_size", "repeat", "steps", "input_tokens", "output_tokens", "tokens"}
    row = ",".join("0" if c in ints else "" for c in POINT_COLUMNS)
    points_csv = ",".join(POINT_COLUMNS) + "\n" + row + "\n" + row + "\n"  # two points, as a sweep writes them
    exe.write_text(FAKE_TOKBENCH.format(python=sys.executable, repo=str(REPO), points_csv=points_csv))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def _no_pwned(root: Path) -> None:
    assert not list(root.rglob("PWNED*")), "a hostile value was executed"
    assert not list(Path.cwd().glob("PWNED*"))


# ---- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["gpu;rm -rf /", "gpu rm", "$(id)", "a`b`", "gpu\nx", "", "-x", "a|b", "a>b"])
def test_hostile_partition_and_account_are_refused(value: str) -> None:
    with pytest.raises(UsageError):
        slurm.check_partition(value)
    with pytest.raises(UsageError):
        slurm.check_account(value)


@pytest.mark.parametrize("value", ["1:00:00;reboot", "1h", "", "1-2-3", "$(id)", "10 20"])
def test_bad_time_is_refused(value: str) -> None:
    with pytest.raises(UsageError):
        slurm.check_time(value)


@pytest.mark.parametrize("value", ["90", "2:00:00", "1-12", "1-12:30:00", "30:00", "UNLIMITED"])
def test_slurm_times_are_accepted(value: str) -> None:
    assert slurm.check_time(value) == value


def test_partition_list_and_names_are_accepted() -> None:
    assert slurm.check_partition("gpu,gpu-long") == "gpu,gpu-long"
    assert slurm.check_account("proj_42.x-y") == "proj_42.x-y"


def test_array_spec_round_trip() -> None:
    assert slurm.array_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert slurm.array_spec([3]) == "3"
    assert slurm.parse_array_spec("0-2,5,7-8") == [0, 1, 2, 5, 7, 8]
    assert slurm.parse_array_spec("0-6:2%2") == [0, 2, 4, 6]


def test_request_validation(tmp_path: Path) -> None:
    good = fleet.FleetRequest(profile="smoke", nodes=2, sim_gpu="h100-sxm")
    c = fleet.new_campaign(good, launcher=["tokbench"])
    assert (c.backend, c.sim_gpu, c.nodes) == ("sim", "h100-sxm", 2)
    bad = [
        dict(profile="no such/file;rm.toml"),
        dict(profile="smoke", partition="gpu;rm -rf /"),
        dict(profile="smoke", account="a b"),
        dict(profile="smoke", time="1:00;id"),
        dict(profile="smoke", sim_gpu="h100;id"),
        dict(profile="smoke", sim_gpu="h100-sxm", sim_overrides=("1:0:leakage=1.4;id",)),
        dict(profile="smoke", sim_gpu="h100-sxm", sim_overrides=("5:0:leakage=1.4",)),  # task out of range
        dict(profile="smoke", sim_overrides=("0:0:leakage=1.4",)),  # overrides need sim
        dict(profile="smoke", values="200,300;id"),
        dict(profile="smoke", nodes=0),
        dict(profile="smoke", cpus_per_task=0),
        dict(profile="smoke", backend="auto"),
    ]
    for kw in bad:
        args = {"nodes": 2, **kw}
        with pytest.raises(UsageError):
            fleet.new_campaign(fleet.FleetRequest(**args), launcher=["tokbench"])


def test_existing_hostile_profile_path_is_kept_verbatim(tmp_path: Path) -> None:
    prof = tmp_path / f"{HOSTILE}.toml"
    prof.write_text("")
    c = fleet.new_campaign(fleet.FleetRequest(profile=str(prof), nodes=1, sim_gpu="h100-sxm"), launcher=["t"])
    assert c.profile == str(prof.resolve())
    argv = fleet.sweep_argv(c, 0, ["0"], tmp_path / "out", resume=False)
    assert argv[argv.index("--profile") + 1] == str(prof.resolve())


# ---- the batch script -------------------------------------------------------------------------


def test_script_directives_and_quoting(tmp_path: Path) -> None:
    cdir = tmp_path / HOSTILE / "camp"
    req = slurm.make_batch_request(
        job_name="tokbench-1",
        tasks=[0, 1, 3],
        gpus_per_node=2,
        request_gres=True,
        partition="gpu,debug",
        account="proj",
        time="1:00:00",
        exclusive=True,
        cpus_per_task=4,
        workdir=cdir,
        log_dir=cdir / "slurm",
        command=["/opt/tok bench/bin/python", "-m", "harness.cli", "fleet", "task", str(cdir)],
    )
    script = slurm.render_script(req)
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --job-name=tokbench-1",
        "#SBATCH --array=0-1,3",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --exclusive",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --partition=gpu,debug",
        "#SBATCH --account=proj",
        "#SBATCH --time=1:00:00",
    ]
    assert HOSTILE not in "\n".join(directives)
    argv = slurm.sbatch_argv(req, cdir / "slurm" / "s.sh")
    assert argv[:2] == ["sbatch", "--parsable"] and argv[-1] == str(cdir / "slurm" / "s.sh")


def test_script_runs_hostile_paths_as_data(tmp_path: Path) -> None:
    """Execute the rendered script with bash: the recorder gets the exact paths, nothing runs."""
    cdir = tmp_path / HOSTILE / "camp"
    cdir.mkdir(parents=True)
    rec = tmp_path / "recorder"
    rec.write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(tmp_path / 'argv.json')!r}, 'w')"
        ".write(json.dumps(sys.argv[1:]))\n"
    )
    rec.chmod(0o755)
    req = slurm.make_batch_request(
        job_name="tokbench-1",
        tasks=[0, 1],
        gpus_per_node=1,
        request_gres=False,
        partition=None,
        account=None,
        time=None,
        exclusive=False,
        workdir=cdir,
        log_dir=cdir,
        command=[str(rec), "fleet", "task", str(cdir)],
    )
    script = tmp_path / "s.sh"
    script.write_text(slurm.render_script(req))
    subprocess.run(["bash", str(script)], cwd=tmp_path, env={**os.environ, "SLURM_ARRAY_TASK_ID": "1"}, check=True)
    assert json.loads((tmp_path / "argv.json").read_text()) == ["fleet", "task", str(cdir), "1"]
    _no_pwned(tmp_path)


def test_percent_and_newline_paths_are_refused(tmp_path: Path) -> None:
    for bad in ("a%jb", "a\nb"):
        with pytest.raises(UsageError):
            slurm.check_path_for_slurm(tmp_path / bad)


def test_cli_refuses_hostile_partition_and_runs_no_sbatch(tmp_path: Path) -> None:
    """The CLI stops at validation: a fake sbatch on PATH that would leave a mark is never run."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sbatch", "scontrol"):
        (bindir / tool).write_text(f"#!/bin/sh\ntouch {tmp_path}/SBATCH_RAN\necho 1\n")
        (bindir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "fleet",
            "submit",
            "--profile",
            "smoke",
            "--nodes",
            "2",
            "--partition",
            "gpu;rm -rf /",
            "--results-root",
            str(tmp_path / "res"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "partition 'gpu;rm -rf /' refused" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "SBATCH_RAN").exists() and not (tmp_path / "res").exists()


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    r = fleet.submit_campaign(
        fleet.FleetRequest(profile="smoke", nodes=3, sim_gpu="h100-sxm"),
        tmp_path,
        dry_run=True,
        launcher=["tokbench"],
    )
    assert r.job_id is None and r.tasks == (0, 1, 2)
    assert "#SBATCH --array=0-2" in r.script and "fleet task" in r.script
    assert [t for t, _ in r.task_commands] == [0, 1, 2] and "--sim-seed 2" in r.task_commands[2][1]
    assert list(tmp_path.iterdir()) == []


# ---- the array task ---------------------------------------------------------------------------


def test_sweep_argv_sim_and_real(tmp_path: Path) -> None:
    c = fleet.new_campaign(
        fleet.FleetRequest(
            profile="smoke",
            nodes=3,
            gpus_per_node=2,
            sim_gpu="h100-sxm",
            sim_seed=10,
            sim_overrides=("2:1:leakage=1.4,efficiency=0.9",),
            points=4,
            repeats=2,
        ),
        launcher=["tokbench"],
    )
    out = tmp_path / "h" / "task-2"
    assert fleet.sweep_argv(c, 2, ["0", "1"], out, resume=False) == [
        "tokbench",
        "sweep",
        "--profile",
        "smoke",
        "--gpus",
        "0,1",
        "--out",
        str(out.parent),
        "--run-id",
        "task-2",
        "--backend",
        "sim",
        "--sim-gpu",
        "h100-sxm",
        "--sim-count",
        "2",
        "--sim-seed",
        "12",
        "--sim-override",
        "1:leakage=1.4,efficiency=0.9",
        "--points",
        "4",
        "--repeats",
        "2",
    ]
    assert "--sim-override" not in fleet.sweep_argv(c, 0, ["0", "1"], out, resume=False)
    assert fleet.sweep_argv(c, 1, ["0", "1"], out, resume=True) == ["tokbench", "sweep", "--resume", str(out)]
    real = fleet.new_campaign(fleet.FleetRequest(profile="smoke", nodes=1), launcher=["tokbench"])
    argv = fleet.sweep_argv(real, 0, ["GPU-a", "GPU-b"], out, resume=False)
    assert argv[argv.index("--gpus") + 1] == "GPU-a,GPU-b" and argv[-2:] == ["--backend", "nvml"]


def _proc_gpus(root: Path, minors_uuids: dict[int, str]) -> Path:
    for i, (minor, uuid) in enumerate(minors_uuids.items()):
        d = root / f"0000:{0x18 + i:02x}:00.0"
        d.mkdir(parents=True)
        (d / "information").write_text(
            f"Model:           NVIDIA H100 80GB HBM3\nGPU UUID:        {uuid}\n"
            f"Bus Location:    0000:{0x18 + i:02x}:00.0\nDevice Minor:    {minor}\n"
        )
    return root


def test_slurm_gpus_map_to_uuids_by_minor_number(tmp_path: Path) -> None:
    # NVML's order (PCI) and the minors need not agree: minor 3 sits on the first bus here.
    proc = _proc_gpus(tmp_path, {3: "GPU-cc", 0: "GPU-aa", 1: "GPU-bb"})
    c = fleet.new_campaign(fleet.FleetRequest(profile="smoke", nodes=1, gpus_per_node=2), launcher=["t"])
    env = {"SLURM_JOB_GPUS": "3,1", "CUDA_VISIBLE_DEVICES": "0,1"}  # CVD renumbered by cgroups
    assert fleet.task_gpus(c, env, proc) == (["3", "1"], ["GPU-cc", "GPU-bb"])
    assert slurm.gpus_as_uuids(["GPU-x", "GPU-y"], proc) == ["GPU-x", "GPU-y"]
    assert slurm.allocated_gpu_ids({"CUDA_VISIBLE_DEVICES": "2"}) == ["2"]
    with pytest.raises(UsageError, match="cannot match Slurm GPU"):
        slurm.gpus_as_uuids(["7"], proc)
    with pytest.raises(UsageError, match="no GPU"):
        fleet.task_gpus(c, {}, proc)
    sim = fleet.new_campaign(
        fleet.FleetRequest(profile="smoke", nodes=1, gpus_per_node=3, sim_gpu="h100-sxm"), launcher=["t"]
    )
    assert fleet.task_gpus(sim, {"CUDA_VISIBLE_DEVICES": "1"}, proc) == (["1"], ["0", "1", "2"])


def test_parse_scontrol_array_states() -> None:
    text = (
        "JobId=12 ArrayJobId=10 ArrayTaskId=2-4,6 JobName=t JobState=PENDING Reason=Resources "
        "ExitCode=0:0 NodeList=(null) Command=/a b/JobState=HACKED\n"
        "JobId=11 ArrayJobId=10 ArrayTaskId=1 JobName=t JobState=RUNNING ExitCode=0:0 NodeList=n1\n"
        "JobId=10 ArrayJobId=10 ArrayTaskId=0 JobName=t JobState=FAILED ExitCode=1:0 NodeList=n2\n"
    )
    states = slurm.parse_scontrol_jobs(text)
    assert states[0] == slurm.TaskState("FAILED", "1:0", "n2")
    assert states[1].state == "RUNNING" and states[1].node == "n1"
    assert [t for t, s in sorted(states.items()) if s.state == "PENDING"] == [2, 3, 4, 6]


def test_run_task_records_and_runs_sweep_with_exact_argv(tmp_path: Path, monkeypatch) -> None:
    prof = tmp_path / f"{HOSTILE}.toml"
    prof.write_text("")
    exe = _fake_tokbench(tmp_path)
    c = fleet.new_campaign(
        fleet.FleetRequest(
            profile=str(prof),
            nodes=2,
            gpus_per_node=2,
            sim_gpu="h100-sxm",
            sim_overrides=("1:0:leakage=1.4",),
        ),
        launcher=[str(exe)],
    )
    cdir = tmp_path / HOSTILE / c.id
    cdir.mkdir(parents=True)
    fleet.save_campaign(c, cdir)
    monkeypatch.chdir(tmp_path)
    env = {
        **os.environ,
        "SLURMD_NODENAME": "node a/1",
        "SLURM_ARRAY_JOB_ID": "77",
        "CUDA_VISIBLE_DEVICES": "1",
    }
    assert fleet.run_task(cdir, 1, env) == 0
    rec = fleet.read_record(cdir, 1)
    assert rec is not None and rec.host == "node_a_1" and rec.job_id == "77" and rec.exit_code == 0
    assert rec.slurm_gpus == ["1"]
    # one sweep per simulated board, each into its own run directory
    assert [(r.gpus, r.out, r.exit_code) for r in rec.runs] == [
        (["0"], "node_a_1/task-1/gpu-0", 0),
        (["1"], "node_a_1/task-1/gpu-1", 0),
    ]
    for g, r in enumerate(rec.runs):
        argv = json.loads((cdir / r.out / "argv.json").read_text())
        assert argv == r.argv[1:]
        assert argv[argv.index("--profile") + 1] == str(prof.resolve())
        assert argv[argv.index("--gpus") + 1] == str(g)
        assert argv[argv.index("--sim-count") + 1] == "2"  # the same 2-board node, seeded the same
        assert argv[argv.index("--sim-override") + 1] == "0:leakage=1.4"
    _no_pwned(tmp_path)
    assert fleet.campaign_status(cdir)[1].run_status == "complete"

    # a later attempt keeps what finished; a run that failed is resumed from its manifest
    for r in rec.runs:
        manifest = {"tool": "tokbench", "schema_version": 1, "gpus": r.gpus[0]}
        manifest["status"] = "complete" if r.gpus == ["0"] else "interrupted"
        (cdir / r.out / "manifest.json").write_text(json.dumps(manifest))
    env["FAKE_FAIL_GPUS"] = "1"
    assert fleet.run_task(cdir, 1, env) == 3
    rec = fleet.read_record(cdir, 1)
    assert [(r.out, r.argv[1:], r.exit_code) for r in rec.runs] == [
        ("node_a_1/task-1/gpu-0", [], 0),
        ("node_a_1/task-1/gpu-1", ["sweep", "--resume", str(cdir / "node_a_1/task-1/gpu-1")], 3),
    ]
    st = fleet.campaign_status(cdir)[1]
    assert (st.run_status, st.exit_code, st.points_done) == ("interrupted", 3, 4)
    # on another host nothing is kept or resumed: fresh runs there
    del env["FAKE_FAIL_GPUS"]
    assert fleet.run_task(cdir, 1, {**env, "SLURMD_NODENAME": "other"}) == 0
    assert [r.out for r in fleet.read_record(cdir, 1).runs] == ["other/task-1/gpu-0", "other/task-1/gpu-1"]
    # a finished run directory is never overwritten: a fresh run beside it gets -retryK
    out, mode = fleet.choose_run_dir(cdir, 1, "node_a_1", "gpu-0", ["0"], None)
    assert (out.name, mode) == ("gpu-0-retry1", "new")
    with pytest.raises(UsageError):
        fleet.run_task(cdir, 2, env)


def test_status_and_resume_pick_only_unfinished_idle_tasks(tmp_path: Path, monkeypatch) -> None:
    exe = _fake_tokbench(tmp_path)
    c = fleet.new_campaign(fleet.FleetRequest(profile="smoke", nodes=4, sim_gpu="h100-sxm"), launcher=[str(exe)])
    c = c.model_copy(
        update={
            "submissions": [
                fleet.Submission(job_id="50", tasks=[0, 1, 2, 3], submitted="t", script="slurm/submit-0.sh")
            ]
        }
    )
    cdir = tmp_path / c.id
    cdir.mkdir()
    fleet.save_campaign(c, cdir)
    env = {**os.environ, "SLURMD_NODENAME": "n1"}
    fleet.run_task(cdir, 0, env)  # finished
    fleet.run_task(cdir, 1, {**env, "FAKE_FAIL_GPUS": "0"})  # interrupted
    monkeypatch.setattr(
        slurm,
        "job_states",
        lambda job: {
            0: slurm.TaskState("COMPLETED"),
            1: slurm.TaskState("FAILED", "1:0"),
            2: slurm.TaskState("RUNNING"),
        },
    )
    st = {s.task: s for s in fleet.campaign_status(cdir)}
    assert (st[0].slurm_state, st[0].run_status, st[0].points_done, st[0].done) == (
        "COMPLETED",
        "complete",
        2,
        True,
    )
    assert (st[1].run_status, st[1].exit_code, st[1].needs_resubmit) == ("interrupted", 3, True)
    assert (st[2].slurm_state, st[2].needs_resubmit) == ("RUNNING", False)
    assert (st[3].slurm_state, st[3].run_status, st[3].needs_resubmit) == ("gone", "", True)

    submitted: list[tuple[slurm.BatchRequest, str]] = []
    monkeypatch.setattr(slurm, "require_slurm", lambda: None)
    monkeypatch.setattr(slurm, "submit", lambda req, script: submitted.append((req, script.read_text())) or "51")
    r = fleet.resume_campaign(cdir)
    assert r.job_id == "51" and r.tasks == (1, 3)
    assert "#SBATCH --array=1,3" in submitted[0][1]
    c2 = fleet.load_campaign(cdir)
    assert [s.job_id for s in c2.submissions] == ["50", "51"] and c2.submissions[1].tasks == [1, 3]
    assert (cdir / "slurm" / "submit-1.sh").is_file()
    # tasks 1 and 3 now belong to job 51, which Slurm does not know yet -> "gone" again; 2 still runs
    monkeypatch.setattr(
        slurm,
        "job_states",
        lambda job: (
            {2: slurm.TaskState("RUNNING")}
            if job == "50"
            else {1: slurm.TaskState("PENDING"), 3: slurm.TaskState("PENDING")}
        ),
    )
    assert fleet.resume_campaign(cdir).tasks == ()


def test_campaign_file_is_validated(tmp_path: Path) -> None:
    (tmp_path / "campaign.json").write_text(json.dumps({"schema": "tokbench.fleet", "schema_version": 99}))
    with pytest.raises(UsageError, match="schema version 99"):
        fleet.load_campaign(tmp_path)
    (tmp_path / "campaign.json").write_text("{")
    with pytest.raises(UsageError, match="unreadable"):
        fleet.load_campaign(tmp_path)
    with pytest.raises(UsageError, match="no fleet campaign"):
        fleet.resolve_campaign("nope", tmp_path)


def test_run_status_words() -> None:
    assert fleet.combine_status(["complete", "complete"]) == "complete"
    assert fleet.combine_status(["complete", "interrupted", "running"]) == "interrupted"
    assert fleet.combine_status(["complete", ""]) == "incomplete"
    assert fleet.combine_status([]) == ""
    # "running" in a manifest while Slurm no longer runs the task: the writer was killed
    assert fleet._killed("running", "TIMEOUT") == "killed"
    assert fleet._killed("running", "gone") == "killed"
    assert fleet._killed("running", "RUNNING") == "running"
    assert fleet._killed("complete", "FAILED") == "complete"


def test_damaged_run_directory_reads_as_damaged(tmp_path: Path) -> None:
    run = tmp_path / "gpu-0"
    run.mkdir()
    (run / "manifest.json").write_text('{"tool": "tokbench", "schema_version": 1, "status": "complete"}')
    (run / "points.csv").write_text("not,the,columns\n")
    assert fleet.run_progress(run) == ("damaged", 0)
    assert fleet.run_progress(tmp_path / "absent") == ("", 0)


def test_refused_submission_leaves_a_resumable_campaign(tmp_path: Path, monkeypatch) -> None:
    def refuse(req, script):
        raise slurm.SlurmError("sbatch refused the job: Invalid partition name specified")

    monkeypatch.setattr(slurm, "require_slurm", lambda: None)
    monkeypatch.setattr(slurm, "submit", refuse)
    with pytest.raises(slurm.SlurmError, match=r"Invalid partition.*--resume \d{8}-\d{6}-[0-9a-f]{4}"):
        fleet.submit_campaign(
            fleet.FleetRequest(profile="smoke", nodes=2, sim_gpu="h100-sxm"), tmp_path, launcher=["tokbench"]
        )
    (cdir,) = list(tmp_path.iterdir())
    assert fleet.load_campaign(cdir).submissions == []
    st = fleet.campaign_status(cdir)
    assert [(s.slurm_state, s.needs_resubmit) for s in st] == [("unsubmitted", True)] * 2
    monkeypatch.setattr(slurm, "submit", lambda req, script: "99")
    assert fleet.resume_campaign(cdir).tasks == (0, 1)


def test_cli_dry_run_prints_script_and_every_sweep(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "fleet", "submit", "--profile", "train-llama-8b", "--nodes", "2",
         "--gpus-per-node", "2", "--partition", "gpu", "--time", "4:00:00", "--results-root", str(tmp_path),
         "--dry-run"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("sbatch --parsable --chdir=") and lines[1] == "#!/bin/bash"
    assert "#SBATCH --array=0-1" in lines and "#SBATCH --gres=gpu:2" in lines and "#SBATCH --partition=gpu" in lines
    sweeps = [line for line in lines if line.startswith("# task ")]
    assert [line.split(" runs: ")[0] for line in sweeps] == ["# task 0", "# task 0", "# task 1", "# task 1"]
    assert "--gpus GPU-slurm1" in sweeps[1] and "--run-id gpu-slurm1" in sweeps[1] and "--backend nvml" in sweeps[1]
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing
