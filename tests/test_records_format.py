"""The on-disk format of a run directory, pinned by a small golden run (schema 2), and the reading of a
schema-1 run directory written by the first tokbench (each fact once after the upgrade)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harness.readers.analysis import analyse
from harness.records.manifest import SCHEMA_VERSION
from harness.records.rundir import POINT_COLUMNS, RunDir

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "run-v2-golden"
V1 = DATA / "run-v1"


def _schema(path: Path) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in pq.read_schema(path)]


def test_golden_run_loads_and_reads_as_written():
    run = RunDir.open(GOLDEN)
    m = run.manifest
    assert m["schema_version"] == SCHEMA_VERSION == 2 and m["status"] == "complete"
    assert m["knob"] == "sm_clock_mhz" and isinstance(m["command_line"], list) and m["host"]["hostname"]
    assert m["start_utc"] <= m["end_utc"]
    for once in ("started", "ended", "command"):  # schema 1 wrote these beside their twins
        assert once not in m
    pts = run.points()
    assert len(pts) == 12 and set(pts["setting"]) == {210.0, 1095.0, 1980.0}
    assert run.damaged() == []
    c = analyse(GOLDEN).curve("decode", 1)
    assert c.max_q.lo <= c.max_q.best <= c.max_q.hi


def test_a_new_run_writes_the_golden_format(tmp_path):
    env = {**os.environ, "TOKBENCH_STATE_DIR": str(tmp_path / "s"), "TOKBENCH_SIM_STATE_DIR": str(tmp_path / "sim")}
    subprocess.run([sys.executable, "-m", "harness.cli", "sweep", "--backend", "sim", "--profile", "tiny-decode",
                    "--points", "2", "--repeats", "1", "--batch-sizes", "1", "--window", "1", "--warmup-min", "0.2",
                    "--warmup-max", "1", "--out", str(tmp_path), "--run-id", "new"], check=True, env=env,
                   capture_output=True, timeout=300)
    new, gold = tmp_path / "new", GOLDEN
    assert set(json.loads((new / "manifest.json").read_text())) == set(json.loads((gold / "manifest.json").read_text()))
    assert (new / "points.csv").read_text().splitlines()[0] == (gold / "points.csv").read_text().splitlines()[0]
    assert (gold / "points.csv").read_text().splitlines()[0].split(",") == list(POINT_COLUMNS)
    assert _schema(new / "samples" / "point-0000.parquet") == _schema(gold / "samples" / "point-0000.parquet")


def test_a_schema_1_run_directory_still_loads():
    on_disk = json.loads((V1 / "manifest.json").read_text())
    assert on_disk["schema_version"] == 1 and on_disk["host"] == "vm" and "started" in on_disk
    m = RunDir.open(V1).manifest  # upgraded for every reader
    assert m["schema_version"] == 2 and m["upgraded_from"] == 1
    assert m["host"] == {"hostname": "vm"} and m["start_utc"] == on_disk["start_utc"]
    assert m["command_line"][1:3] == ["sweep", "--profile"] and "command" not in m and "started" not in m
    a = analyse(V1)
    assert a.knob == "sm_clock_mhz" and {c.phase for c in a.curves} == {"prefill", "decode"}


@pytest.mark.parametrize("run", [GOLDEN, V1])
def test_export_of_either_schema_names_its_command(run, tmp_path):
    from harness.readers.export import export_run

    curve, _ = export_run(analyse(run), out=tmp_path / "c.json")
    assert curve.provenance.command.split()[1] == "sweep" and curve.provenance.host
