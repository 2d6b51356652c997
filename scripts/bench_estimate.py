"""`--dry-run`'s estimates against a simulated sweep of each shipped profile's own plan.

For each profile it runs the sweep's dry run (device time, and on simulated parts how long the
simulation takes here), then the sweep itself on the simulated part, and prints the estimate
beside the device time the sweep spent (its own clock, from the first point's preparation to the
last window) and the wall time it took. The profile's settings, batch sizes, windows and warm-ups;
``--repeats`` (default 1) keeps it to a few minutes. tests/test_physics_estimate.py checks short
plans of every profile in the test suite.

    python scripts/bench_estimate.py [--part h100-sxm] [--profiles decode-llama-8b,...] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from harness.profiles import list_profiles
from harness.sweep.loop import LiveStatus
from harness.sweep.run import SweepOptions, run_sweep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="h100-sxm")
    ap.add_argument("--profiles", default=",".join(list_profiles()))
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # a state of their own: no lock or setting of another run is touched
        os.environ["TOKBENCH_STATE_DIR"] = f"{tmp}/state"
        os.environ["TOKBENCH_SIM_STATE_DIR"] = f"{tmp}/sim"
        print(f"| profile ({args.part}, repeats {args.repeats}) | points | estimate | device time | estimate / device "
              "| simulation: estimate | simulation: took |")
        print("|---|---|---|---|---|---|---|")
        for name in args.profiles.split(","):
            opts = dict(profile=name, repeats=args.repeats, backend="sim", sim_gpu=args.part)
            dry = run_sweep(SweepOptions(dry_run=True, out=f"{tmp}/dry", **opts))
            status, wall0 = LiveStatus(), time.perf_counter()
            run = run_sweep(SweepOptions(out=f"{tmp}/runs", **opts), status=status)
            wall = time.perf_counter() - wall0
            print(f"| {name} | {len(run.points)} | {dry.estimate_s / 60:.1f} min | {status.device_s / 60:.1f} min | "
                  f"{dry.estimate_s / status.device_s - 1:+.0%} | {dry.sim_wall_s:.0f} s | {wall:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
