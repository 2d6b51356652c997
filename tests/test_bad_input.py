"""Bad input is one line on stderr and the documented exit code, never a traceback or a hang, and writes
nothing: each numeric option is held to the rules of its profile key by the same pydantic model."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.errors import EXIT_USAGE, UsageError
from workloads.base import StepResult, checked_step

SWEEP_CASES = {
    "--window 0": "--window: Input should be greater than 0",
    "--window -5": "--window: Input should be greater than 0",
    "--window nan": "--window: Input should be a finite number",
    "--window inf": "--window: Input should be a finite number",
    "--warmup-min 50 --warmup-max 1": "--warmup-min: 50.0 exceeds --warmup-max 1.0",
    "--margin-pct -3": "--margin-pct: Input should be greater than 0",
    "--search-budget 0": "--search-budget: Input should be greater than 0",
    "--points 1000000000": "--points: Input should be less than or equal to 500",
    "--repeats 1000000000": "--repeats: Input should be less than or equal to 100",
    "--step 1e-9": "at most 500",
    "--values 300,nan": "--values: Input should be a finite number",
    "--points 3 --step 50": "one way only (got --points and --step)",
    "--search max-q --repeats 3": "chooses its own repeats",
}


def _cli(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKBENCH_STATE_DIR": str(tmp / "state"), "TOKBENCH_SIM_STATE_DIR": str(tmp / "sim")}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def _one_line(p: subprocess.CompletedProcess, words: str, code: int = EXIT_USAGE) -> None:
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert words in p.stderr


@pytest.fixture(scope="module")
def sweep_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    with ThreadPoolExecutor(4) as pool:  # each case is its own process; none may hang
        futures = {case: pool.submit(_cli, ["sweep", "--backend", "sim", "--out", str(tmp / "out"), *case.split()],
                                     tmp) for case in SWEEP_CASES}
        return tmp, {case: f.result() for case, f in futures.items()}


@pytest.mark.parametrize("case", list(SWEEP_CASES))
def test_bad_sweep_option_is_one_line_and_writes_nothing(sweep_results, case):
    tmp, results = sweep_results
    _one_line(results[case], SWEEP_CASES[case])
    assert not (tmp / "out").exists()


def test_profile_with_an_infinite_window_is_refused(tmp_path):
    prof = tmp_path / "inf.toml"
    prof.write_text('[workload]\nname = "training"\nmodel = "tiny"\n\n[sweep]\nwindow_s = inf\n')
    _one_line(_cli(["sweep", "--backend", "sim", "--profile", str(prof), "--out", str(tmp_path / "o")], tmp_path),
              "sweep.window_s: Input should be a finite number")
    assert not (tmp_path / "o").exists()


def test_user_workload_on_a_simulated_gpu_is_refused_not_hung(tmp_path):
    prof = tmp_path / "user.toml"
    prof.write_text('[workload]\nname = "json:dumps"\n')
    _one_line(_cli(["sweep", "--backend", "sim", "--profile", str(prof), "--points", "2", "--out",
                    str(tmp_path / "o")], tmp_path), "a simulated GPU cannot time")


@pytest.mark.parametrize("bad", ["12", StepResult(float("nan"), 0), StepResult(-5, 0), StepResult(1.5, 0), None])
def test_a_step_result_that_is_not_whole_tokens_is_refused(bad):
    with pytest.raises(UsageError, match="workload mine: step"):
        checked_step(bad, "mine")
    assert checked_step(StepResult(3, 4, 2), "mine").tokens == 7


def test_export_into_a_missing_folder_is_one_line(tmp_path):
    run = Path(__file__).parent / "data" / "run-v1"
    _one_line(_cli(["export", str(run), "--out", str(tmp_path / "missing" / "c.json")], tmp_path),
              "does not exist")


REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "profiles" / "sites" / "example-site.toml"


@pytest.mark.parametrize(("args", "words"), [
    (["--out", "/proc/not-a-folder/plan"], "cannot create the folder"),
    (["--objective", "cost", "--token-target", "-5"], "--token-target must be a positive number"),
    (["--objective", "cost", "--token-target", "nan"], "--token-target must be a positive number"),
])
def test_bad_plan_input_is_one_line(tmp_path, args, words):
    _one_line(_cli(["plan", str(SITE), *args], tmp_path), words)


def test_a_curve_that_makes_no_tokens_is_one_line(tmp_path):
    import json

    curve = json.loads((REPO / "profiles" / "curves" / "h100-train-llama-1b.json").read_text())
    for p in curve["points"]:
        p["tokens_per_s"] = p["tokens_per_j"] = 0.0
    for f in curve["fits"]:
        f["tokens_per_s"] = [0.0] * len(f["tokens_per_s"])
    (tmp_path / "zero.json").write_text(json.dumps(curve))
    site = SITE.read_text().replace('"../curves/h100-train-llama-1b.json"', f'"{tmp_path / "zero.json"}"')
    site = site.replace('"../grids/', f'"{SITE.parent.parent / "grids"}/')
    (tmp_path / "site.toml").write_text(site)
    _one_line(_cli(["plan", str(tmp_path / "site.toml"), "--out", str(tmp_path / "o")], tmp_path),
              "makes any tokens")
