"""Benchmark: plan a year of hourly grid data (8,760 intervals) with ten settings and a battery.

Target (issue 7): build + solve ≤ 5 s on the development machine (2 cores). Prints the phases
(network build, HiGHS solve through linopy, read-back) as medians over the repeats, one line each.

    python scripts/bench_planner.py [--repeats 3] [--hours 8760]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.planner.capacity import build_fleet  # noqa: E402
from harness.planner.grid import GridSignal  # noqa: E402
from harness.planner.network import (  # noqa: E402
    Scenario,
    _readback,
    build_horizon,
    build_network,
    optimize,
)
from harness.planner.site import Site  # noqa: E402
from harness.records.curves import load_curve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def year_grid(hours: int, seed: int = 0) -> GridSignal:
    """A synthetic year: daily and seasonal swings in available power and price, windy spells,
    evening peaks and a stress event every few weeks."""
    rng = np.random.default_rng(seed)
    t = np.arange(hours)
    hour, day = t % 24, t // 24
    avail = 11.0 + 1.5 * np.sin(2 * np.pi * day / 365) + rng.normal(0, 0.8, hours)
    avail -= np.where((hour >= 17) & (hour <= 20), 3.0, 0.0)  # evening peak
    windy = rng.random(hours // 24 + 1)[day] < 0.2
    avail += np.where(windy & ((hour < 8) | (hour >= 22)), 3.0, 0.0)
    stress = (day % 17 == 5) & ((hour == 21) | (hour == 22))
    avail = np.where(stress, 3.0, np.clip(avail, 0.0, None))
    price = 55 + 25 * np.sin(2 * np.pi * (hour - 9) / 24) + rng.normal(0, 8, hours)
    price = np.where(windy & ((hour < 8) | (hour >= 22)), price - 60, price)
    price = np.where(stress, 900.0, price)
    solar = np.clip(2.0 * np.sin(np.pi * (hour - 7) / 10), 0.0, None) * (rng.random(hours) * 0.5 + 0.5)
    idx = pd.date_range("2026-01-01", periods=hours, freq="h", name="timestamp")
    frame = pd.DataFrame(
        {"available_mw": avail, "price_per_mwh": price, "event": stress.astype(float), "solar_mw": solar},
        index=idx,
    )
    return GridSignal(frame=frame, step_h=1.0, source="synthetic year")


def bench_inputs(hours: int):
    """The benchmark's site, fleet and horizon: the example factory on ten settings of the
    reference H100 curve (250-700 W), a 10 MWh battery, solar, and export in stress events."""
    curve = load_curve(ROOT / "profiles/curves/h100-train-llama-1b.json")
    fit = curve.fits[0]
    keep = [i for i, s in enumerate(fit.settings) if s >= 250]
    cols = ("settings", "tokens_per_s", "power_mean_w", "power_p99_w", "power_max_1s_w")
    sub = fit.model_copy(update={k: [getattr(fit, k)[i] for i in keep] for k in cols})
    curve = curve.model_copy(update={"fits": [sub]})
    site = Site.model_validate(
        {
            "name": "bench", "power_budget_mw": 12.0, "pue": 1.2, "provision": "p99",
            "units": [{"name": "node", "count": 1100, "gpus_per_unit": 8, "overhead_w_per_unit": 2400}],
            "workloads": [{"curve": "unused.json"}], "grid": {"export_mw": 4.0},
            "battery": {"energy_mwh": 10, "charge_mw": 4, "discharge_mw": 4, "round_trip_efficiency": 0.88,
                        "soc_min": 0.1, "soc_max": 0.95},
            "generation": [{"name": "solar", "column": "solar_mw"}],
        }
    )  # fmt: skip
    fleet = build_fleet(site, [curve])
    return site, fleet, build_horizon(site, fleet, year_grid(hours)), len(keep)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hours", type=int, default=8760)
    args = ap.parse_args()
    t = time.perf_counter()
    import linopy  # noqa: F401
    import pypsa  # noqa: F401

    import_s = time.perf_counter() - t  # once per process, reported apart from the repeats
    site, fleet, h, settings = bench_inputs(args.hours)
    segments = len(fleet.workloads[0].segments()[0])
    sc = Scenario("plan")
    wall: dict[str, list[float]] = {"build": [], "solve": [], "read-back": []}
    cpu: list[float] = []
    for _ in range(args.repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        n = build_network(site, fleet, h, [sc])
        t1 = time.perf_counter()
        status, cond = optimize(n)
        t2 = time.perf_counter()
        res = _readback(n, site, fleet, h, sc)
        t3 = time.perf_counter()
        cpu.append(time.process_time() - c0)
        assert status == "ok", (status, cond)
        for k, v in zip(wall, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            wall[k].append(v)
    print(
        f"{args.hours} intervals, {settings} settings ({segments} on the hull), battery, solar, export: "
        f"{int(n.model.nvars)} variables, {int(n.model.ncons)} constraints; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'imports':>11}: {import_s:.2f} s wall (pypsa and linopy, once per process)")
    for k, v in wall.items():
        print(f"{k:>11}: median {statistics.median(v):.2f} s wall (min {min(v):.2f}, max {max(v):.2f}, n={len(v)})")
    both = [a + b for a, b in zip(wall["build"], wall["solve"], strict=True)]
    print(f"build+solve: median {statistics.median(both):.2f} s wall, min {min(both):.2f} s (target ≤ 5 s)")
    print(f"  all of it: median {statistics.median(cpu):.2f} s CPU (process time, all threads)")
    print(f"tokens {res.totals['tokens_gtok']:,.0f} Gtok over the year")


if __name__ == "__main__":
    main()
