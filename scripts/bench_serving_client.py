"""Serving client benchmarks (results in docs/benchmarks.md, section "Serving client"):

1. Client efficiency: tokbench's load generator (workloads/loadgen.py) against a local server that
   answers instantly (tests/serving_server.py --no-model), closed loop. Reported per client core:
   requests (or streamed chunks) completed per CPU-second of the client process, so a server that
   is itself slower than the client does not hide the client's cost. Targets: >= 500 streamed
   requests/s (1-token answers) and >= 20,000 streamed chunks/s (64-token answers) per core.
2. Harness overhead on the server's throughput, the client on the same node: the tiny Llama on
   the CPU (one thread) under the same closed-loop load, the server pinned to one core, the client
   either on another core or on the server's own core. The ratio (shared / separate) is the share
   of throughput the server keeps when the client takes its CPU; on a GPU node the server's work
   is on the GPU, so this is a bound from below.

    python scripts/bench_serving_client.py [--seconds 5] [--concurrency 64] [--pairs 3]
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


def overhead(seconds: float, concurrency: int, pairs: int) -> dict:
    """Server tokens/s with the client on its own core, then on the server's core, in ``pairs``
    interleaved pairs (a shared host's noise hits both sides of a pair alike); the median ratio."""
    import statistics

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return {"skipped": "needs two cores"}
    ratios, rows = [], []
    for _ in range(pairs):
        pair = {}
        for label, client_cpus in (("separate", {cores[1]}), ("shared", {cores[0]})):
            port = serving_server.free_port()
            server = _server(port, cpus={cores[0]})
            os.sched_setaffinity(0, client_cpus)
            try:
                pair[label] = drive(f"http://127.0.0.1:{port}", seconds, concurrency, output_len=32, input_len=64)
            finally:
                os.sched_setaffinity(0, set(cores))
                server.terminate()
                server.wait(10)
        ratios.append(pair["shared"]["chunks_per_s"] / pair["separate"]["chunks_per_s"])
        rows.append({k: round(v["chunks_per_s"], 1) for k, v in pair.items()}
                    | {"client_cpu_share": round(pair["shared"]["client_cpu_s"] / pair["shared"]["wall_s"], 4)})
    return {"pairs": rows, "ratios": [round(r, 3) for r in ratios], "median_ratio": round(statistics.median(ratios), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--overhead-concurrency", type=int, default=8)
    p.add_argument("--pairs", type=int, default=3)
    a = p.parse_args()
    eff = efficiency(a.seconds, a.concurrency)
    for row in eff:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    print(json.dumps({"overhead": overhead(a.seconds, a.overhead_concurrency, a.pairs)}))


if __name__ == "__main__":
    main()
