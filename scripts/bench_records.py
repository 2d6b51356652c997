"""Benchmarks of a long run's bookkeeping: the peak memory (RSS) of a two-hour simulated sweep with and
without trimming the sampler after each point, and how long a resume takes to verify a 1,000-point run
(open, repair, done keys, next index).

    python scripts/bench_records.py                  # both; figures go to docs/benchmarks.md by hand
    python scripts/bench_records.py --only resume
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
import harness.sweep.loop as loop
from harness.sweep.run import SweepOptions, run_sweep
if sys.argv[1] == "untrimmed":
    loop.KEEP_SAMPLES_S = float("inf")
t = time.perf_counter()
r = run_sweep(SweepOptions(profile="train-llama-1b", backend="sim", points=9, repeats=10, window_s=60.0,
                           warmup_min_s=5.0, warmup_max_s=30.0, out=sys.argv[2], run_id=sys.argv[1]))
wall = time.perf_counter() - t
device = sum(p.seconds + p.warmup_s for p in r.points)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "wall_s": wall,
                  "device_s": device, "points": len(r.points)}))
"""


def long_sweep(mode: str, out: Path) -> dict:
    env = {**os.environ, "TOKBENCH_STATE_DIR": str(out / "state"), "TOKBENCH_SIM_STATE_DIR": str(out / "sim"),
           "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(out)], capture_output=True, text=True, env=env,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def resume_check(n_points: int = 1000) -> dict:
    from harness.records.rundir import RunDir
    from harness.testing.synthetic import SynthRun, fabricate_run

    with tempfile.TemporaryDirectory() as tmp:
        settings = tuple(float(s) for s in range(200, 700, 5))  # 100 settings x 10 repeats
        path = fabricate_run(Path(tmp), SynthRun(settings=settings, repeats=n_points // len(settings),
                                                 samples_per_point=20, seed=1), "big")
        manifest = json.loads((path / "manifest.json").read_text())
        (path / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
        t = time.perf_counter()
        run, _ = RunDir.resume(path)
        keys = run.done_keys()
        nxt = run.next_point_index()
        run.close()
        return {"points": len(keys), "next_index": nxt, "verify_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("memory", "resume"))
    args = ap.parse_args()
    if args.only in (None, "resume"):
        print("resume of a 1,000-point run:", json.dumps(resume_check()))
    if args.only in (None, "memory"):
        for mode in ("untrimmed", "trimmed"):
            with tempfile.TemporaryDirectory() as tmp:
                print(f"two-hour simulated sweep, {mode}:", json.dumps(long_sweep(mode, Path(tmp))))
    print(f"(this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
