"""At 80 columns no number or header of the sweep summary, the report table or `devices` is cut to '…':
columns are dropped by priority instead (and named under the table). Piped, a sweep prints a line per point."""

from __future__ import annotations

import os
import subprocess
import sys


def _cli(args: list[str], tmp) -> str:
    env = {**os.environ, "COLUMNS": "80", "TOKBENCH_STATE_DIR": str(tmp / "state"),
           "TOKBENCH_SIM_STATE_DIR": str(tmp / "sim")}
    r = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _table_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("┃", "│", "┏", "└"))]


def test_sweep_report_and_devices_fit_80_columns(tmp_path):
    sweep = _cli(["sweep", "--backend", "sim", "--profile", "tiny-decode", "--points", "3", "--repeats", "2",
                  "--batch-sizes", "1", "--window", "2", "--warmup-min", "0.5", "--warmup-max", "3",
                  "--out", str(tmp_path),
                  "--run-id", "r"], tmp_path)
    report = _cli(["report", str(tmp_path / "r")], tmp_path)
    devices = _cli(["devices", "--backend", "sim", "--sim-count", "2"], tmp_path)
    for out in (sweep, report, devices):
        lines = _table_lines(out)
        assert lines, out
        assert all(len(line) <= 80 for line in lines), out
        assert "…" not in out, out
    assert "tokens/J" in sweep and "tokens/s" in sweep and "Max-P" in sweep  # the columns that matter stay
    # piped, the sweep says what it did point by point (3 settings x 2 repeats x 2 phases), with device time,
    # and what to run next
    lines = [line for line in sweep.splitlines() if line.startswith("point ")]
    assert len(lines) == 12 and all("tokens/J" in line and "of device time" in line for line in lines)
    assert lines[-1].startswith("point 6/6") and "~" in lines[0] and "min left" in lines[0]
    assert f"next: tokbench report {tmp_path / 'r'}" in sweep
    assert "not shown at 80 columns" in devices
