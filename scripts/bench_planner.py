"""Benchmark: plan a year of hourly grid data (8,760 intervals) with ten settings and a battery.

Targets (issue 16): the default command (`tokbench plan` on the year: the plan, three fixed
policies and the surplus what-if, outputs and plot) ≤ 5 s end to end, the solve ≤ 2 s, memory ≤ 1 GB;
measured in the same run as the PyPSA reference model of the same problem, and given as ratios.
The command's two halves are also timed in process (every scenario; the files and the plot), so
what is left of the end-to-end time is Python's start and the imports.

    python scripts/bench_planner.py [--repeats 3] [--hours 8760] [--no-pypsa]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.planner.capacity import build_fleet  # noqa: E402
from harness.planner.grid import GridSignal  # noqa: E402
from harness.planner.horizon import Scenario, build_horizon  # noqa: E402
from harness.planner.lp import ScheduleModel  # noqa: E402
from harness.planner.outputs import load_plotting, write_outputs  # noqa: E402
from harness.planner.plan import plan  # noqa: E402
from harness.planner.schedule import scenario_result  # noqa: E402
from harness.planner.site import Site  # noqa: E402
from harness.records.curves import load_curve, save_curve  # noqa: E402

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


def write_case(folder: Path, hours: int) -> Path:
    """The benchmark's site as files (site TOML, curve, grid CSV), for the end-to-end command."""
    site, fleet, h, _n = bench_inputs(hours)
    curve = load_curve(ROOT / "profiles/curves/h100-train-llama-1b.json")
    fit = curve.fits[0]
    keep = [i for i, s in enumerate(fit.settings) if s >= 250]
    cols = ("settings", "tokens_per_s", "power_mean_w", "power_p99_w", "power_max_1s_w")
    sub = fit.model_copy(update={k: [getattr(fit, k)[i] for i in keep] for k in cols})
    save_curve(curve.model_copy(update={"fits": [sub]}), folder / "curve.json")
    year_grid(hours).frame.to_csv(folder / "grid.csv", date_format="%Y-%m-%dT%H:%M:%S")
    (folder / "site.toml").write_text(
        'name = "bench"\npower_budget_mw = 12.0\npue = 1.2\nprovision = "p99"\n'
        '[[units]]\nname = "node"\ncount = 1100\ngpus_per_unit = 8\noverhead_w_per_unit = 2400.0\n'
        '[[workloads]]\ncurve = "curve.json"\n'
        '[grid]\nfile = "grid.csv"\nexport_mw = 4.0\n'
        "[battery]\nenergy_mwh = 10.0\ncharge_mw = 4.0\ndischarge_mw = 4.0\nround_trip_efficiency = 0.88\n"
        "soc_min = 0.1\nsoc_max = 0.95\n"
        '[[generation]]\nname = "solar"\ncolumn = "solar_mw"\n'
    )
    return folder / "site.toml"


def _median(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"


def _timed(fn) -> tuple[float, float, object]:
    """Wall and CPU seconds (this process and its children) of one call, and what it returned."""

    def cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    c0, t0 = cpu(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, cpu() - c0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hours", type=int, default=8760)
    ap.add_argument("--no-pypsa", action="store_true", help="skip the PyPSA reference model")
    args = ap.parse_args()
    site, fleet, h, settings = bench_inputs(args.hours)
    sc = Scenario("plan")
    load_plotting()  # in process the halves are timed without imports (the command pays them)
    if not args.no_pypsa:
        from harness.planner.network import build_network, optimize

        build_network(site, fleet, h, [sc])  # imports and first-call costs, outside the timing

    def ours():
        m = ScheduleModel(site, fleet, h)
        return m, scenario_result(m, sc, m.solve(sc))

    def reference():
        n = build_network(site, fleet, h, [sc])
        status, cond = optimize(n)
        assert status == "ok", (status, cond)
        return n

    # each repeat times them back to back, so they share the machine's load; ratios per repeat
    times: dict[str, list[tuple[float, float]]] = {"e2e": [], "solve": [], "all": [], "out": [], "ref": []}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        site_file = write_case(Path(tmp), args.hours)
        # the command, reporting its own peak memory on exit: VmHWM of its own address space (ru_maxrss
        # would keep the pages a child shares with this process, PyPSA included, between fork and exec)
        wrapper = (
            "import re, runpy, sys\nsys.argv = ['tokbench', *sys.argv[1:]]\ntry:\n"
            "    runpy.run_module('harness.cli', run_name='__main__')\nfinally:\n"
            "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
            "    print('maxrss', hwm, file=sys.stderr)\n"
        )
        cmd = [sys.executable, "-c", wrapper, "plan", str(site_file), "--out", str(Path(tmp) / "out")]
        rss_kb: list[int] = []
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        for _ in range(args.repeats):
            loads.append(os.getloadavg()[0])
            wall, cpu, done = _timed(lambda: subprocess.run(cmd, capture_output=True, text=True, env=env))
            assert done.returncode == 0, done.stderr
            rss_kb.append(int(done.stderr.strip().splitlines()[-1].split()[1]))
            times["e2e"].append((wall, cpu))
            wall, cpu, (m, res) = _timed(ours)
            times["solve"].append((wall, cpu))
            # the command's two halves in this process: every scenario (plan() with its comparisons,
            # matplotlib already imported), then the files and the plot
            wall, cpu, whole = _timed(lambda: plan(site_file))
            times["all"].append((wall, cpu))
            wall, cpu, _w = _timed(lambda r=whole: write_outputs(r, Path(tmp) / "again"))
            times["out"].append((wall, cpu))
            if not args.no_pypsa:
                wall, cpu, n = _timed(reference)
                times["ref"].append((wall, cpu))
                assert abs(n.objective - res.objective_value) <= 1e-6 * abs(res.objective_value)
        rows = len(pd.read_csv(Path(tmp) / "out" / "schedule.csv"))
        rss_mb = max(rss_kb) / 1024

    def line(key: str) -> str:
        w = [x[0] for x in times[key]]
        c = [x[1] for x in times[key]]
        return f"{_median(w)} wall, median {statistics.median(c):.2f} s CPU"

    print(
        f"{args.hours} intervals, {settings} settings ({len(fleet.workloads[0].hull())} on the hull), battery, "
        f"solar, export: {m.ncol} columns, {m.nrow} rows; load average {min(loads):.1f}-{max(loads):.1f} on "
        f"{os.cpu_count()} CPUs"
    )
    print(f" end to end: {line('e2e')} (`tokbench plan` on the year: plan, 3 fixed policies, surplus what-if, "
          f"{rows} rows, plot), peak memory {rss_mb:.0f} MB")  # fmt: skip
    print(f"      solve: {line('solve')} (the plan's model: build, HiGHS, read-back)")
    print(f"  scenarios: {line('all')} (in process: the plan, 3 fixed policies, the surplus what-if)")
    print(f"    outputs: {line('out')} (in process: summary.json, 5 schedule CSVs, curtailments, plan.png)")
    if times["ref"]:
        print(f"PyPSA model: {line('ref')} (build + solve, same problem; objective agrees to 1e-6)")
        for k in (0, 1):
            what = ("wall", "CPU")[k]
            solve = statistics.median(s[k] / r[k] for s, r in zip(times["solve"], times["ref"], strict=True))
            e2e = statistics.median(e[k] / r[k] for e, r in zip(times["e2e"], times["ref"], strict=True))
            print(f"     ratios ({what}, median per repeat): solve / PyPSA {solve:.2f}, end to end / PyPSA {e2e:.2f}")
    print(f"tokens {res.totals['tokens_gtok']:,.0f} Gtok over the year")


if __name__ == "__main__":
    main()
