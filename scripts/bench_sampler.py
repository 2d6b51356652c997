"""Sampler benchmarks (results in docs/benchmarks.md):

1. Cost of the sampler thread to a CPU-bound torch workload: interleaved pairs with and without a
   sampler at 20 Hz (and 100 Hz), median throughput ratio with a 95% interval. Target: < 0.5% loss
   at 20 Hz. Without a GPU the thread reads a simulated GPU on the wall clock (Python work per read
   comparable to the NVML backend's ~10 cheap queries); with one it reads the real GPUs.
2. Highest sustained sample rate: on the simulated backend (driven by the simulated clock:
   readings delivered vs expected, and wall seconds per simulated second), and of the thread on
   this machine (achieved vs requested rate).

    python scripts/bench_sampler.py [--pairs 30] [--trial-s 0.5] [--backend auto|sim]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from harness.devices import open_devices
from harness.devices.simulated import Load
from harness.telemetry import Sampler
from harness.testing.checks import WallClockView, paired_ratio


def _devices(backend: str):
    ds = open_devices(backend)
    if ds.backend == "sim":
        return [WallClockView(d) for d in ds.devices], "simulated H100 read on the wall clock"
    return ds.devices, f"{len(ds.devices)} x {ds.devices[0].info.name} (NVML)"


def _matmul_trial(seconds: float, n: int = 384) -> float:
    """Matmuls per second over about ``seconds`` (CPU, all intra-op threads)."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    iters, t0 = 0, time.perf_counter()
    while True:
        for _ in range(20):
            a @ b
        iters += 20
        el = time.perf_counter() - t0
        if el >= seconds:
            return iters / el


def overhead(devices, rate_hz: float, pairs: int, trial_s: float):
    def with_sampler() -> float:
        s = Sampler(devices, rate_hz=rate_hz, threaded=True)
        s.start()
        try:
            return _matmul_trial(trial_s)
        finally:
            s.stop()

    _matmul_trial(1.0)  # warm the allocator and thread pool
    return paired_ratio(lambda: _matmul_trial(trial_s), with_sampler, pairs=pairs)


def cpu_share(devices, rate_hz: float, seconds: float = 5.0) -> float:
    """Share of one CPU core the sampler thread uses (process CPU time while the main thread
    sleeps): an upper bound on what it can take from a CPU-bound workload, robust to other load
    on the machine."""
    s = Sampler(devices, rate_hz=rate_hz, threaded=True)
    c0, t0 = time.process_time(), time.perf_counter()
    s.start()
    time.sleep(seconds)
    s.stop()
    return (time.process_time() - c0) / (time.perf_counter() - t0)


def sim_rates(rates: list[float], sim_s: float = 20.0) -> list[dict]:
    rows = []
    for rate in rates:
        gpu = open_devices("sim").devices[0]
        clock = gpu.clock
        s = Sampler([gpu], rate_hz=rate)
        w0 = time.perf_counter()
        s.start()
        t0 = clock.now()
        while clock.now() - t0 < sim_s:
            gpu.submit(Load(flops=0.05 * 650e12))
            gpu.synchronize()
        s.stop()
        wall = time.perf_counter() - w0
        got = len(s.readings(0, 0, 1e12))
        rows.append({"rate_hz": rate, "delivered": got / ((clock.now() - t0) * rate), "wall_per_sim_s": wall / sim_s})
    return rows


def thread_rates(devices, rates: list[float], seconds: float = 2.0) -> list[dict]:
    rows = []
    for rate in rates:
        s = Sampler(devices, rate_hz=rate, threaded=True)
        t0 = time.perf_counter()
        s.start()
        time.sleep(seconds)
        s.stop()
        el = time.perf_counter() - t0
        got = len(s.readings(devices[0].info.index, 0, 1e12))
        rows.append({"rate_hz": rate, "achieved_hz": got / el})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--trial-s", type=float, default=0.5)
    ap.add_argument("--backend", default="auto", choices=("auto", "sim"))
    args = ap.parse_args()
    os.environ.setdefault("TOKBENCH_SIM_STATE_DIR", tempfile.mkdtemp(prefix="tokbench-bench-"))
    devices, what = _devices(args.backend)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {os.cpu_count()} CPUs; "
          f"sampler reads {what}")
    print("\n| sampler | throughput with / without (median) | 95% interval | pairs | sampler CPU (share of a core) |"
          "\n|---|---|---|---|---|")
    for rate in (20.0, 100.0):
        r = overhead(devices, rate, args.pairs, args.trial_s)
        cpu = cpu_share(devices, rate)
        print(f"| thread, {rate:g} Hz | {r.median:.4f} | {r.lo:.4f}-{r.hi:.4f} | {len(r.ratios)} | {cpu:.3%} |")
    print("\n| simulated-clock sampler, rate | readings delivered | wall s per simulated s |\n|---|---|---|")
    for row in sim_rates([20, 200, 1000, 5000, 20000]):
        print(f"| {row['rate_hz']:g} Hz | {row['delivered']:.1%} | {row['wall_per_sim_s']:.3f} |")
    print("\n| thread sampler, requested | achieved |\n|---|---|")
    for row in thread_rates(devices, [20, 100, 500, 1000, 5000]):
        print(f"| {row['rate_hz']:g} Hz | {row['achieved_hz']:.0f} Hz |")


if __name__ == "__main__":
    main()
