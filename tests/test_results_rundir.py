"""The run directory: incremental writes, loading, schema checks, and surviving a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import RunDirError
from harness.records.manifest import SCHEMA_VERSION, build_manifest, incomparable
from harness.records.rundir import POINT_COLUMNS, Point, RunDir, new_run_id
from harness.telemetry.energy import format_shares, parse_shares

REPO = Path(__file__).resolve().parents[1]


def manifest(comparison: dict | None = None) -> dict:
    return build_manifest(run_id="r", backend="sim", knob="power_limit_w", devices=[], workload={},
                          comparison=comparison or {})


def make_point(i: int, **kw) -> Point:
    base = dict(
        point_index=i, gpu_index=0, gpu_uuid="GPU-SIM-1", knob="power_limit_w", setting=700.0 - 50 * i,
        enforced=700.0 - 50 * i, batch_size=8, phase="train", repeat=0, window_start_s=10.0 * i,
        window_end_s=10.0 * i + 5, seconds=5.0, steps=20, input_tokens=0, output_tokens=0, tokens=40960,
        joules=3000.0 + i, joules_integrated=2990.5, true_joules=None, energy_source="counter",
        power_mean_w=600.0, power_p99_w=710.25, power_max_1s_w=None, sm_clock_mean_mhz=1650.0,
        mem_clock_mean_mhz=2619.0, temp_start_c=60.0, temp_end_c=61.0, warmup_s=3.5, tokens_per_s=8192.0,
        tokens_per_j=13.65, j_per_token=0.0732, clock_event_shares=format_shares({"sw_power_cap": 0.97}),
        flags="",
    )
    base.update(kw)
    return Point(**base)


def samples_frame(i: int) -> pd.DataFrame:
    return pd.DataFrame({"source": ["poll"] * 3, "t_s": [0.0, 0.05, 0.1], "power_instant_w": [600.0 + i, 610.0, None]})


def test_write_and_read_back(tmp_path):
    run = RunDir.create(tmp_path, "r1", manifest(comparison={"gpu_model": "H100"}))
    for i in range(3):
        run.append_point(make_point(i, flags="temperature_drift" if i == 1 else ""), samples_frame(i))
    run.update_manifest(status="complete")
    run.close()
    again = RunDir.open(tmp_path / "r1")
    pts = again.points()
    assert list(pts.columns) == list(POINT_COLUMNS)
    assert pts["point_index"].tolist() == [0, 1, 2]
    assert pts["flags"].tolist() == ["", "temperature_drift", ""]
    assert pts["joules"].tolist() == [3000.0, 3001.0, 3002.0]
    assert pts["true_joules"].isna().all()  # None round-trips as empty
    assert pts["power_p99_w"].iloc[0] == 710.25
    assert parse_shares(pts["clock_event_shares"].iloc[0]) == {"sw_power_cap": 0.97}
    s = again.samples(2)
    assert s["power_instant_w"].iloc[0] == 602.0 and pd.isna(s["power_instant_w"].iloc[2])
    m = again.manifest
    assert m["tool"] == "tokbench" and m["schema_version"] == SCHEMA_VERSION
    assert m["status"] == "complete" and m["end_utc"] and m["start_utc"]
    assert m["comparison"]["gpu_model"] == "H100"
    assert {"hostname", "platform"} <= set(m["host"]) and "pandas" in m["software"]
    assert again.damaged() == []


def test_never_overwrites_a_run(tmp_path):
    RunDir.create(tmp_path, "same", manifest()).close()
    with pytest.raises(RunDirError, match="already exists"):
        RunDir.create(tmp_path, "same", manifest())


def test_run_ids_are_unique_and_sortable():
    ids = {new_run_id("sweep") for _ in range(50)}
    assert len(ids) == 50 and all(i.startswith("sweep-") for i in ids)


def test_open_says_what_is_wrong(tmp_path):
    with pytest.raises(RunDirError, match="no such run directory"):
        RunDir.open(tmp_path / "nope")
    run = RunDir.create(tmp_path, "r", manifest())
    run.close()
    mpath = tmp_path / "r" / "manifest.json"
    m = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({**m, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(RunDirError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade tokbench"):
        RunDir.open(tmp_path / "r")
    mpath.write_text("{not json")
    with pytest.raises(RunDirError, match="damaged manifest"):
        RunDir.open(tmp_path / "r")
    mpath.write_text(json.dumps(m))
    ppath = tmp_path / "r" / "points.csv"
    ppath.write_text(",".join(c for c in POINT_COLUMNS if c != "joules") + ",bogus\n")
    with pytest.raises(RunDirError, match="missing joules; unexpected bogus"):
        RunDir.open(tmp_path / "r")


def test_truncated_last_line_is_reported_and_skipped(tmp_path):
    run = RunDir.create(tmp_path, "r", manifest())
    for i in range(2):
        run.append_point(make_point(i), samples_frame(i))
    with open(run.path / "points.csv", "a") as f:
        f.write("2,0,GPU-SIM-1,power_li")  # a row cut short
    assert RunDir.open(run.path).points()["point_index"].tolist() == [0, 1]
    problems = run.damaged()
    assert any("truncated" in p for p in problems)


def test_comparison_metadata():
    a = {"comparison": {"gpu_model": "H100", "precision": "bf16"}}
    b = {"comparison": {"gpu_model": "H200", "precision": "bf16"}}
    assert incomparable(a, a) == []
    assert incomparable(a, b) == ["gpu_model: 'H100' vs 'H200'"]


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    from harness.records.manifest import build_manifest
    from harness.records.rundir import RunDir
    from test_results_rundir import make_point, samples_frame
    run = RunDir.create(Path({root!r}), "killed", build_manifest(
        run_id="killed", backend="sim", knob="power_limit_w", devices=[], workload={{}}, comparison={{}}))
    for i in range(3):
        run.append_point(make_point(i), samples_frame(i))
    if {stage!r} == "samples_written":
        run.write_samples(3, samples_frame(3))  # point 3: samples on disk, its row not yet
    print("READY", flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("stage", ["measuring", "samples_written"])
def test_sigkill_mid_point_keeps_finished_points(tmp_path, stage):
    code = CHILD.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(tmp_path), stage=stage)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "READY"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    run = RunDir.open(tmp_path / "killed")
    pts = run.points()
    assert pts["point_index"].tolist() == [0, 1, 2]
    for i in range(3):
        assert run.samples(i)["power_instant_w"].iloc[0] == 600.0 + i
    problems = run.damaged()
    assert any("killed" in p for p in problems)  # status 'running' with no live writer
    if stage == "samples_written":
        assert any("point 3 has samples but no row" in p for p in problems)


def test_a_live_writer_is_not_reported_as_killed(tmp_path):
    run = RunDir.create(tmp_path, "live", manifest())
    assert RunDir.open(run.path).damaged() == []
    run.close()
    assert any("killed" in p for p in RunDir.open(run.path).damaged())


def test_window_samples_and_fields_round_trip(tmp_path):
    import random

    from harness.devices import open_devices
    from harness.telemetry import Sampler, Window
    from harness.testing.shapes import bursty

    gpu = open_devices("sim", sim_seed=9).devices[0]
    with Sampler([gpu]) as s, Window([gpu], s, sync=gpu.synchronize, knob="observe") as w:
        bursty(gpu, 2.0, random.Random(9))
    r = w.results[0]
    fields_ = {k: v for k, v in make_point(0).__dict__.items() if k != "extra"}
    fields_.update(r.point_fields())
    run = RunDir.create(tmp_path, "win", manifest())
    run.append_point(Point(**fields_), r.samples)
    back = RunDir.open(run.path)
    pd.testing.assert_frame_equal(back.samples(0), r.samples)
    row = back.points().iloc[0]
    assert row["joules"] == r.joules and row["true_joules"] == r.true_joules
    assert parse_shares(row["clock_event_shares"]) == pytest.approx(r.clock_event_shares, rel=1e-3)
