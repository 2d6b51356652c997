"""Serving client benchmarks (results in docs/benchmarks.md, section "Serving client"):

1. Client efficiency: tokbench's load generator (workloads/loadgen.py) against a local server that
   answers instantly (tests/serving_server.py --no-model), closed loop. Reported per client core:
   requests (or streamed chunks) completed per CPU-second of the client process, so a server that
   is itself slower than the client does not hide the client's cost. Targets: >= 500 streamed
   requests/s (1-token answers) and >= 20,000 streamed chunks/s (64-token answers) per core.
2. Harness overhead on the server's throughput, the client on the same node: the tiny Llama on
   the CPU (one thread, pinned to one core) under one steady closed-loop load, the client's thread
   moved between another core and the server's own core in alternating short segments. The ratio
   (shared / separate) is the share of throughput the server keeps when the client takes its CPU;
   on a GPU node the server's work is on the GPU, so this is a bound from below.

    python scripts/bench_serving_client.py [--seconds 5] [--concurrency 64] [--pairs 10] [--segment-s 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import serving_server  # noqa: E402  (tests/serving_server.py: the local server)

from workloads.loadgen import LoadGenerator, LoadSpec  # noqa: E402


def _server(port: int, *flags: str, cpus: set[int] | None = None) -> subprocess.Popen:
    wrapper = ("taskset", "-c", ",".join(map(str, sorted(cpus)))) if cpus is not None else ()
    return serving_server.spawn(port, *flags, timeout_s=120, wrapper=wrapper)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def drive(url: str, seconds: float, concurrency: int, output_len: int, input_len: int = 16) -> dict:
    """Closed loop for ``seconds``; completed requests and chunks per wall second and per CPU second."""
    gen = LoadGenerator(LoadSpec(url=url, model="tiny", concurrency=concurrency, input_len=input_len,
                                 output_len=output_len, max_seconds=seconds + 30)).start()
    time.sleep(1.0)  # connections open, steady
    c0, t0 = _cpu_s(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = _cpu_s(), time.monotonic()
    records = gen.records()
    gen.stop()
    done = [r for r in records if r.t_end and t0 <= r.t_end < t1 and r.ok]
    errors = sum(1 for r in records if r.t_end and t0 <= r.t_end < t1 and not r.ok)
    chunks = sum(sum(1 for t in r.chunk_times if t0 <= t < t1) for r in records)
    cpu = c1 - c0
    return {"concurrency": concurrency, "output_len": output_len, "wall_s": t1 - t0, "client_cpu_s": cpu,
            "requests": len(done), "errors": errors, "chunks": chunks,
            "requests_per_s": len(done) / (t1 - t0), "chunks_per_s": chunks / (t1 - t0),
            "requests_per_cpu_s": len(done) / cpu, "chunks_per_cpu_s": chunks / cpu}


def efficiency(seconds: float, concurrency: int) -> list[dict]:
    port = serving_server.free_port()
    server = _server(port, "--no-model")
    try:
        url = f"http://127.0.0.1:{port}"
        return [drive(url, seconds, concurrency, output_len=1), drive(url, seconds, concurrency, output_len=64)]
    finally:
        server.terminate()
        server.wait(10)


def _chunks(records: list, t0: float, t1: float) -> int:
    return sum(sum(1 for t in r.chunk_times if t0 <= t < t1) for r in records)


def overhead(seconds: float, concurrency: int, pairs: int) -> dict:
    """Server tokens/s (the tiny Llama, pinned to one core) with the client thread on another core,
    then on the server's core, alternating in ``pairs`` short segments under one steady load (a
    shared host's noise hits both sides of a pair alike); the median ratio and its spread."""
    import statistics

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return {"skipped": "needs two cores"}
    port = serving_server.free_port()
    server = _server(port, cpus={cores[0]})
    gen = LoadGenerator(LoadSpec(url=f"http://127.0.0.1:{port}", model="tiny", concurrency=concurrency,
                                 input_len=64, output_len=32, max_seconds=2 * pairs * (seconds + 1) + 60)).start()
    tid = gen._thread.native_id if gen._thread else 0
    rates: dict[str, list[float]] = {"separate": [], "shared": []}
    cpu_share: list[float] = []
    try:
        time.sleep(2.0)
        for i in range(pairs):
            order = ("separate", "shared") if i % 2 == 0 else ("shared", "separate")
            for label in order:
                os.sched_setaffinity(tid, {cores[1]} if label == "separate" else {cores[0]})
                time.sleep(0.3)  # requests in flight move over
                c0, t0 = _cpu_s(), time.monotonic()
                time.sleep(seconds)
                c1, t1 = _cpu_s(), time.monotonic()
                rates[label].append(_chunks(gen.records(), t0, t1) / (t1 - t0))
                if label == "shared":
                    cpu_share.append((c1 - c0) / (t1 - t0))
                gen.prune(t0 - 1.0)
    finally:
        gen.stop()
        server.terminate()
        server.wait(10)
    ratios = [b / a for a, b in zip(rates["separate"], rates["shared"])]
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return {"server_chunks_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
            "ratios": [round(r, 3) for r in ratios], "median_ratio": round(statistics.median(ratios), 3),
            "ratio_iqr": [round(q[0], 3), round(q[2], 3)],
            "client_cpu_share_of_a_core": round(statistics.median(cpu_share), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--overhead-concurrency", type=int, default=8)
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--segment-s", type=float, default=2.0, help="seconds per side of an overhead pair")
    a = p.parse_args()
    eff = efficiency(a.seconds, a.concurrency)
    for row in eff:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    print(json.dumps({"overhead": overhead(a.segment_s, a.overhead_concurrency, a.pairs)}))


if __name__ == "__main__":
    main()
