"""The load generator and the interval accounting against a real small server on 127.0.0.1 (the
``tiny`` Llama on the CPU, tests/serving_server.py), checked against the server's own log: the
same client and accounting code a GPU run uses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import serving_server
from scipy import stats

from workloads.loadgen import LoadGenerator, LoadSpec, RequestRecord
from workloads.serving_metrics import Slo, interval_fields, tpot_s


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("srv") / "server.jsonl"
    port = serving_server.free_port()
    proc = serving_server.spawn(port, "--log", str(log), "--token-delay-ms", "30", "--prefill-delay-ms", "300",
                                timeout_s=120)
    yield f"http://127.0.0.1:{port}", log
    proc.terminate()
    proc.wait(10)


def _server_log(path: Path) -> dict[tuple, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {tuple(r["head"]): r for r in rows}


def _run(url: str, seconds: float, **kw) -> tuple[list[RequestRecord], LoadGenerator, float, float]:
    gen = LoadGenerator(LoadSpec(url=url, model="tiny", max_seconds=30, **kw)).start()
    t0 = time.monotonic()
    time.sleep(seconds)
    t1 = time.monotonic()
    gen.stop()
    return gen.records(), gen, t0, t1


def _head(r: RequestRecord, spec: LoadSpec) -> tuple:
    from workloads.loadgen import prompt_ids

    return tuple(prompt_ids(r.index, spec.input_len, spec.seed)[:3])


def test_closed_loop_counts_times_and_concurrency_agree_with_the_server(server):
    url, log = server
    log.write_text("")
    n = 4
    records, gen, t0, t1 = _run(url, 3.0, concurrency=n, input_len=24, output_len=12, seed=1)
    done = [r for r in records if r.t_end and r.ok]
    assert len(done) >= 3 * n
    srv = _server_log(log)
    ttft_c, ttft_s, tpot_c, tpot_s_ = [], [], [], []
    for r in done:
        s = srv[_head(r, gen.spec)]
        # exact token counts: the usage report, the streamed chunks and the server's log agree
        assert (r.prompt_tokens, r.completion_tokens, len(r.chunk_times)) == (s["prompt_tokens"],
                                                                              s["completion_tokens"], 12)
        assert s["prompt_tokens"] == 24
        ttft_c.append(r.t_first - r.t_send)
        ttft_s.append(s["t_first"] - s["t_arrival"])
        tpot_c.append(tpot_s(r))
        tpot_s_.append((s["chunk_times"][-1] - s["t_first"]) / 11)
    # TTFT by its median (a loaded CI host delays a few arrivals by a scheduler slice), TPOT by its mean
    assert np.median(ttft_c) == pytest.approx(np.median(ttft_s), rel=0.05)
    assert np.mean(tpot_c) == pytest.approx(np.mean(tpot_s_), rel=0.05)
    # exactly n in flight: never more at any arrival, and n on (time-)average once ramped up
    # (the log also holds the requests cut off by the stop, with t_end None)
    arrivals = sorted(srv.values(), key=lambda s: s["t_arrival"])
    assert max(s["in_flight"] for s in arrivals) == n
    assert [s["in_flight"] for s in arrivals[:n]] == list(range(1, n + 1))
    # an interval that ends before the first request the stop cut off: all its chunks are in the log
    a, b = t0 + 0.5, min([t1 - 0.2] + [r.t_send for r in records if not (r.t_end and r.ok)])
    assert b - a > 1.0
    f = interval_fields(records, a, b, input_len=24, output_len=12, slo=Slo(), lags=gen.lags())
    assert f["mean_in_flight"] == pytest.approx(n, rel=0.03)
    # the interval's output tokens are the chunks the server wrote inside it (+-1 in transit per stream)
    written = sum(np.searchsorted(s["chunk_times"], b) - np.searchsorted(s["chunk_times"], a) for s in srv.values())
    assert abs(f["output_tokens"] - written) <= n
    assert f["flags"] == [] and f["requests_errors"] == 0


def test_open_loop_arrivals_are_poisson_at_the_server(tmp_path):
    # a server that answers at once (no model), so that what it sees is the client's schedule
    log = tmp_path / "server.jsonl"
    port = serving_server.free_port()
    proc = serving_server.spawn(port, "--no-model", "--log", str(log))
    try:
        rate = 30.0
        records, gen, t0, t1 = _run(f"http://127.0.0.1:{port}", 4.0, mode="open", rate=rate, input_len=8,
                                    output_len=2, seed=3)
    finally:
        proc.terminate()
        proc.wait(10)
    arrivals = np.sort([s["t_arrival"] for s in _server_log(log).values()])
    gaps = np.diff(arrivals)
    assert len(gaps) > 90
    # the server sees exponential gaps of mean 1/rate (Kolmogorov-Smirnov against the exact law)
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 0.01
    # and not a fixed rate in disguise
    assert stats.kstest(np.full_like(gaps, 1 / rate) + 1e-4 * np.arange(len(gaps)) / len(gaps), "expon",
                        args=(0, 1 / rate)).pvalue < 1e-6


def test_every_serving_flag_is_a_known_flag():
    from harness.telemetry.flags import FLAG_NAMES
    from workloads.serving_metrics import FLAGS

    assert set(FLAGS) <= set(FLAG_NAMES)
