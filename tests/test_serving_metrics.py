"""The interval accounting of serving figures (docs/serving.md) on hand-made request records, and the
load generator's own lag probe: deterministic checks of the rules for requests straddling the edges."""

from __future__ import annotations

import time

import pytest

from workloads.loadgen import LoadGenerator, LoadSpec, RequestRecord
from workloads.serving_metrics import Slo, interval_fields, token_counts


def _rec(i: int, send: float, chunks: list[float], end: float | None, *, usage: int | None = None,
         error: str | None = None, prompt: int = 10) -> RequestRecord:
    r = RequestRecord(i, send, send, t_end=end or 0.0, t_first=chunks[0] if chunks else None, chunk_times=chunks,
                      prompt_tokens=prompt if end else None, completion_tokens=usage, error=error)
    return r


def test_straddling_requests_count_tokens_where_they_arrived_and_latencies_where_they_ended():
    recs = [
        _rec(0, 0.0, [0.5, 1.5, 2.5, 3.5], 3.5, usage=4),  # straddles the start edge (1.0)
        _rec(1, 2.0, [2.2, 2.4, 2.6, 2.8], 2.8, usage=4),  # wholly inside
        _rec(2, 4.0, [4.5, 5.5, 6.5], None),  # straddles the end edge (5.0), still running
        _rec(3, 1.2, [1.4, 1.6], 1.6, usage=4),  # two chunks carrying four tokens
    ]
    a, b = 1.0, 5.0
    assert token_counts(recs, a, b, input_len=99) == (10 + 10 + 99, 3 + 4 + 1 + 4)
    f = interval_fields(recs, a, b, input_len=99, output_len=4, slo=Slo(tpot_ms=900.0))
    assert (f["input_tokens"], f["output_tokens"]) == (119, 12)
    assert f["requests_ok"] == 3  # requests 0, 1 and 3 ended inside; 2 is still running
    assert f["ttft_ms"] == pytest.approx(1000 * (0.5 + 0.2 + 0.2) / 3)
    # TPOT: (last - first) / (tokens - 1): 1000 ms, 200 ms and 0.2 s / 3 tokens
    assert f["tpot_ms"] == pytest.approx(1000 * (1.0 + 0.2 + 0.2 / 3) / 3)
    assert f["e2e_ms_p50"] == pytest.approx(800.0)
    # time in flight inside [1, 5): 2.5 + 0.8 + 1.0 + 0.4 = 4.7 s over 4 s
    assert f["mean_in_flight"] == pytest.approx(4.7 / 4)
    assert f["tokens_per_s_per_user"] == pytest.approx(12 / 4 / (4.7 / 4))
    # goodput: request 0's TPOT (1000 ms) misses the 900 ms target
    assert f["goodput_rps"] == pytest.approx(2 / 4) and f["goodput_tokens_per_s"] == pytest.approx(8 / 4)
    assert f["flags"] == []


def test_error_short_output_and_usage_flags():
    ok = [_rec(i, 0.0, [0.1, 0.2], 0.2, usage=2) for i in range(99)]
    one_error = [_rec(99, 0.0, [], 0.3, error="http")]
    f = interval_fields(ok + one_error, 0.0, 1.0, input_len=1, output_len=2, slo=Slo(max_error_rate=0.01))
    assert f["requests_errors"] == 1 and f["flags"] == []  # 1% is not above 1%
    two = one_error + [_rec(100, 0.0, [], 0.4, error="timeout")]
    f = interval_fields(ok + two, 0.0, 1.0, input_len=1, output_len=2, slo=Slo(max_error_rate=0.01))
    assert f["flags"] == ["server_errors"] and f["requests_timeouts"] == 1
    short = [_rec(0, 0.0, [0.1], 0.1, usage=1)]
    assert interval_fields(short, 0.0, 1.0, input_len=1, output_len=2, slo=Slo())["flags"] == ["short_output"]
    no_usage = [_rec(0, 0.0, [0.1, 0.2], 0.2, usage=None)]
    assert interval_fields(no_usage, 0.0, 1.0, input_len=1, output_len=2, slo=Slo())["flags"] == ["usage_mismatch"]


def test_open_loop_dispatch_delay_flags_lag():
    late = [RequestRecord(i, 0.1 * i, 0.1 * i + (0.05 if i % 2 else 0.0)) for i in range(10)]
    f = interval_fields(late, 0.0, 1.0, input_len=1, output_len=1, slo=Slo(max_lag_ms=20), open_loop=True)
    assert "loadgen_lag" in f["flags"]
    f = interval_fields(late, 0.0, 1.0, input_len=1, output_len=1, slo=Slo(max_lag_ms=20), open_loop=False)
    assert "loadgen_lag" not in f["flags"]


def test_the_lag_probe_measures_a_blocked_client_loop():
    # no server: requests fail at once (and back off); the probe still runs on the client's loop
    gen = LoadGenerator(LoadSpec(url="http://127.0.0.1:9", model="m", concurrency=1, max_seconds=10)).start()
    try:
        time.sleep(0.1)
        t_block = time.monotonic()
        gen._loop.call_soon_threadsafe(time.sleep, 0.15)  # the client's own loop busy for 150 ms
        time.sleep(0.4)
    finally:
        gen.stop()
    lags = [late for t, late in gen.lags() if t >= t_block - 0.02]
    assert max(lags) > 0.1
    f = interval_fields(gen.records(), t_block - 0.02, t_block + 0.4, input_len=1, output_len=1,
                        slo=Slo(max_lag_ms=20), lags=gen.lags())
    assert "loadgen_lag" in f["flags"] and f["requests_errors"] > 0


@pytest.mark.parametrize(("burstiness", "cv"), [(1.0, 1.0), (0.25, 2.0), (4.0, 0.5)])
def test_open_loop_gaps_have_the_rate_and_the_burstiness_asked(burstiness, cv):
    import random

    import numpy as np

    from workloads.loadgen import next_gap

    rng = random.Random(11)
    gaps = np.array([next_gap(rng, 50.0, burstiness) for _ in range(20_000)])
    assert gaps.mean() == pytest.approx(1 / 50.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_an_endpoint_workload_refuses_a_second_gpu(monkeypatch):
    from types import SimpleNamespace

    from harness.devices.base import WallClock
    from harness.errors import UsageError
    from workloads import endpoint
    from workloads.config import EndpointConfig, WorkloadConfig

    monkeypatch.setattr(endpoint, "probe", lambda url, path: True)  # "a server answers" (none needed here)
    cfg = WorkloadConfig(name="endpoint", model="m", endpoint=EndpointConfig(url="http://127.0.0.1:9"))
    gpu = [SimpleNamespace(info=SimpleNamespace(uuid=f"GPU-{i}"), clock=WallClock()) for i in range(2)]
    first, second = endpoint.EndpointWorkload(cfg), endpoint.EndpointWorkload(cfg)
    first.prepare(gpu[0])
    try:
        with pytest.raises(UsageError, match="measures one GPU"):
            second.prepare(gpu[1])
    finally:
        first.close()
    second.prepare(gpu[1])  # once the first is closed, another GPU may run
    second.close()
    assert not endpoint._LIVE
