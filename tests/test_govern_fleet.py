"""One governor per node under Slurm: the batch script (a job step per node), each task's
`tokbench govern` argv (its GPUs, its share of the fleet target), and stopping by SIGTERM, on
which a governor restores its GPUs. No Slurm here: sbatch/scancel are not run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_govern_core import wait_until_governed

from harness.devices import open_devices
from harness.errors import UsageError
from harness.fleet import campaign as fleet

ROOT = Path(__file__).resolve().parents[1]
CURVE = str(ROOT / "profiles" / "curves" / "h100-train-llama-1b.json")
LAUNCHER = [sys.executable, "-m", "harness.cli"]


def _saved(g: fleet.GovernorFleet, root: Path, job_id: str = "") -> Path:
    gdir = root / g.id
    gdir.mkdir(parents=True)
    g = g.model_copy(update={"job_id": job_id})
    (gdir / "governors.json").write_text(json.dumps(g.model_dump(mode="json", by_alias=True)))
    return gdir


def test_dry_run_script_runs_each_node_as_a_job_step_with_its_share(tmp_path):
    g = fleet.new_governors(curve=CURVE, nodes=4, gpus_per_node=8, target_w=18000.0, partition="gpu",
                            launcher=["tokbench-py"])
    r = fleet.start_governors(g, tmp_path, dry_run=True)
    assert "runs `tokbench govern` on its node" in r.script
    assert "#SBATCH --array=0-3" in r.script and "#SBATCH --gres=gpu:8" in r.script
    assert f'exec srun --ntasks=1 tokbench-py fleet govern-task {tmp_path.resolve() / g.id} "$SLURM_ARRAY_TASK_ID"' \
        in r.script
    for _, cmd in r.task_commands:
        assert "--target-w 4500 " in cmd and "--gpus GPU-slurm0,GPU-slurm1" in cmd and "--backend nvml" in cmd
    assert not list(tmp_path.iterdir())  # a dry run writes nothing
    with pytest.raises(UsageError, match="one signal"):
        fleet.new_governors(curve=CURVE, nodes=1, gpus_per_node=1, target_w=1.0, feed="x.csv")


def test_real_node_task_governs_exactly_the_gpus_slurm_gave_it(tmp_path):
    from test_fleet_script import _proc_gpus

    proc = _proc_gpus(tmp_path / "proc", {3: "GPU-cc", 0: "GPU-aa", 1: "GPU-bb"})
    g = fleet.new_governors(curve=CURVE, nodes=2, gpus_per_node=2, openadr="http://vtn:8080/OpenADR2/Simple/2.0b",
                            launcher=LAUNCHER)
    gdir = _saved(g, tmp_path / "root", job_id="77")
    seen = []
    fleet.run_governor_task(gdir, 1, {"SLURM_JOB_GPUS": "3,1", "SLURMD_NODENAME": "n7"}, proc,
                            execute=lambda prog, argv, env: seen.append(argv))
    (argv,) = seen
    assert argv[argv.index("--gpus") + 1] == "GPU-cc,GPU-bb"
    assert argv[argv.index("--openadr") + 1] == "http://vtn:8080/OpenADR2/Simple/2.0b"
    assert argv[argv.index("--log") + 1] == str(gdir / "n7" / "task-1.csv") and (gdir / "n7").is_dir()
    with pytest.raises(UsageError, match="outside this fleet"):
        fleet.run_governor_task(gdir, 2, {}, proc, execute=lambda *a: None)


def test_stop_sends_sigterm_and_the_governor_restores_its_gpus(tmp_path, monkeypatch):
    g = fleet.new_governors(curve=CURVE, nodes=2, gpus_per_node=2, target_w=1200.0, sim_gpu="h100-sxm",
                            launcher=LAUNCHER)
    gdir = _saved(g, tmp_path, job_id="4242")
    seen = []
    fleet.run_governor_task(gdir, 0, {"SLURMD_NODENAME": "sim0"}, execute=lambda prog, argv, env: seen.append(argv))
    (argv,) = seen
    assert argv[argv.index("--target-w") + 1] == "600" and argv[argv.index("--gpus") + 1] == "0,1"
    # the node's governor as its step would run it, then the SIGTERM `scancel --signal=TERM` delivers
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_governed()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143 and "interrupted by SIGTERM: settings restored" in err
    assert [d.power_limits().current_w for d in open_devices("sim", sim_count=2).devices] == [700.0, 700.0]
    calls = []
    monkeypatch.setattr(fleet.slurm, "require_slurm", lambda: None)
    monkeypatch.setattr(fleet.subprocess, "run",
                        lambda argv, **kw: calls.append(argv) or subprocess.CompletedProcess(argv, 0, "", ""))
    assert fleet.stop_governors(gdir) == "4242" and calls == [["scancel", "--signal=TERM", "4242"]]
