"""Sweep benchmarks (results in docs/benchmarks.md):

1. Adaptive Max-Q search vs an exhaustive 25 W grid on simulated parts, both scored against the
   simulator's noise-free truth: device-seconds spent and tokens/J lost at the chosen setting.
2. Wall time of the default simulated sweep (`tokbench sweep` with no arguments), and the share
   of that time spent in harness code rather than in the simulated workload (cProfile).

    python scripts/bench_sweep.py [--parts h100-sxm,a100-sxm] [--seeds 3]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from harness.devices.catalog import GPU_PROFILE_DIR
from harness.sweep.run import SweepOptions, run_sweep

WINDOW = dict(window_s=10.0, warmup_min_s=3.0, warmup_max_s=30.0, backend="sim")


def _quiet_part(part: str, tmp: Path) -> str:
    text = (GPU_PROFILE_DIR / f"{part}.toml").read_text()
    text = re.sub(r"(?m)^step_jitter_sigma = [0-9.eE+-]+$", "step_jitter_sigma = 0.0", text)
    path = tmp / f"{part}-quiet.toml"
    path.write_text(text.replace(f'id = "{part}"', f'id = "{part}-quiet"'))
    return str(path)


def _by_setting(result) -> pd.DataFrame:
    df = pd.DataFrame([p.__dict__ for p in result.points])
    g = df.groupby("setting").agg(tokens=("tokens", "sum"), joules=("joules", "sum"),
                                  true_joules=("true_joules", "sum"), seconds=("seconds", "sum"),
                                  warmup=("warmup_s", "sum"))
    return g.assign(tpj=g.tokens / g.joules, true_tpj=g.tokens / g.true_joules)


def _device_seconds(result) -> float:
    df = pd.DataFrame([p.__dict__ for p in result.points])
    return float((df.seconds + df.warmup_s).sum())


def _interp(curve: pd.Series, setting: float) -> float:
    """The noise-free tokens/J at ``setting`` (linear between the 5 W truth grid's points)."""
    import numpy as np

    return float(np.interp(setting, curve.index.to_numpy(dtype=float), curve.to_numpy(dtype=float)))


def search_vs_grid(parts: list[str], seeds: int, out: Path) -> list[dict]:
    rows = []
    for part in parts:
        truth = _by_setting(run_sweep(SweepOptions(profile="train-llama-1b", step=5, repeats=1, out=str(out),
                                                   sim_gpu=_quiet_part(part, out), **WINDOW)))
        true_curve = truth.true_tpj.sort_index()
        true_best = true_curve.max()

        for seed in range(seeds):
            for name, opts in (("grid 25 W x3", dict(step=25, repeats=3)), ("search max-q", dict(search="max-q"))):
                res = run_sweep(SweepOptions(profile="train-llama-1b", sim_gpu=part, sim_seed=seed,
                                             out=str(out), **opts, **WINDOW))
                # the search's own answer; for the grid, the setting of most measured tokens/J
                chosen = res.searches[0].setting if res.searches else _by_setting(res).tpj.idxmax()
                rows.append(dict(part=part, seed=seed, method=name, points=len(res.points),
                                 device_s=_device_seconds(res), chosen_w=chosen,
                                 loss_pct=100 * (1 - _interp(true_curve, chosen) / true_best)))
    return rows


def default_sweep_wall(out: Path) -> tuple[float, float]:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    run_sweep(SweepOptions(out=str(out), backend="sim"))
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    sim = sum(v[3] for k, v in stats.stats.items() if "devices/simulated.py" in k[0] and k[2] == "advance_until")
    return wall, 100 * (1 - sim / wall)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="h100-sxm,a100-sxm")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("TOKBENCH_SIM_STATE_DIR", str(Path(tmp) / "sim"))
        os.environ.setdefault("TOKBENCH_STATE_DIR", str(Path(tmp) / "state"))
        rows = search_vs_grid(args.parts.split(","), args.seeds, Path(tmp))
        df = pd.DataFrame(rows)
        summary = df.groupby(["part", "method"]).agg(points=("points", "mean"), device_s=("device_s", "mean"),
                                                     loss_pct_mean=("loss_pct", "mean"),
                                                     loss_pct_max=("loss_pct", "max"))
        print(summary.round(2).to_string())
        for part in df.part.unique():
            grid = df[(df.part == part) & (df.method.str.startswith("grid"))].device_s.mean()
            search = df[(df.part == part) & (df.method.str.startswith("search"))].device_s.mean()
            print(f"{part}: search spends {search / grid:.2f} of the grid's device-seconds")
        walls = [default_sweep_wall(Path(tmp)) for _ in range(3)]
        print(f"default simulated sweep: wall {statistics.median(w for w, _ in walls):.2f} s (median of 3), "
              f"harness share {statistics.median(h for _, h in walls):.0f}% (rest: simulated GPU physics)")


if __name__ == "__main__":
    main()
