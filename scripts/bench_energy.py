"""Energy error against the simulator's ground truth (results in docs/benchmarks.md):
window lengths 0.5-60 s x load shapes (steady, bursty, ramp) x methods:

- counter, aligned edges (tokbench's ``Window``),
- counter, unaligned edges (read the counter as it is at each edge: off by up to one update each),
- polling the 1 s average-power field at 1 Hz, mean x duration (what nvidia-smi-based tools do),
- integrating the instant-power field polled at 20 Hz, and the drained 50 Hz power history.

Each window follows a 3 s warm-up of the same load (as in a sweep), on a fresh simulated H100 per
seed. Writes a CSV and a plot.

    python scripts/bench_energy.py [--seeds 5] [--out docs/energy_error.png]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from harness.devices import open_devices  # noqa: E402
from harness.telemetry import Sampler, Window  # noqa: E402
from harness.telemetry import shapes as load_shapes  # noqa: E402

LENGTHS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
SHAPES = ("steady", "bursty", "ramp")
METHODS = {
    "aligned": "counter, aligned edges",
    "unaligned": "counter, unaligned edges",
    "poll_avg_1hz": "1 Hz polling of average power",
    "instant_20hz": "instant power, 20 Hz integral",
    "history_50hz": "power history, 50 Hz integral",
}


def one(shape: str, length_s: float, seed: int) -> list[dict]:
    gpu = open_devices("sim", sim_seed=seed).devices[0]
    clock = gpu.clock
    run = load_shapes.get(shape)
    rng = random.Random(seed)
    rows = []
    with Sampler([gpu], rate_hz=20.0) as sampler:
        run(gpu, 3.0, rng)  # warm-up
        polls: list[float] = []
        with Window([gpu], sampler, sync=gpu.synchronize, knob="observe", min_seconds=0.0) as w:
            polls.append(gpu.read().power_average_w)
            cancel = clock.call_every(1.0, lambda _t: polls.append(gpu.read().power_average_w))
            run(gpu, length_s + rng.uniform(0.0, 0.1), rng)  # not a multiple of the counter period
        cancel()
        r = w.results[0]
        truth = r.true_joules
        est = {
            "aligned": r.joules,
            "poll_avg_1hz": sum(polls) / len(polls) * r.seconds,
            "instant_20hz": r.integrals_j.get("instant"),
            "history_50hz": r.integrals_j.get("history"),
        }
        run(gpu, 1.0, rng)
        with Window([gpu], sampler, sync=gpu.synchronize, knob="observe", min_seconds=0.0, align=False) as wu:
            run(gpu, length_s + rng.uniform(0.0, 0.1), rng)
        ru = wu.results[0]
    for method, value in est.items():
        rows.append({"shape": shape, "length_s": length_s, "seed": seed, "method": method,
                     "error": value / truth - 1.0})
    rows.append({"shape": shape, "length_s": length_s, "seed": seed, "method": "unaligned",
                 "error": ru.joules / ru.true_joules - 1.0})
    return rows


def plot(df: pd.DataFrame, out: Path) -> None:
    g = df.assign(abs_pct=df.error.abs() * 100).groupby(["shape", "method", "length_s"]).abs_pct
    med, worst = g.median(), g.max()
    fig, axes = plt.subplots(1, len(SHAPES), figsize=(13, 4.6), sharey=True)
    for ax, shape in zip(axes, SHAPES):
        for method, label in METHODS.items():
            m = med.loc[shape, method]
            line, = ax.plot(m.index, m.values, marker="o", label=label)
            ax.fill_between(m.index, m.values, worst.loc[shape, method].values, color=line.get_color(), alpha=0.12)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(LENGTHS_S, [f"{x:g}" for x in LENGTHS_S])
        ax.minorticks_off()
        ax.set_title(f"{shape} load")
        ax.set_xlabel("window length (s)")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("|energy error| vs ground truth (%)\nline: median, band: up to worst seed")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(METHODS), fontsize=9, frameon=False)
    fig.suptitle("Simulated H100: window energy error by method (dashed: 0.5%)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out, dpi=110)


def table(df: pd.DataFrame) -> str:
    g = df.assign(abs_pct=df.error.abs() * 100).groupby(["length_s", "shape", "method"]).abs_pct
    med = g.median().unstack(["shape", "method"])
    lines = ["| window | " + " | ".join(f"{s}: {m}" for s in SHAPES for m in ("aligned", "unaligned", "poll_avg_1hz"))
             + " |", "|---" * (1 + 3 * len(SHAPES)) + "|"]
    for length in med.index:
        cells = [f"{med.loc[length, (s, m)]:.2f}" for s in SHAPES for m in ("aligned", "unaligned", "poll_avg_1hz")]
        lines.append(f"| {length:g} s | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("docs/energy_error.png"))
    ap.add_argument("--csv", type=Path, default=Path("results/bench_energy.csv"))
    args = ap.parse_args()
    os.environ.setdefault("TOKBENCH_SIM_STATE_DIR", tempfile.mkdtemp(prefix="tokbench-bench-"))
    rows = [row for shape in SHAPES for length in LENGTHS_S for seed in range(args.seeds)
            for row in one(shape, length, seed)]
    df = pd.DataFrame(rows)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.csv, index=False)
    plot(df, args.out)
    print("median |error| in % (of the simulator's true joules)")
    print(table(df))
    worst = df[df.method == "aligned"].groupby("length_s").error.apply(lambda e: e.abs().max() * 100)
    print("\nworst aligned |error| % by window length:", {k: round(v, 3) for k, v in worst.items()})


if __name__ == "__main__":
    main()
