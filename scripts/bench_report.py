"""Benchmark: analyse and report a run of 40 points and 1 million telemetry samples.

Target (issue 6): under 3 s on the 2-core development machine. The run is fabricated by
``harness.testing.synthetic`` (20 settings x 2 repeats, 25,000 samples per point plus a 50 Hz power
history); timings are the median of ``--repeats`` in-process runs of ``analyse`` + ``write_report``
(matplotlib already imported), and one cold ``tokbench report`` subprocess (imports included).

    python scripts/bench_report.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from harness.testing.synthetic import SynthRun, fabricate_run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = SynthRun(settings=tuple(np.linspace(200.0, 700.0, 20)), repeats=2, samples_per_point=25_000,
                       seconds=60.0, seed=3)
        t = time.perf_counter()
        path = fabricate_run(Path(tmp), run, "bench")
        setup = time.perf_counter() - t
        from harness.readers.analysis import analyse
        from harness.readers.report import write_report

        n_points = len(analyse(path).run.points)
        n_samples = sum(len(x.samples) for x in analyse(path).run.all_telemetry())
        times_a, times_r, cpu = [], [], []
        for _ in range(args.repeats):
            c0 = time.process_time()
            t0 = time.perf_counter()
            a = analyse(path)
            t1 = time.perf_counter()
            write_report(a)
            t2 = time.perf_counter()
            cpu.append(time.process_time() - c0)
            times_a.append(t1 - t0)
            times_r.append(t2 - t1)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "harness.cli", "report", str(path)], check=True, capture_output=True,
                       cwd=Path(__file__).resolve().parents[1])
        cold = time.perf_counter() - t
    total = [a + r for a, r in zip(times_a, times_r)]
    print(f"run: {n_points} points, {n_samples:,} telemetry samples (fabricated in {setup:.1f} s)")
    print(f"analyse: median {statistics.median(times_a):.3f} s")
    print(f"report (4 figures as PNG+SVG, report.md): median {statistics.median(times_r):.3f} s")
    print(f"analyse + report: median {statistics.median(total):.3f} s wall, max {max(total):.3f} s, "
          f"median {statistics.median(cpu):.3f} s CPU (target < 3 s)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"cold `tokbench report` subprocess (imports included): {cold:.3f} s")


if __name__ == "__main__":
    main()
