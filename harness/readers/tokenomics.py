"""The tokenomics frontier of an inference run swept over setting x batch.

For each setting, tokens/s per GPU against tokens/s per user (interactivity), with tokens/J: how
much speed per user can be sold at each power level. Under a latency target only the (setting,
batch) pairs whose every repeat kept time per output token (and time to first token, when asked)
within the target count; among them Max-Q and Max-P are found per batch with the same ranges as
every other output (``harness.readers.ranges``), and the batch with the best of each is chosen. With
a target every setting meets, the answer is the run's own Max-Q and Max-P.

The decode phase (or a serving mix, ``serve``, when the run has one) gives throughput, tokens/J and
time per output token; time to first token comes from whichever phase recorded it (prefill).

A run of a server under load (the ``endpoint`` workload, docs/serving.md) counts output tokens:
tokens/s per GPU and tokens/J are of generated tokens, its latency targets apply to the worst
repeat's p99 of per-request TTFT and TPOT (an SLO is a percentile), and each point also has its
goodput per joule: the output tokens of requests that met the run's own targets, per joule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.errors import UsageError
from harness.readers.ranges import Range, best_range, max_p_range


@dataclass(frozen=True)
class OperatingPoint:
    setting: float
    batch_size: int
    tokens_per_s: float  # per GPU
    tokens_per_s_per_user: float
    tokens_per_j: float
    tpot_ms: float
    tpot_ms_max: float  # worst repeat
    ttft_ms: float | None
    ttft_ms_max: float | None
    goodput_tokens_per_j: float | None = None  # serving under load only


def serving_fields(s) -> dict[str, float | None]:
    """The serving-under-load figures of one setting's statistics (all None for other runs)."""
    def per_j(tps: float | None) -> float | None:
        return tps / s.power_mean_w if tps is not None and s.power_mean_w > 0 else None

    out_tps, good_tps = getattr(s, "output_tokens_per_s", None), getattr(s, "goodput_tokens_per_s", None)
    return {"output_tokens_per_s": out_tps, "output_tokens_per_j": per_j(out_tps),
            "goodput_tokens_per_s": good_tps, "goodput_tokens_per_j": per_j(good_tps),
            "ttft_ms_p99": getattr(s, "ttft_ms_p99", None), "tpot_ms_p99": getattr(s, "tpot_ms_p99", None)}


@dataclass(frozen=True)
class LatencyChoice:
    tpot_ms_target: float
    ttft_ms_target: float | None
    max_q: OperatingPoint | None  # None: no point meets the target
    max_p: OperatingPoint | None
    n_meeting: int
    throughput_given_up: float | None  # 1 - tokens/s(Max-Q) / tokens/s(Max-P), both within target
    sentence: str
    max_q_range: Range | None = None  # of the batch chosen for Max-Q, over the settings meeting the target
    max_p_range: Range | None = None


@dataclass(frozen=True)
class Tokenomics:
    phase: str
    points: tuple[OperatingPoint, ...]
    latency: LatencyChoice | None
    #: batch -> the serving phase's stats and repeats, for choices under other targets
    curves: dict = field(default_factory=dict, repr=False)
    unit: str = "W"

    def choose(self, tpot_ms: float, ttft_ms: float | None = None) -> LatencyChoice:
        """Max-Q and Max-P under another latency target, with the same ranges."""
        return choose(self.points, tpot_ms, ttft_ms, self.unit, self.curves)

    def by_setting(self) -> dict[float, list[OperatingPoint]]:
        out: dict[float, list[OperatingPoint]] = {}
        for p in sorted(self.points, key=lambda p: (p.setting, p.tokens_per_s_per_user)):
            out.setdefault(p.setting, []).append(p)
        return out

    def frontier(self, points: list[OperatingPoint] | None = None) -> list[OperatingPoint]:
        """Operating points not beaten on both per-user and per-GPU speed (highest interactivity first)."""
        pts = sorted(self.points if points is None else points,
                     key=lambda p: (-p.tokens_per_s_per_user, -p.tokens_per_s))
        out: list[OperatingPoint] = []
        best = -1.0
        for p in pts:
            if p.tokens_per_s > best:
                out.append(p)
                best = p.tokens_per_s
        return out

    def frontier_by_setting(self) -> dict[float, list[OperatingPoint]]:
        """The frontier at each power (or clock) setting: what each power level sells."""
        return {setting: self.frontier(pts) for setting, pts in self.by_setting().items()}

    def best_goodput_per_j(self) -> OperatingPoint | None:
        """The point with the most SLO-meeting output tokens per joule (serving runs), else None."""
        pts = [p for p in self.points if p.goodput_tokens_per_j is not None]
        return max(pts, key=lambda p: (p.goodput_tokens_per_j, p.tokens_per_s)) if pts else None


def meets(p: OperatingPoint, tpot_ms: float, ttft_ms: float | None) -> bool:
    if p.tpot_ms_max > tpot_ms:
        return False
    return ttft_ms is None or (p.ttft_ms_max is not None and p.ttft_ms_max <= ttft_ms)


def choose(points: list[OperatingPoint] | tuple[OperatingPoint, ...], tpot_ms: float, ttft_ms: float | None,
           unit: str, curves: dict[int, Curve]) -> LatencyChoice:
    """Max-Q and Max-P among the operating points meeting the target; ``curves`` (batch -> the
    serving phase's per-setting stats and repeats) gives the ranges."""
    ok = [p for p in points if meets(p, tpot_ms, ttft_ms)]
    target = f"TPOT <= {tpot_ms:g} ms" + (f" and TTFT <= {ttft_ms:g} ms" if ttft_ms is not None else "")
    if not ok:
        fastest = min(points, key=lambda p: p.tpot_ms_max)
        return LatencyChoice(tpot_ms, ttft_ms, None, None, 0, None,
                             f"no (setting, batch) meets {target}; the lowest TPOT measured is "
                             f"{fastest.tpot_ms_max:.1f} ms ({fastest.setting:.0f} {unit}, batch {fastest.batch_size})")
    allowed = {(p.batch_size, p.setting) for p in ok}
    by_point = {(p.batch_size, p.setting): p for p in ok}
    best_q: tuple[int, Range] | None = None
    best_p: tuple[int, Range] | None = None
    for batch, curve in sorted(curves.items()):
        # the operating points' own figures (a server's output tokens), with each setting's repeat count
        sub = [_Setting(s.setting, s.n, by_point[(batch, s.setting)])
               for s in curve.stats if (batch, s.setting) in allowed]
        if not sub:
            continue
        rq, rp = best_range(sub, curve.tokens_per_j), max_p_range(sub, curve.tokens_per_s)
        if best_q is None or rq.value > best_q[1].value:
            best_q = (batch, rq)
        if best_p is None or rp.value > best_p[1].value:
            best_p = (batch, rp)
    assert best_q is not None and best_p is not None  # every meeting point belongs to a curve
    q, mp = by_point[(best_q[0], best_q[1].best)], by_point[(best_p[0], best_p[1].best)]
    given = 1.0 - q.tokens_per_s / mp.tokens_per_s if mp.tokens_per_s > 0 else 0.0
    rq, rp = best_q[1], best_p[1]
    cost = (f"it gives up {100 * given:.1f}% of throughput" if given > 0
            else "it gives up no throughput that can be measured")
    s = (f"Max-Q under {target}: {_span(rq, unit)}, batch {q.batch_size}: {q.tokens_per_j:.3g} tokens/J, "
         f"{q.tokens_per_s:,.0f} tokens/s per GPU, {q.tokens_per_s_per_user:,.1f} tokens/s per user; "
         f"against Max-P at the same target ({rp.best:.0f} {unit}, batch {mp.batch_size}) {cost}")
    return LatencyChoice(tpot_ms, ttft_ms, q, mp, len(ok), given, s, rq, rp)


def _span(r: Range, unit: str) -> str:
    """A Max-Q range in words: its recommended setting, or only the range when it is too wide."""
    if r.lo == r.hi:
        return f"{r.best:.0f} {unit}"
    if r.wide:
        return f"{r.lo:.0f}-{r.hi:.0f} {unit} (too few repeats to single out one setting)"
    return f"{r.best:.0f} {unit} (range {r.lo:.0f}-{r.hi:.0f} {unit})"


@dataclass(frozen=True)
class _Mean:
    mean: float


class _Setting:
    """One setting as the ranges read it, from an operating point (tokens/s and tokens/J as sold)."""

    def __init__(self, setting: float, n: int, op: OperatingPoint) -> None:
        self.setting, self.n = setting, n
        self.tokens_per_s, self.tokens_per_j = _Mean(op.tokens_per_s), _Mean(op.tokens_per_j)


@dataclass(frozen=True)
class Curve:
    """What ``choose`` needs of one batch of the serving phase: per-setting stats and the repeats."""

    stats: list
    tokens_per_s: dict[float, np.ndarray]
    tokens_per_j: dict[float, np.ndarray]


def tokenomics(stats, tpot_ms: float | None = None, ttft_ms: float | None = None,
               unit: str = "W", repeats: dict[tuple[str, int], tuple[dict, dict]] | None = None) -> Tokenomics | None:
    """Operating points of the run's serving phase; None for a run without per-user speed or TPOT."""
    phases = {s.phase for s in stats if s.tpot_ms is not None or s.tokens_per_s_per_user is not None}
    if not phases:
        if tpot_ms is not None or ttft_ms is not None:
            raise UsageError("this run has no time per output token: latency targets apply to inference runs")
        return None
    phase = "serve" if "serve" in phases else ("decode" if "decode" in phases else sorted(phases)[0])
    ttft: dict[tuple[float, int], tuple[float, float]] = {}
    for s in stats:
        if s.ttft_ms is not None:
            key = (s.setting, s.batch_size)
            prev = ttft.get(key)
            ttft[key] = (s.ttft_ms, s.ttft_ms_max if prev is None else max(prev[1], s.ttft_ms_max))
    pts = []
    for s in stats:
        if s.phase != phase:
            continue
        tpot = s.tpot_ms if s.tpot_ms is not None else (
            1000.0 / s.tokens_per_s_per_user if s.tokens_per_s_per_user else None)
        if tpot is None:
            continue
        per_user = s.tokens_per_s_per_user if s.tokens_per_s_per_user is not None else 1000.0 / tpot
        t = ttft.get((s.setting, s.batch_size))
        sv = serving_fields(s)
        if sv["output_tokens_per_s"] is not None:  # a server under load: output tokens, p99 latencies
            tpot_max = sv["tpot_ms_p99"] if sv["tpot_ms_p99"] is not None else tpot
            ttft_max = sv["ttft_ms_p99"] if sv["ttft_ms_p99"] is not None else s.ttft_ms_max
            pts.append(OperatingPoint(s.setting, s.batch_size, sv["output_tokens_per_s"], per_user,
                                      sv["output_tokens_per_j"] or 0.0, tpot, tpot_max, s.ttft_ms, ttft_max,
                                      sv["goodput_tokens_per_j"]))
            continue
        pts.append(OperatingPoint(s.setting, s.batch_size, s.tokens_per_s.mean, per_user, s.tokens_per_j.mean,
                                  tpot, s.tpot_ms_max if s.tpot_ms_max is not None else tpot,
                                  t[0] if t else None, t[1] if t else None))
    if not pts:
        return None
    if ttft_ms is not None and all(p.ttft_ms is None for p in pts):
        raise UsageError("this run has no time to first token: --ttft-ms needs a run with a prefill phase")
    if tpot_ms is None and ttft_ms is not None:
        raise UsageError("--ttft-ms needs --tpot-ms too (the target is on time per output token first)")
    curves = {b: Curve(sorted([s for s in stats if s.phase == phase and s.batch_size == b], key=lambda s: s.setting),
                       *(repeats or {}).get((phase, b), ({}, {})))
              for b in {p.batch_size for p in pts}}
    latency = choose(pts, tpot_ms, ttft_ms, unit, curves) if tpot_ms is not None else None
    return Tokenomics(phase, tuple(pts), latency, curves, unit)
