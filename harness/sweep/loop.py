"""The point loop of a sweep: set a knob, warm up to steady state, measure a window per phase,
write the point, move on; the guard puts every setting back.

States of one point (a small explicit machine, so a reader can follow the run):

    apply   -> set the knob on every GPU of the node, read back what is enforced
    warm-up -> run the phase until power and SM clock hold steady (or the warm-up times out)
    measure -> a ``Window`` around the phase's steps for ``window_s`` of device time
    record  -> one ``Point`` per GPU, appended and flushed with its samples
    (next phase: warm-up again; next point: apply)

Which points are measured comes from a ``PointSource``: a fixed grid (``GridSource``) or the
adaptive Max-Q search (``MaxQSearch``), which chooses each next setting from the points so far.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.devices.base import Device
from harness.knobs import OBSERVE
from harness.records.rundir import Point, point_key
from harness.sweep.plan import PlannedPoint, SweepPlan
from harness.sweep.sources import Outcome, PointSource
from workloads.base import checked_step

#: device seconds of sampler readings kept behind the current point (windows and warm-ups look back ~1 s)
KEEP_SAMPLES_S = 10.0


@dataclass
class LiveStatus:
    """What the live display shows; updated by the loop, read by the display."""

    point: int = 0
    total: int | None = None
    setting: float | None = None
    batch_size: int | None = None
    phase: str = ""
    state: str = "starting"
    power_w: float | None = None
    sm_clock_mhz: float | None = None
    temperature_c: float | None = None
    tokens_per_s: float | None = None
    #: device seconds since the run started, and the dry-run estimate of the whole plan (None: unknown)
    device_s: float = 0.0
    estimate_s: float | None = None


@dataclass
class SweepContext:
    """Everything the loop needs, built by ``harness.sweep.run.run_sweep``."""

    devices: list[Device]
    plan: SweepPlan
    source: PointSource
    make_workload: Callable[[Device, int], Any]  # (device, batch size) -> Workload
    run_dir: Any  # harness.records.rundir.RunDir
    sampler: Any  # harness.telemetry.Sampler
    guard: Any | None  # harness.sweep.guard.Guard, None when observing
    status: LiveStatus = field(default_factory=LiveStatus)
    on_point: Callable[[list[Point]], None] | None = None
    next_index: int = 0
    #: every point already recorded, by ``records.rundir.point_key`` (a resumed run)
    done: dict[tuple, Point] = field(default_factory=dict)
    own_pids: frozenset[int] = frozenset()
    #: set when the loop ended on ``plan.max_time_s`` with points left to measure
    stopped_by_budget: bool = False
    #: device clock at the loop's start (progress shows device time spent)
    t_begin: float = 0.0

    def recorded(self, device: Device, planned: PlannedPoint, phase: str) -> bool:
        return point_key(device.info.uuid, planned.setting, planned.batch_size, planned.repeat, phase) in self.done

    def kept(self, planned: PlannedPoint, phase: str) -> list[Point] | None:
        """The recorded points of ``phase`` on every GPU, or None when a GPU still lacks it."""
        keys = [point_key(d.info.uuid, planned.setting, planned.batch_size, planned.repeat, phase)
                for d in self.devices]
        return [self.done[k] for k in keys] if all(k in self.done for k in keys) else None


def run_points(ctx: SweepContext) -> list[Outcome]:
    """Measure points until the source runs dry or ``max_time_s`` of device time has passed."""
    from harness.telemetry import SteadyState, Window

    plan, devices = ctx.plan, ctx.devices
    clock = devices[0].clock
    t_begin = ctx.t_begin = clock.now()
    outcomes: list[Outcome] = []
    workloads: dict[int, list[Any]] = {}
    try:
        while True:
            planned = ctx.source.next_point(outcomes)
            if planned is None:
                break
            if plan.max_time_s is not None and clock.now() - t_begin >= plan.max_time_s:
                ctx.status.state = "max-time reached"
                ctx.stopped_by_budget = True
                break
            if planned.batch_size not in workloads:
                for ws in workloads.values():
                    for w in ws:
                        w.close()
                workloads = {planned.batch_size: _prepare(ctx, planned.batch_size)}
            ws = workloads[planned.batch_size]
            ctx.status.point += 1
            # a resumed run has some points already: they are not measured again, and a search learns
            # from their records what it learnt from them before the run stopped
            by_phase = {ph: ctx.kept(planned, ph) for ph in ws[0].phases}
            todo = [ph for ph, kept in by_phase.items() if kept is None]
            if todo:
                enforced = _apply(ctx, planned.setting)
                ctx.status.setting, ctx.status.batch_size = planned.setting, planned.batch_size
            for phase in todo:
                ctx.status.phase = phase
                warmup_s, settled = _warm_up(ctx, ws, phase, SteadyState, planned.window_s)
                by_phase[phase] = _measure(ctx, ws, phase, planned, enforced, warmup_s, settled, Window)
                ctx.sampler.forget_before(clock.now() - KEEP_SAMPLES_S)  # memory stays flat in long runs
            measured = [p for p in by_phase.values() if p]
            if measured:
                outcomes.append(_outcome(planned, measured))
    finally:
        for ws in workloads.values():
            for w in ws:
                w.close()
    return outcomes


def _outcome(planned: PlannedPoint, by_phase: Sequence[Sequence[Point]]) -> Outcome:
    """The node's tokens/J at one point (first phase), with what a search needs to weigh and budget it:
    its device time is the warm-ups and windows of every phase (the slowest GPU's), read from the points
    themselves, so a point measured now and one read back from a resumed run's records count the same."""
    points = by_phase[0]
    tps = sum(p.tokens_per_s for p in points)
    joules_per_s = sum(p.joules / p.seconds for p in points if p.seconds > 0)
    flags = sorted({f for p in points for f in p.flags.split(";") if f})
    device_s = sum(max(p.warmup_s + p.seconds for p in phase) for phase in by_phase)
    return Outcome(planned, tps, tps / joules_per_s if joules_per_s else 0.0, all(p.valid for p in points),
                   device_s=device_s, warmup_s=max(p.warmup_s for p in points),
                   window_s=max(p.seconds for p in points), flags=",".join(flags))


def _prepare(ctx: SweepContext, batch_size: int) -> list[Any]:
    """Build and prepare one workload per GPU. GPU processes that appear while this run creates
    its contexts are its own (in a container NVML reports them under host pids)."""
    ctx.status.state = f"preparing batch {batch_size}"
    before = _gpu_pids(ctx.devices)
    ws = [ctx.make_workload(d, batch_size) for d in ctx.devices]
    for w, d in zip(ws, ctx.devices):
        w.prepare(d)
    ctx.own_pids = ctx.own_pids | frozenset(_gpu_pids(ctx.devices) - before)
    return ws


def _gpu_pids(devices: Sequence[Device]) -> set[int]:
    return {pid for d in devices for pid in d.state_check().foreign_processes}


def _apply(ctx: SweepContext, setting: float) -> dict[int, float]:
    """Set the knob on every GPU; returns what each enforces (observing: what is in force)."""
    ctx.status.state = "apply"
    lever = ctx.plan.lever
    if ctx.guard is None:
        return {d.info.index: lever.current(d) for d in ctx.devices}
    return {d.info.index: ctx.guard.apply(d, lever, setting) for d in ctx.devices}


def _step_all(ws: Sequence[Any], phase: str) -> list[Any]:
    results = [checked_step(w.step(phase), w.spec.name) for w in ws]
    for w in ws:
        w.synchronize()
    return results


def _warm_up(ctx: SweepContext, ws: Sequence[Any], phase: str, steady_cls: Any,
             window_s: float | None = None) -> tuple[float, bool]:
    """Run ``phase`` until every GPU's power, SM clock and temperature hold steady; returns the
    seconds spent and whether they settled before ``warmup_max_s``. ``window_s``: the window that
    follows (the plan's unless a search chose another)."""
    ctx.status.state = "warm-up"
    plan, clock = ctx.plan, ctx.devices[0].clock
    # settled = power and SM clock in band for the minimum warm-up (a part that settles at once is measured
    # after warmup_min_s); only a part still drifting runs on to warmup_max_s
    hold_s = max(plan.warmup_min_s, 0.5)
    detectors = {d.info.index: steady_cls(hold_s=hold_s, timeout_s=plan.warmup_max_s) for d in ctx.devices}
    temps: dict[int, list[tuple[float, float]]] = {d.info.index: [] for d in ctx.devices}
    t0 = clock.now()
    while True:
        _step_all(ws, phase)
        now = clock.now()
        settled = True
        for d in ctx.devices:
            r = ctx.sampler.latest(d.info.index)
            if r is None:
                settled = False
                continue
            _show(ctx, r)
            # power holds on the ~1 s mean: a 25 ms instant reading swings with where it falls among a step's
            # host gaps (a host-bound decode, a prefill's launch gap) although nothing drifts
            power = r.power_average_w if r.power_average_w is not None else r.power_instant_w
            det = detectors[d.info.index]
            ok = det.update(now, power or 0.0, r.sm_clock_mhz or 0.0) and det.settled_at is not None
            # the temperature's history is kept from the first reading (not from when power and clock
            # settled), so a part steady from the start is measured after the minimum warm-up
            temp_ok = _temperature_settled(temps[d.info.index], now, r.temperature_c, plan, window_s or plan.window_s)
            settled = settled and ok and temp_ok
        if settled and now - t0 >= plan.warmup_min_s:
            return now - t0, True
        if now - t0 >= plan.warmup_max_s:
            return now - t0, False  # still drifting at the timeout: measured anyway, flagged not_settled


def _temperature_settled(history: list[tuple[float, float]], now: float, temp_c: float | None,
                         plan: SweepPlan, window_s: float, budget_c: float = 2.5) -> bool:
    """True when the temperature would drift less than ``budget_c`` over the coming window (half
    the drift that flags a point): leakage follows temperature, so a window on a still-warming GPU
    would measure a moving target.

    The drift is the present trend carried over the window, or, once the trend is seen to decay,
    over the part's thermal constant measured from that decay (a first-order response moves
    ``rate * tau * (1 - exp(-window / tau))`` more): a part that settles fast is measured as soon as
    it has, a slow one waits as long as its own constant needs."""
    if temp_c is None:
        return True
    # the trend over the last 5 s, or over the minimum warm-up when that is shorter (a trend needs a span a
    # warm-up can reach before its timeout, or a short warm-up could never settle)
    span_s = min(5.0, max(plan.warmup_min_s, 1.0))
    history.append((now, temp_c))
    while len(history) > 2 and history[1][0] <= now - span_s:
        history.pop(0)
    t_old, temp_old = history[0]
    if now - t_old < span_s * 0.8:
        return False
    rate = (temp_c - temp_old) / (now - t_old)
    return abs(rate) * drift_horizon_s(history, window_s) < budget_c


def drift_horizon_s(history: Sequence[tuple[float, float]], window_s: float, resolution_c: float = 1.0) -> float:
    """Seconds over which the present temperature trend still acts in a window of ``window_s``:
    ``tau * (1 - exp(-window / tau))`` with the thermal constant ``tau`` measured from how the trend
    decays between the two halves of ``history``; the whole window when no decay shows beyond the
    readings' resolution (NVML reads whole degrees: each half's change may be off by ``resolution_c``,
    and a decay read from one-degree steps would call a part still warming fast "settled")."""
    t_mid = (history[0][0] + history[-1][0]) / 2
    first = [h for h in history if h[0] <= t_mid]
    second = [h for h in history if h[0] >= t_mid]
    if len(first) < 2 or len(second) < 2:
        return window_s
    d1, d2 = first[-1][1] - first[0][1], second[-1][1] - second[0][1]
    t1, t2 = first[-1][0] - first[0][0], second[-1][0] - second[0][0]
    dt = (second[0][0] + second[-1][0]) / 2 - (first[0][0] + first[-1][0]) / 2
    if d1 * d2 <= 0 or t1 <= 0 or t2 <= 0 or dt <= 0:
        return window_s
    # the slowest the first half can have changed and the fastest the second
    r1 = (abs(d1) - resolution_c) / t1
    r2 = (abs(d2) + resolution_c) / t2
    if r1 <= 0 or r2 >= 0.95 * r1:
        return window_s
    tau = dt / math.log(r1 / r2)
    return tau * (1.0 - math.exp(-window_s / tau))


def _show(ctx: SweepContext, reading: Any) -> None:
    st = ctx.status
    st.device_s = ctx.devices[0].clock.now() - ctx.t_begin
    st.power_w = reading.power_instant_w if reading.power_instant_w is not None else reading.power_average_w
    st.sm_clock_mhz, st.temperature_c = reading.sm_clock_mhz, reading.temperature_c


def _measure(ctx: SweepContext, ws: Sequence[Any], phase: str, planned: PlannedPoint,
             enforced: dict[int, float], warmup_s: float, settled: bool, window_cls: Any) -> list[Point]:
    """One window of ``phase`` on every GPU; writes and returns one Point per GPU."""
    ctx.status.state = "measure"
    plan, devices = ctx.plan, ctx.devices
    clock = devices[0].clock
    requested = None if ctx.guard is None else {d.info.index: planned.setting for d in devices}

    def sync() -> None:
        for w in ws:
            w.synchronize()

    window_s = planned.window_s or plan.window_s
    totals = [[0, 0, 0, 0, [], []] for _ in ws]  # steps, input, output, sequences, ttfts, tpots
    with window_cls(devices, ctx.sampler, sync, requested=requested, knob=plan.lever.field,
                    own_pids=ctx.own_pids) as window:
        t0 = clock.now()
        while True:
            for tot, res in zip(totals, _step_all(ws, phase)):
                tot[0] += 1
                tot[1] += res.input_tokens
                tot[2] += res.output_tokens
                tot[3] = res.sequences
                if getattr(res, "ttft_s", None) is not None:
                    tot[4].append(res.ttft_s)
                if getattr(res, "tpot_s", None) is not None:
                    tot[5].append(res.tpot_s)
            if clock.now() - t0 >= window_s:
                break
    points = []
    for w, d, tot in zip(ws, devices, totals):
        wr = window.results[d.info.index]
        # a workload that runs on its own (a load generator against a server) counts the window's
        # interval itself: ``interval_fields`` replaces the step sums and adds Point fields
        over = w.interval_fields(wr.t_start, wr.t_end) if hasattr(w, "interval_fields") else {}
        points.append(_point(ctx, d, tot, wr, phase, planned, enforced[d.info.index], warmup_s, settled, over))
    for p, d in zip(points, devices):
        if not ctx.recorded(d, planned, phase):  # resumed after a kill between two GPUs' rows
            ctx.run_dir.append_point(p, window.results[d.info.index].samples)
    ctx.status.tokens_per_s = sum(p.tokens_per_s for p in points)
    ctx.status.device_s = clock.now() - ctx.t_begin
    ctx.status.state = "recorded"
    if ctx.on_point:
        ctx.on_point(points)
    return points


def _point(ctx: SweepContext, device: Device, tot: list, wr: Any, phase: str,
           planned: PlannedPoint, enforced: float, warmup_s: float, settled: bool = True,
           over: dict | None = None) -> Point:
    over = dict(over or {})
    steps, inp, out, seqs, ttfts, tpots = tot
    inp, out = over.pop("input_tokens", inp), over.pop("output_tokens", out)
    more_flags = over.pop("flags", [])
    seconds = wr.seconds
    tokens = inp + out
    ttft_ms = tpot_ms = per_user = None
    if ttfts:
        ttft_ms = 1000 * statistics.fmean(ttfts)
    elif phase == "prefill" and steps:
        ttft_ms = 1000 * seconds / steps  # every step prefills the whole batch: first tokens at its end
    if tpots:
        tpot_ms = 1000 * statistics.fmean(tpots)
    elif phase == "decode" and steps and seqs and out:
        tpot_ms = 1000 * seconds / (out / seqs)  # each sequence gets out/seqs tokens over the window
    if phase in ("decode", "serve") and seqs and out and seconds > 0:
        per_user = out / seqs / seconds
    index = ctx.next_index
    ctx.next_index += 1
    joules = wr.joules
    ttft_ms, tpot_ms = over.pop("ttft_ms", ttft_ms), over.pop("tpot_ms", tpot_ms)
    per_user = over.pop("tokens_per_s_per_user", per_user)
    fields = wr.point_fields()
    fields["flags"] = ";".join([f for f in fields["flags"].split(";") if f] + list(more_flags)
                               + ([] if settled else ["not_settled"]))
    return Point(
        **fields,
        point_index=index,
        gpu_uuid=device.info.uuid,
        knob=ctx.plan.lever.field if ctx.guard is not None else OBSERVE.field,
        setting=planned.setting,
        enforced=enforced,
        batch_size=planned.batch_size,
        phase=phase,
        repeat=planned.repeat,
        steps=steps,
        input_tokens=inp,
        output_tokens=out,
        tokens=tokens,
        warmup_s=warmup_s,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        tokens_per_j=tokens / joules if joules > 0 else 0.0,
        j_per_token=joules / tokens if tokens else 0.0,
        ttft_ms=ttft_ms,
        tpot_ms=tpot_ms,
        tokens_per_s_per_user=per_user,
        **over,
    )
