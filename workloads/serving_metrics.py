"""Serving figures over one measured interval, from per-request records (docs/serving.md).

The load runs continuously and the window's edges ``[a, b)`` cut it, so requests straddle them:

* output tokens count where their chunk arrived: a chunk inside ``[a, b)`` counts, whoever sent
  it (a chunk's share of its request's usage-reported tokens), so tokens and the energy counter
  cover the same interval;
* input tokens count with the request's first token (its prefill has ended) inside the interval;
* latencies, goodput, errors and timeouts are over requests that *ended* inside the interval;
* users in flight are time-averaged over the interval (a request is in flight from send to end).

The same code serves the HTTP endpoint and the simulated serving twin, which fill the same records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workloads.loadgen import RequestRecord

#: the validity flags a serving interval can raise (harness/telemetry/flags.py describes them)
FLAGS = ("server_errors", "loadgen_lag", "short_output", "usage_mismatch")


@dataclass(frozen=True)
class Slo:
    """Latency targets for goodput and the thresholds behind the serving flags."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    max_error_rate: float = 0.01  # share of ended requests that failed above which a point is flagged
    max_lag_ms: float = 20.0  # p99 client event-loop (or open-loop dispatch) delay above which it is flagged


def _stats(prefix: str, values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {f"{prefix}_p50": None, f"{prefix}_p90": None, f"{prefix}_p99": None}
    p50, p90, p99 = np.percentile(np.asarray(values) * 1000.0, [50, 90, 99])
    return {f"{prefix}_p50": float(p50), f"{prefix}_p90": float(p90), f"{prefix}_p99": float(p99)}


def _mean_ms(values: Sequence[float]) -> float | None:
    return 1000.0 * float(np.mean(values)) if values else None


def tpot_s(r: RequestRecord) -> float | None:
    """Time per output token after the first: (last chunk - first chunk) / (tokens - 1)."""
    if r.t_first is None or r.output_tokens < 2 or not r.chunk_times:
        return None
    return (r.chunk_times[-1] - r.t_first) / (r.output_tokens - 1)


def token_counts(records: Sequence[RequestRecord], a: float, b: float, input_len: int) -> tuple[int, int]:
    """(input, output) tokens of ``[a, b)`` by the rules above."""
    out_tokens = 0.0
    in_tokens = 0
    for r in records:
        if r.chunk_times and r.chunk_times[-1] >= a and r.chunk_times[0] < b:
            share = r.output_tokens / len(r.chunk_times) if r.completion_tokens is not None else 1.0
            lo, hi = np.searchsorted(r.chunk_times, [a, b])
            out_tokens += share * (hi - lo)
        if r.t_first is not None and a <= r.t_first < b:
            in_tokens += r.prompt_tokens if r.prompt_tokens is not None else input_len
    return in_tokens, int(round(out_tokens))


def interval_fields(records: Sequence[RequestRecord], a: float, b: float, *, input_len: int, output_len: int,
                    slo: Slo, lags: Sequence[tuple[float, float]] = (), open_loop: bool = False) -> dict:
    """The Point fields of ``[a, b)``: token counts, latency statistics, goodput, errors, flags."""
    seconds = max(b - a, 1e-9)
    in_tokens, output = token_counts(records, a, b, input_len)
    busy = 0.0
    ended: list[RequestRecord] = []
    for r in records:
        end = r.t_end if r.t_end else b
        busy += max(0.0, min(end, b) - max(r.t_send, a))
        if r.t_end and a <= r.t_end < b:
            ended.append(r)
    ok = [r for r in ended if r.ok]
    errors = [r for r in ended if not r.ok]
    ttfts = [r.t_first - r.t_send for r in ok if r.t_first is not None]
    tpots = [t for t in (tpot_s(r) for r in ok) if t is not None]
    itls = [float(g) for r in ok for g in np.diff(r.chunk_times)]
    e2es = [r.t_end - r.t_send for r in ok]
    good = [r for r in ok if _meets(r, slo)]
    mean_in_flight = busy / seconds
    flags = []
    if ended and len(errors) / len(ended) > slo.max_error_rate:
        flags.append("server_errors")
    lag_values = [late for t, late in lags if a <= t < b]
    if open_loop:
        lag_values += [r.t_send - r.t_scheduled for r in records if a <= r.t_scheduled < b]
    if lag_values and 1000.0 * float(np.percentile(lag_values, 99)) > slo.max_lag_ms:
        flags.append("loadgen_lag")
    if any(r.output_tokens < output_len for r in ok):
        flags.append("short_output")
    if any(r.completion_tokens is None or len(r.chunk_times) > r.completion_tokens for r in ok):
        flags.append("usage_mismatch")
    fields: dict = {
        "input_tokens": in_tokens, "output_tokens": output,
        "ttft_ms": _mean_ms(ttfts), "tpot_ms": _mean_ms(tpots),
        "tokens_per_s_per_user": output / seconds / mean_in_flight if mean_in_flight > 0 else None,
        **_stats("ttft_ms", ttfts), **_stats("tpot_ms", tpots),
        "itl_ms_mean": _mean_ms(itls), **_stats("itl_ms", itls),
        "e2e_ms_mean": _mean_ms(e2es), **_stats("e2e_ms", e2es),
        "output_tokens_per_s": output / seconds,
        "requests_ok": len(ok), "requests_errors": len(errors),
        "requests_timeouts": sum(r.error == "timeout" for r in errors),
        "goodput_rps": len(good) / seconds,
        "goodput_tokens_per_s": sum(r.output_tokens for r in good) / seconds,
        "mean_in_flight": mean_in_flight,
        "flags": flags,
    }
    return fields


def _meets(r: RequestRecord, slo: Slo) -> bool:
    if slo.ttft_ms is not None and (r.t_first is None or 1000.0 * (r.t_first - r.t_send) > slo.ttft_ms):
        return False
    t = tpot_s(r)
    return slo.tpot_ms is None or t is None or 1000.0 * t <= slo.tpot_ms
