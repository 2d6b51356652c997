"""The sweep: set a knob, warm up to steady state, measure a window per phase, write the point,
move on; the guard puts every setting back.

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

import contextlib
import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.devices.base import Device
from harness.errors import GpuBusy, PermissionDenied, UsageError
from harness.results import Point

#: CLI knob name -> the field name points and curve files use
KNOB_FIELDS = {"power-limit": "power_limit_w", "sm-clock": "sm_clock_mhz", "observe": "observe"}
ORDERS = ("descending", "ascending", "interleaved")


# ------------------------------------------------------------------------------------------------
# plan


@dataclass(frozen=True)
class PlannedPoint:
    setting: float
    batch_size: int
    repeat: int


@dataclass(frozen=True)
class SweepPlan:
    """What a run measures. ``settings`` in W (power-limit) or MHz (sm-clock)."""

    knob: str
    settings: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    repeats: int = 3
    order: str = "interleaved"
    warmup_min_s: float = 5.0
    warmup_max_s: float = 120.0
    window_s: float = 30.0
    search: str | None = None
    search_ci_pct: float = 1.0
    max_time_s: float | None = None

    def __post_init__(self) -> None:
        if self.knob not in KNOB_FIELDS:
            raise UsageError(f"unknown knob '{self.knob}' (choose from power-limit, sm-clock)")
        if self.order not in ORDERS:
            raise UsageError(f"unknown order '{self.order}' (choose from {', '.join(ORDERS)})")
        if self.repeats < 1:
            raise UsageError("--repeats must be at least 1")
        if not self.settings:
            raise UsageError("the plan has no settings")

    @property
    def knob_field(self) -> str:
        return KNOB_FIELDS[self.knob]

    def grid(self) -> list[PlannedPoint]:
        """Every (setting, batch, repeat) in measuring order. Repeats are the outer loop, so a
        thermal drift spreads over all settings instead of passing for a trend."""
        out = []
        for batch in self.batch_sizes:
            for r in range(self.repeats):
                for s in ordered(self.settings, self.order, r):
                    out.append(PlannedPoint(s, batch, r))
        return out


def ordered(settings: Sequence[float], order: str, repeat: int) -> list[float]:
    """Settings in measuring order; ``interleaved`` alternates ends (max, min, next max, ...)
    and reverses on odd repeats."""
    desc = sorted(set(settings), reverse=True)
    if order == "descending":
        return desc
    if order == "ascending":
        return desc[::-1]
    out: list[float] = []
    lo, hi = 0, len(desc) - 1
    while lo <= hi:
        out.append(desc[lo])
        if lo != hi:
            out.append(desc[hi])
        lo, hi = lo + 1, hi - 1
    return out if repeat % 2 == 0 else out[::-1]


def knob_range(device: Device, knob: str) -> tuple[float, float, list[float] | None]:
    """(lowest, highest, settable values or None for a continuous range) of a knob."""
    if knob == "power-limit":
        lim = device.power_limits()
        return lim.min_w, lim.max_w, None
    clocks = device.supported_sm_clocks()
    return float(clocks[0]), float(clocks[-1]), [float(c) for c in clocks]


def resolve_settings(device: Device, knob: str, points: int | None = None, step: float | None = None,
                     values: Sequence[float] | None = None, percent: Sequence[float] | None = None,
                     default_points: int = 9) -> tuple[float, ...]:
    """The knob's values from the device's constraints; anything outside them is refused here,
    before any setting is changed."""
    given = [name for name, v in (("--points", points), ("--step", step), ("--values", values),
                                  ("--percent", percent)) if v is not None]
    if len(given) > 1:
        raise UsageError(f"give the knob's values one way only (got {' and '.join(given)})")
    lo, hi, discrete = knob_range(device, knob)
    unit = "W" if knob == "power-limit" else "MHz"
    if values is not None:
        chosen = [float(v) for v in values]
    elif percent is not None:
        chosen = [hi * p / 100.0 for p in percent]
    elif step is not None:
        if step <= 0:
            raise UsageError("--step must be positive")
        n = int(math.floor((hi - lo) / step + 1e-9))
        chosen = [hi - i * step for i in range(n + 1)]
    else:
        n = points if points is not None else default_points
        if n < 1:
            raise UsageError("--points must be at least 1")
        chosen = [hi] if n == 1 else [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    bad = [v for v in chosen if v < lo - 1e-6 or v > hi + 1e-6]
    if bad:
        raise UsageError(f"{knob} value {bad[0]:g} {unit} is outside GPU {device.info.index}'s range "
                         f"{lo:g}-{hi:g} {unit}")
    if discrete is not None:
        chosen = [min(discrete, key=lambda c, v=v: abs(c - v)) for v in chosen]
    else:
        chosen = [round(v, 1) for v in chosen]
    return tuple(sorted(set(chosen), reverse=True))


# ------------------------------------------------------------------------------------------------
# point sources


@dataclass(frozen=True)
class Outcome:
    """What the sweep learnt from one planned point (node total over GPUs, first phase)."""

    planned: PlannedPoint
    tokens_per_s: float
    tokens_per_j: float
    valid: bool


class PointSource(Protocol):
    def next_point(self, done: Sequence[Outcome]) -> PlannedPoint | None: ...


@dataclass
class GridSource:
    """A fixed plan, in order, skipping what a resumed run already has."""

    plan: SweepPlan
    skip: set[tuple[float, int, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._todo: Iterator[PlannedPoint] = iter(
            p for p in self.plan.grid() if (p.setting, p.batch_size, p.repeat) not in self.skip)

    def next_point(self, done: Sequence[Outcome]) -> PlannedPoint | None:
        return next(self._todo, None)


@dataclass
class MaxQSearch:
    """Adaptive search for the setting with the most tokens/J.

    A coarse pass over ``coarse`` evenly spread settings; then golden-section refinement inside
    the bracket around the best; each candidate near the best is repeated until the 95%
    confidence interval of its tokens/J is narrower than ``ci_pct`` percent of its mean. The
    search ends when the best's interval is that narrow *and* the bracket is below the knob's
    resolution, so a flat, noisy peak ends too (on the interval), not only a sharp one.
    """

    lo: float
    hi: float
    batch_size: int
    resolution: float
    ci_pct: float = 1.0
    coarse: int = 5
    max_points: int = 40
    snap: Callable[[float], float] = field(default=lambda v: round(v, 1))

    def __post_init__(self) -> None:
        n = self.coarse
        self._queue = [self.snap(self.hi - (self.hi - self.lo) * i / (n - 1)) for i in range(n)]

    def _stats(self, done: Sequence[Outcome]) -> dict[float, list[float]]:
        by: dict[float, list[float]] = {}
        for o in done:
            if o.valid:
                by.setdefault(o.planned.setting, []).append(o.tokens_per_j)
        return by

    def _plan(self, setting: float, done: Sequence[Outcome]) -> PlannedPoint:
        rep = sum(1 for o in done if o.planned.setting == setting)
        return PlannedPoint(setting, self.batch_size, rep)

    def next_point(self, done: Sequence[Outcome]) -> PlannedPoint | None:
        if len(done) >= self.max_points:
            return None
        if self._queue:
            return self._plan(self._queue.pop(0), done)
        by = self._stats(done)
        if not by:
            return None
        means = {s: statistics.fmean(v) for s, v in by.items()}
        best = max(means, key=means.__getitem__)
        # 1) enough repeats at the best for a confidence interval of the stated width
        if ci_half_width_pct(by[best]) > self.ci_pct:
            return self._plan(best, done)
        # 2) refine: golden-section point in the larger gap beside the best
        tried = sorted(means)
        i = tried.index(best)
        left = tried[i - 1] if i > 0 else None
        right = tried[i + 1] if i + 1 < len(tried) else None
        gaps = [(best - left, left) if left is not None else (0.0, None),
                (right - best, right) if right is not None else (0.0, None)]
        width, neighbour = max(gaps, key=lambda g: g[0])
        if neighbour is None or width <= self.resolution:
            # the bracket is resolved; make sure a close runner-up is not the true best
            rivals = [s for s in tried if s != best and len(by[s]) < 2
                      and means[s] >= means[best] * (1 - self.ci_pct / 100)]
            return self._plan(rivals[0], done) if rivals else None
        golden = 0.381966
        candidate = self.snap(best + (neighbour - best) * golden)
        if candidate in means or candidate == best:
            return None
        return self._plan(candidate, done)


def ci_half_width_pct(values: Sequence[float]) -> float:
    """Half-width of the 95% t-interval of the mean, in percent of the mean (inf for n < 2)."""
    n = len(values)
    if n < 2:
        return math.inf
    from scipy import stats

    mean = statistics.fmean(values)
    sd = statistics.stdev(values)
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return 100.0 * half / mean if mean else math.inf


# ------------------------------------------------------------------------------------------------
# permission and state checks (before anything changes)


def check_can_change(devices: Sequence[Device], knob: str) -> None:
    for d in devices:
        caps = d.info.capabilities
        ok = caps.can_set_power_limit if knob == "power-limit" else caps.can_lock_sm_clock
        if not ok:
            what = "set the power limit" if knob == "power-limit" else "lock the SM clock"
            raise PermissionDenied(f"{what} of GPU {d.info.index}")


def check_not_busy(devices: Sequence[Device], allow_busy: bool) -> list[str]:
    """Refuse a GPU where another process computes, unless allowed; returns the problems found."""
    problems = []
    for d in devices:
        state = d.state_check()
        if state.foreign_processes and not allow_busy:
            raise GpuBusy(f"GPU {d.info.index}: {state.problems[0]}; refusing to measure "
                          "(pass --allow-busy to measure anyway, every point flagged)")
        problems.extend(f"GPU {d.info.index}: {p}" for p in state.problems)
    return problems


# ------------------------------------------------------------------------------------------------
# the loop


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


@dataclass
class SweepContext:
    """Everything the loop needs, built by ``harness.run.start_sweep``."""

    devices: list[Device]
    plan: SweepPlan
    source: PointSource
    make_workload: Callable[[Device, int], Any]  # (device, batch size) -> Workload
    run_dir: Any  # harness.results.RunDir
    sampler: Any  # harness.telemetry.Sampler
    guard: Any | None  # harness.guard.Guard, None when observing
    status: LiveStatus = field(default_factory=LiveStatus)
    on_point: Callable[[list[Point]], None] | None = None
    next_index: int = 0
    done_phases: set[tuple[float, int, int, str]] = field(default_factory=set)
    own_pids: frozenset[int] = frozenset()


def run_points(ctx: SweepContext) -> list[Outcome]:
    """Measure points until the source runs dry or ``max_time_s`` of device time has passed."""
    from harness.telemetry import SteadyState, Window

    plan, devices = ctx.plan, ctx.devices
    clock = devices[0].clock
    t_begin = clock.now()
    outcomes: list[Outcome] = []
    workloads: dict[int, list[Any]] = {}
    try:
        while True:
            planned = ctx.source.next_point(outcomes)
            if planned is None:
                break
            if plan.max_time_s is not None and clock.now() - t_begin >= plan.max_time_s:
                ctx.status.state = "max-time reached"
                break
            if planned.batch_size not in workloads:
                for ws in workloads.values():
                    for w in ws:
                        w.close()
                workloads = {planned.batch_size: _prepare(ctx, planned.batch_size)}
            ws = workloads[planned.batch_size]
            enforced = _apply(ctx, planned.setting)
            ctx.status.point += 1
            ctx.status.setting, ctx.status.batch_size = planned.setting, planned.batch_size
            first_phase_points: list[Point] = []
            for phase in ws[0].phases:
                key = (planned.setting, planned.batch_size, planned.repeat, phase)
                if key in ctx.done_phases:
                    continue
                ctx.status.phase = phase
                warmup_s = _warm_up(ctx, ws, phase, SteadyState)
                points = _measure(ctx, ws, phase, planned, enforced, warmup_s, Window)
                if not first_phase_points:
                    first_phase_points = points
            if first_phase_points:
                tps = sum(p.tokens_per_s for p in first_phase_points)
                joules_per_s = sum(p.joules / p.seconds for p in first_phase_points if p.seconds > 0)
                outcomes.append(Outcome(planned, tps, tps / joules_per_s if joules_per_s else 0.0,
                                        all(p.valid for p in first_phase_points)))
    finally:
        for ws in workloads.values():
            for w in ws:
                w.close()
    return outcomes


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
    """Set the knob on every GPU; returns what each enforces."""
    ctx.status.state = "apply"
    out = {}
    for d in ctx.devices:
        if ctx.guard is None:  # observing: the current setting is the point's setting
            out[d.info.index] = d.power_limits().enforced_w
        elif ctx.plan.knob == "power-limit":
            out[d.info.index] = ctx.guard.set_power_limit(d, setting)
        else:
            out[d.info.index] = ctx.guard.lock_sm_clock(d, int(setting))
    return out


def _step_all(ws: Sequence[Any], phase: str) -> list[Any]:
    results = [w.step(phase) for w in ws]
    for w in ws:
        w.synchronize()
    return results


def _warm_up(ctx: SweepContext, ws: Sequence[Any], phase: str, steady_cls: Any) -> float:
    """Run ``phase`` until every GPU's power and SM clock hold steady; returns seconds spent."""
    ctx.status.state = "warm-up"
    plan, clock = ctx.plan, ctx.devices[0].clock
    detectors = {d.info.index: steady_cls(timeout_s=plan.warmup_max_s) for d in ctx.devices}
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
            power = r.power_instant_w if r.power_instant_w is not None else r.power_average_w
            ok = detectors[d.info.index].update(now, power or 0.0, r.sm_clock_mhz or 0.0)
            settled = settled and ok and _temperature_settled(temps[d.info.index], now, r.temperature_c, plan)
        if now - t0 >= plan.warmup_max_s or (settled and now - t0 >= plan.warmup_min_s):
            return now - t0


def _temperature_settled(history: list[tuple[float, float]], now: float, temp_c: float | None,
                         plan: SweepPlan, span_s: float = 5.0, budget_c: float = 2.5) -> bool:
    """True when the temperature trend of the last ``span_s`` would move it less than
    ``budget_c`` over a window (half the drift that flags a point): leakage follows
    temperature, so a window on a still-warming GPU would measure a moving target."""
    if temp_c is None:
        return True
    history.append((now, temp_c))
    while len(history) > 2 and history[1][0] <= now - span_s:
        history.pop(0)
    t_old, temp_old = history[0]
    if now - t_old < span_s * 0.8:
        return False
    rate = (temp_c - temp_old) / (now - t_old)
    return abs(rate) * plan.window_s < budget_c


def _show(ctx: SweepContext, reading: Any) -> None:
    st = ctx.status
    st.power_w = reading.power_instant_w if reading.power_instant_w is not None else reading.power_average_w
    st.sm_clock_mhz, st.temperature_c = reading.sm_clock_mhz, reading.temperature_c


def _measure(ctx: SweepContext, ws: Sequence[Any], phase: str, planned: PlannedPoint,
             enforced: dict[int, float], warmup_s: float, window_cls: Any) -> list[Point]:
    """One window of ``phase`` on every GPU; writes and returns one Point per GPU."""
    ctx.status.state = "measure"
    plan, devices = ctx.plan, ctx.devices
    clock = devices[0].clock
    requested = None if ctx.guard is None else {d.info.index: planned.setting for d in devices}

    def sync() -> None:
        for w in ws:
            w.synchronize()

    totals = [[0, 0, 0, 0, [], []] for _ in ws]  # steps, input, output, sequences, ttfts, tpots
    with window_cls(devices, ctx.sampler, sync, requested=requested, knob=plan.knob_field,
                    min_seconds=min(1.0, plan.window_s), own_pids=ctx.own_pids) as window:
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
            if clock.now() - t0 >= plan.window_s:
                break
    points = []
    for d, tot in zip(devices, totals):
        wr = window.results[d.info.index]
        points.append(_point(ctx, d, tot, wr, phase, planned, enforced[d.info.index], warmup_s))
    for p, d in zip(points, devices):
        ctx.run_dir.append_point(p, window.results[d.info.index].samples)
    ctx.status.tokens_per_s = sum(p.tokens_per_s for p in points)
    ctx.status.state = "recorded"
    if ctx.on_point:
        ctx.on_point(points)
    return points


def _point(ctx: SweepContext, device: Device, tot: list, wr: Any, phase: str,
           planned: PlannedPoint, enforced: float, warmup_s: float) -> Point:
    steps, inp, out, seqs, ttfts, tpots = tot
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
    return Point(
        point_index=index,
        gpu_index=device.info.index,
        gpu_uuid=device.info.uuid,
        knob=ctx.plan.knob_field if ctx.guard is not None else "observe",
        setting=planned.setting,
        enforced=enforced,
        batch_size=planned.batch_size,
        phase=phase,
        repeat=planned.repeat,
        window_start_s=wr.t_start,
        window_end_s=wr.t_end,
        seconds=seconds,
        steps=steps,
        input_tokens=inp,
        output_tokens=out,
        tokens=tokens,
        joules=joules,
        joules_integrated=wr.joules_integrated,
        true_joules=wr.true_joules,
        energy_source=wr.energy_source,
        power_mean_w=wr.power_mean_w,
        power_p99_w=wr.power_p99_w,
        power_max_1s_w=wr.power_max_1s_w,
        sm_clock_mean_mhz=wr.sm_clock_mean_mhz,
        mem_clock_mean_mhz=wr.mem_clock_mean_mhz,
        temp_start_c=wr.temp_start_c,
        temp_end_c=wr.temp_end_c,
        warmup_s=warmup_s,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        tokens_per_j=tokens / joules if joules > 0 else 0.0,
        j_per_token=joules / tokens if tokens else 0.0,
        ttft_ms=ttft_ms,
        tpot_ms=tpot_ms,
        tokens_per_s_per_user=per_user,
        host_joules=wr.host_joules,
        clock_event_shares=";".join(f"{k}={v:.3f}" for k, v in sorted(wr.clock_event_shares.items()) if v > 0),
        flags=";".join(wr.flags),
    )


# ------------------------------------------------------------------------------------------------
# one run, end to end (what `tokbench sweep` and `tokbench run` call)


@dataclass(frozen=True)
class SweepOptions:
    """A sweep as the user asked for it (CLI flags override the profile's [sweep] defaults)."""

    profile: str = "train-llama-1b"
    gpus: str | None = None
    knob: str | None = None
    points: int | None = None
    step: float | None = None
    values: tuple[float, ...] | None = None
    percent: tuple[float, ...] | None = None
    search: str | None = None
    search_ci_pct: float = 1.0
    batch_sizes: tuple[int, ...] | None = None
    repeats: int | None = None
    order: str | None = None
    window_s: float | None = None
    warmup_min_s: float | None = None
    warmup_max_s: float | None = None
    observe: bool = False
    yes: bool = False
    allow_busy: bool = False
    dry_run: bool = False
    max_time_s: float | None = None
    out: str = "results"
    resume: str | None = None
    run_id: str | None = None
    backend: str = "auto"
    sim_gpu: str = "h100-sxm"
    sim_count: int = 1
    sim_seed: int = 0
    sim_overrides: tuple[str, ...] = ()
    command: str = ""


@dataclass
class SweepRun:
    """What a finished (or interrupted) run reports back to the CLI."""

    run_dir: Any
    status: str
    points: list[Point]
    messages: list[str]
    plan: SweepPlan
    estimate_s: float = 0.0


def estimate_seconds(plan: SweepPlan, n_points: int, phases: int, compile_s: float) -> float:
    """Device time a plan needs: warm-ups (assumed twice the minimum), windows and compiles."""
    per_phase = max(plan.warmup_min_s * 2, 1.0) + plan.window_s
    return n_points * phases * per_phase + compile_s * len(plan.batch_sizes)


def run_sweep(opts: SweepOptions, status: LiveStatus | None = None,
              on_point: Callable[[list[Point]], None] | None = None) -> SweepRun:
    """Open the node, decide what may change, measure, restore. Never loses a finished point."""
    from harness import guard as guard_mod
    from harness.devices import open_devices
    from harness.profiles import load_profile
    from harness.results import RunDir, new_run_id
    from harness.telemetry import Sampler, measure_idle
    from workloads.registry import get as get_workload

    messages = [f"restored {line}" for line in guard_mod.recover()]
    resumed = None
    if opts.resume:
        resumed = RunDir.open(opts.resume)
        opts = SweepOptions(**{**resumed.manifest["options"], "resume": opts.resume, "dry_run": opts.dry_run})
        if opts.search:
            raise UsageError("--resume of an adaptive search is not supported; start a new run")
    profile = load_profile(opts.profile)
    reopen = dict(backend=opts.backend, sim_gpu=opts.sim_gpu, sim_count=opts.sim_count, sim_seed=opts.sim_seed,
                  sim_overrides=list(opts.sim_overrides))
    ds = open_devices(**reopen)
    if ds.notice:
        messages.append(ds.notice)
    reopen["backend"] = ds.backend
    try:
        devices = ds.select(opts.gpus)
        wcfg, scfg = profile.workload, profile.sweep
        knob = opts.knob or scfg.knob
        observe = opts.observe
        if ds.backend == "nvml" and not observe and opts.gpus is None and not opts.yes:
            observe = True
            messages.append("no GPU named: measuring at the current setting only (observe). To sweep, name "
                            "the GPUs to change with --gpus 0,1 (or --yes for all)")
        problems = check_not_busy(devices, opts.allow_busy)
        messages.extend(problems)
        if observe:
            settings: tuple[float, ...] = (devices[0].power_limits().enforced_w,)
            knob = "observe"
        else:
            check_can_change(devices, knob)
            given = (opts.points, opts.step, opts.values, opts.percent)
            if all(v is None for v in given):  # the profile's defaults
                given = (scfg.points, scfg.step, scfg.values, scfg.percent)
            settings = resolve_settings(devices[0], knob, *given)
        batch_sizes = tuple(opts.batch_sizes or scfg.batch_sizes or (wcfg.batch_size,))
        plan = SweepPlan(
            knob=knob, settings=settings, batch_sizes=batch_sizes,
            repeats=opts.repeats or scfg.repeats, order=opts.order or scfg.order,
            warmup_min_s=scfg.warmup_min_s if opts.warmup_min_s is None else opts.warmup_min_s,
            warmup_max_s=scfg.warmup_max_s if opts.warmup_max_s is None else opts.warmup_max_s,
            window_s=opts.window_s or scfg.window_s, search=opts.search, search_ci_pct=opts.search_ci_pct,
            max_time_s=opts.max_time_s,
        )
        if plan.search not in (None, "max-q"):
            raise UsageError(f"unknown search '{plan.search}' (only max-q)")
        if plan.search and observe:
            raise UsageError("--search changes settings; it cannot run with --observe")
        phases = len(wcfg.resolved_phases)
        compile_s = 40.0 if (ds.backend == "nvml" and wcfg.compile is not False) else 0.0
        n_points = len(plan.grid()) if not plan.search else 12
        estimate = estimate_seconds(plan, n_points, phases, compile_s)
        if opts.dry_run:
            return SweepRun(None, "dry-run", [], messages, plan, estimate)

        def make_workload(device: Device, batch: int) -> Any:
            return get_workload(wcfg.model_copy(update={"batch_size": batch}), device)

        source: PointSource
        if plan.search:
            lo, hi, discrete = knob_range(devices[0], knob)
            snap = (lambda v: min(discrete, key=lambda c: abs(c - v))) if discrete else (lambda v: round(v, 1))
            # resolve the location to a 21-point grid's step, and never finer than 25 W (Zeus's grid step)
            resolution = max((hi - lo) / 20, 25.0) if knob == "power-limit" else (hi - lo) / 20
            source = MaxQSearch(lo, hi, batch_sizes[0], resolution=resolution, ci_pct=plan.search_ci_pct, snap=snap)
        else:
            source = GridSource(plan)
        # the per-GPU locks come first, so a refused run leaves nothing behind
        guard = contextlib.nullcontext() if observe else guard_mod.Guard(devices, reopen)
        with guard as g:
            sampler = Sampler(devices)
            sampler.start()
            try:
                if resumed is not None:
                    run_dir = resumed
                    existing = run_dir.points()
                    done = {(float(r.setting), int(r.batch_size), int(r.repeat), str(r.phase))
                            for r in existing.itertuples()}
                    next_index = int(existing["point_index"].max()) + 1 if len(existing) else 0
                    run_dir.update_manifest(status="running")
                else:
                    spec = make_workload(devices[0], batch_sizes[0]).spec
                    manifest = _manifest(opts, profile, plan, devices, ds.backend, spec, reopen)
                    manifest["idle_power_w"] = {str(k): v for k, v in measure_idle(devices, sampler).items()}
                    run_dir = RunDir.create(opts.out, opts.run_id or new_run_id(profile.name or "sweep"), manifest)
                    done, next_index = set(), 0
                ctx = SweepContext(devices, plan, source, make_workload, run_dir, sampler, g,
                                   status or LiveStatus(), on_point, next_index, done)
                ctx.status.total = None if plan.search else len(plan.grid())
                final = "failed"
                try:
                    run_points(ctx)
                    final = "complete"
                except (KeyboardInterrupt, guard_mod.Terminated):
                    final = "interrupted"
                    raise
                finally:
                    run_dir.update_manifest(status=final, ended=_now_iso())
            finally:
                sampler.stop()
        return SweepRun(run_dir, final, _points_of(run_dir), messages, plan, estimate)
    finally:
        ds.close()


def _now_iso() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _points_of(run_dir: Any) -> list[Point]:
    from dataclasses import fields as dc_fields

    names = {f.name for f in dc_fields(Point)} - {"extra"}
    df = run_dir.points()
    out = []
    for row in df.to_dict("records"):
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items() if k in names}
        clean["flags"] = clean.get("flags") or ""
        clean["clock_event_shares"] = clean.get("clock_event_shares") or ""
        out.append(Point(**clean))
    return out


def _manifest(opts: SweepOptions, profile: Any, plan: SweepPlan, devices: Sequence[Device], backend: str,
              spec: Any, reopen: dict) -> dict:
    import platform
    from dataclasses import asdict
    from importlib import metadata

    from harness import __version__

    versions = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "vllm", "nvidia-ml-py"):  # from metadata: importing torch costs seconds
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return {
        "tool_version": __version__,
        "host": platform.node(),
        "command": opts.command,
        "started": _now_iso(),
        "status": "running",
        "backend": backend,
        "knob": plan.knob_field,
        "devices": [{**asdict(d.info), "power_limits": asdict(d.power_limits())} for d in devices],
        "workload": spec.to_dict(),
        "comparison": {"gpu_model": devices[0].info.name, "driver": devices[0].info.driver,
                       **spec.comparison_key()},
        "profile": profile.model_dump(mode="json"),
        "plan": {**asdict(plan), "settings": list(plan.settings), "batch_sizes": list(plan.batch_sizes)},
        "options": {**asdict(opts), "values": list(opts.values) if opts.values else None,
                    "percent": list(opts.percent) if opts.percent else None,
                    "batch_sizes": list(opts.batch_sizes) if opts.batch_sizes else None,
                    "sim_overrides": list(opts.sim_overrides)},
        "reopen": reopen,
        "software": versions,
    }
