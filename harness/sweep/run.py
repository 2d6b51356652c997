"""One run end to end (what `tokbench sweep` and `tokbench run` call): open the node, check what may
change, plan, measure, restore."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.devices.base import Device
from harness.errors import GpuBusy, PermissionDenied, RunDirError, UsageError
from harness.knobs import OBSERVE, POWER_LIMIT, SM_CLOCK, Knob, knob
from harness.records.manifest import build_manifest, utc_now
from harness.records.rundir import Point
from harness.sweep.loop import LiveStatus, SweepContext, run_points
from harness.sweep.plan import PlannedPoint, SweepPlan, resolve_settings
from harness.sweep.sources import GridSource, MaxQSearch, PointSource, SearchPerBatch, SearchResult


def check_can_change(devices: Sequence[Device], lever: Knob) -> None:
    for d in devices:
        if not lever.may_change(d):
            raise PermissionDenied(f"{lever.verb} of GPU {d.info.index}")


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
    search_margin_pct: float | None = None
    search_budget: float | None = None
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
    reset_foreign_clock_lock: bool = False
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
    #: on a simulated part, about how many seconds of this machine's time the simulation takes
    sim_wall_s: float | None = None
    #: points of the plan still to measure when the run stopped on its budget
    remaining: int = 0
    #: the answer of each Max-Q search (one per batch size) and how sure it is
    searches: list[SearchResult] = field(default_factory=list)


def estimate_seconds(plan: SweepPlan, points: Sequence[PlannedPoint], phases: Sequence[str], compile_s: float,
                     step: Callable[[float, int, str], Any] | None = None, start_temp_c: float | None = None,
                     steady_load: Callable[[int], bool] | None = None) -> float:
    """Device time a plan needs: per batch size the workload's first steps (and a compile), per
    point and phase a warm-up and a window, each ending on a whole workload step (the loop checks
    after each step).

    The warm-up follows the loop's rule (harness/sweep/loop.py): its detector first reads after one
    step and needs power and clock in band for the minimum warm-up; meanwhile the temperature trend,
    taken over a span from the first reading on in whole degrees, must move less than 2.5 C over
    the window's share of the thermal constant, tau * (1 - exp(-window / tau)). On a first-order
    thermal response a temperature step dT settles to that rate after tau * ln(dT / (tau * rate)),
    plus half the span the trend lags. At most the profile's maximum.

    ``step`` (setting, batch, phase) -> the step as it runs steadily there (``seconds``, the
    ``temp_c`` it settles at and its ``thermal_tau_s``: a simulated part answers from its physics),
    or None: then a GPU it has not seen is assumed (steps short against the window, a 25 s
    thermal constant, a 35 C step from idle to the first point and 8 C between points).
    ``steady_load`` (batch) -> False where the workload's own load swings more than the warm-up's
    band (a few users of a server arriving and leaving): those warm-ups run to the maximum.
    """
    tau_s, first_step_c, next_step_c, overrun = 25.0, 35.0, 8.0, 0.03
    #: seconds a part's readings take to come into band after a change (the power fields' 100 ms
    #: refresh, the cap controller's first correction) and the window's edges (aligned to the
    #: energy counter's ticks, synchronised)
    ready_s, edges_s = 0.0, 0.1
    hold_s = max(plan.warmup_min_s, 0.5)
    span_s = min(5.0, max(plan.warmup_min_s, 1.0))

    def rate_c_per_s(tau: float) -> float:
        """The trend at which the loop passes: the present rate carried over the thermal constant's
        share of the window (tau * (1 - exp(-window / tau))) moves less than 2.5 C. The trend is read
        in whole degrees over the span: it passes once a reading shows no more whole degrees than the
        budget allows, which, tried after every step with the rounding falling differently each time,
        happens a little before the true change reaches the next degree."""
        horizon = tau * (1.0 - math.exp(-plan.window_s / tau)) if tau > 0 else plan.window_s
        allowed = math.ceil(2.5 * span_s / horizon) - 1
        return (allowed + 0.8) / span_s

    def whole(seconds: float, step_s: float) -> float:
        return math.ceil(seconds / step_s - 1e-9) * step_s if step_s > 0 else seconds

    def warm_up(step_c: float, tau: float, step_s: float) -> float:
        detector = whole(max(step_s + hold_s + ready_s, plan.warmup_min_s), step_s)
        # the temperature's history runs from the first reading, beside the power and clock detector
        trend = max(detector, whole(0.8 * span_s, step_s) if step_s < 0.8 * span_s else step_s)
        x = step_c / (tau * rate_c_per_s(tau))
        thermal = whole(tau * math.log(x) + span_s / 2, step_s) if x > 1.0 else 0.0
        longest = whole(plan.warmup_max_s, step_s)
        return min(max(trend, thermal), longest)

    def window(step_s: float) -> float:
        if not step_s:
            return plan.window_s * (1 + overrun)
        return whole(plan.window_s, step_s) + edges_s

    total, batches, temp = 0.0, [], start_temp_c
    for p in points:
        steps = {ph: step(p.setting, p.batch_size, ph) if step is not None else None for ph in phases}
        if p.batch_size not in batches:  # the workload is prepared (one step per phase) and compiled
            batches.append(p.batch_size)
            total += compile_s + sum(s.seconds for s in steps.values() if s is not None)
        unsteady = steady_load is not None and not steady_load(p.batch_size)
        for ph in phases:
            s = steps[ph]
            if s is None or temp is None:
                step_c, tau = (next_step_c if total else first_step_c), tau_s
            else:
                step_c, tau = abs(s.temp_c - temp), s.thermal_tau_s
            step_s = s.seconds if s is not None else 0.0
            warm = whole(plan.warmup_max_s, step_s) if unsteady else warm_up(step_c, tau, step_s)
            total += warm + window(step_s)
            temp = s.temp_c if s is not None else None
    return total


def _steady_load(wcfg: Any) -> Callable[[int], bool] | None:
    """Whether a workload's own load holds its power within the warm-up's band at a batch size. A
    built-in workload repeats one step. An endpoint's closed loop of users changes the engine's
    batch at every arrival and departure: with fewer than ~100 users its 1 s power swings more than
    the band, and its warm-ups run to their maximum (seen on the serving twin, every setting)."""
    if wcfg.name != "endpoint":
        return None
    return lambda users: users >= ENDPOINT_STEADY_USERS


#: users of an endpoint's closed loop from which its power holds steady (``_steady_load``)
ENDPOINT_STEADY_USERS = 100


def _steady_step(device: Device, lever: Knob, wcfg: Any, get_workload: Callable[..., Any]) -> Callable[..., Any]:
    """(setting, batch, phase) -> one workload step as it runs steadily on a simulated part, from its
    physics (``steady_step``) and the twin's loads (``step_loads``); None where either is missing
    (a workload that runs on its own, such as the serving twin)."""
    loads: dict[tuple[int, str], Any] = {}  # a step's loads depend on the batch and phase, not the setting
    steps: dict[tuple[float, int, str], Any] = {}

    def step_loads(batch: int, phase: str) -> Any:
        if (batch, phase) not in loads:
            workload = get_workload(wcfg.model_copy(update={"batch_size": batch}), device)
            of = getattr(workload, "step_loads", None)
            loads[batch, phase] = of(phase)[0] if of is not None and hasattr(device, "steady_step") else None
        return loads[batch, phase]

    def step(setting: float, batch: int, phase: str) -> Any:
        key = (setting, batch, phase)
        if key not in steps:
            sequence = step_loads(batch, phase)
            limit = setting if lever is POWER_LIMIT else None
            lock = setting if lever is SM_CLOCK else None
            steps[key] = None if sequence is None else device.steady_step(sequence, limit_w=limit, lock_mhz=lock)
        return steps[key]

    return step


def simulation_rate(device: Device, wcfg: Any, get_workload: Callable[..., Any], sample_s: float = 2.0) -> float:
    """Simulated device seconds per second of this machine's time for a workload: a scratch board of
    the same part (its own node: no setting is read or left) runs each of its phases alone, as a
    sweep's warm-ups and windows do, with a sampler polling as a sweep's does, for a few simulated
    seconds each; the phases count equally. Per-point bookkeeping (samples written, windows
    computed) adds a little on top."""
    import os
    import time

    from harness.devices.simulated import SimNode
    from harness.telemetry import Sampler

    node = SimNode(device.part, seed=0, name=f"tokbench-dry-run-{os.getpid()}")  # type: ignore[attr-defined]
    gpu = node.gpus[0]
    workload = get_workload(wcfg, gpu)
    wall_per_s = []
    with Sampler([gpu]):
        workload.prepare(gpu)
        for phase in workload.phases:
            wall0, t0 = time.perf_counter(), node.now()
            while node.now() - t0 < sample_s:
                workload.step(phase)
                workload.synchronize()
            wall_per_s.append((time.perf_counter() - wall0) / (node.now() - t0))
    workload.close()
    return len(wall_per_s) / max(sum(wall_per_s), 1e-9)


class RunInterrupted(BaseException):  # noqa: N818 (an interruption, like KeyboardInterrupt)
    """Ctrl-C, SIGTERM or SIGHUP ended a run after its settings were restored and its finished
    points kept; carries where the run is so the CLI can say how to resume it."""

    def __init__(self, run_dir: Any, points: int, signal_name: str, exit_code: int) -> None:
        super().__init__(signal_name)
        self.run_dir, self.points, self.signal_name, self.exit_code = run_dir, points, signal_name, exit_code


def run_sweep(opts: SweepOptions, status: LiveStatus | None = None,
              on_point: Callable[[list[Point]], None] | None = None) -> SweepRun:
    """Open the node, decide what may change, measure, restore. Never loses a finished point."""
    from harness.devices import open_devices
    from harness.profiles import load_profile, with_options
    from harness.records.rundir import RunDir, new_run_id
    from harness.sweep import guard as guard_mod
    from harness.telemetry import Sampler, measure_idle
    from workloads.registry import get as get_workload

    recovery = guard_mod.recover()
    messages = [f"restored {line}" for line in recovery.restored] + recovery.problems
    resumed, repaired = None, []
    if opts.resume:
        resumed, repaired = RunDir.resume(Path(opts.resume))
        messages.extend(repaired)
        # the run's own options, but this invocation's budget (each invocation may have one)
        opts = SweepOptions(**{**resumed.manifest["options"], "resume": opts.resume, "dry_run": opts.dry_run,
                               "max_time_s": opts.max_time_s, "command": opts.command})
    try:
        profile = load_profile(opts.profile)
        reopen = dict(backend=opts.backend, sim_gpu=opts.sim_gpu, sim_count=opts.sim_count, sim_seed=opts.sim_seed,
                      sim_overrides=list(opts.sim_overrides))
        ds = open_devices(**reopen)
    except BaseException:
        if resumed is not None:
            resumed.close()
        raise
    if ds.notice:
        messages.append(ds.notice)
    reopen["backend"] = ds.backend
    try:
        devices = ds.select(opts.gpus)
        wcfg = profile.workload
        scfg = with_options(profile.sweep, knob=opts.knob, points=opts.points, step=opts.step, values=opts.values,
                            percent=opts.percent, batch_sizes=opts.batch_sizes, repeats=opts.repeats,
                            order=opts.order, warmup_min_s=opts.warmup_min_s, warmup_max_s=opts.warmup_max_s,
                            window_s=opts.window_s, margin_pct=opts.search_margin_pct,
                            search_budget=opts.search_budget, max_time_s=opts.max_time_s)
        lever = knob(scfg.knob)
        observe = opts.observe
        if ds.backend == "nvml" and not observe and opts.gpus is None and not opts.yes:
            observe = True
            messages.append("no GPU named: measuring at the current setting only (observe). To sweep, name "
                            "the GPUs to change with --gpus 0,1 (or --yes for all)")
        messages.extend(check_not_busy(devices, opts.allow_busy))
        if observe:
            check_not_swept(devices)
            lever = OBSERVE
            settings: tuple[float, ...] = (lever.current(devices[0]),)
        else:
            check_can_change(devices, lever)
            check_clock_restorable(devices, lever, opts.reset_foreign_clock_lock)
            settings = resolve_settings(devices[0], lever, scfg.points, scfg.step, scfg.values, scfg.percent)
        batch_sizes = tuple(scfg.batch_sizes or (wcfg.batch_size,))
        plan = SweepPlan(
            knob=lever.name, settings=settings, batch_sizes=batch_sizes, repeats=scfg.repeats, order=scfg.order,
            warmup_min_s=scfg.warmup_min_s, warmup_max_s=scfg.warmup_max_s, window_s=scfg.window_s,
            search=opts.search, search_margin_pct=scfg.margin_pct, search_budget=scfg.search_budget,
            max_time_s=scfg.max_time_s,
        )
        if plan.search not in (None, "max-q"):
            raise UsageError(f"unknown search '{plan.search}' (only max-q)")
        if plan.search and observe:
            raise UsageError("--search changes settings; it cannot run with --observe")
        if plan.search and opts.repeats is not None:
            raise UsageError("--search max-q chooses its own repeats: give no --repeats")
        compile_s = 40.0 if (ds.backend == "nvml" and wcfg.compile is not False) else 0.0
        source: PointSource = max_q_searches(plan, lever, devices[0]) if plan.search else GridSource(plan)
        if isinstance(source, SearchPerBatch):
            messages.extend({n for s in source.searches if (n := s.budget_note(lever.unit))})
            # a search spends at most its budget: that share of its grid
            planned_points = [p for s in source.searches for p in _budget_points(s)]
        else:
            planned_points = plan.grid()
        step = _steady_step(devices[0], lever, wcfg, get_workload) if ds.backend == "sim" else None
        estimate = estimate_seconds(plan, planned_points, wcfg.resolved_phases, compile_s, step,
                                    devices[0].read().temperature_c if step is not None else None,
                                    steady_load=_steady_load(wcfg))
        if opts.dry_run:
            sim_wall = None
            if ds.backend == "sim":
                rate = simulation_rate(devices[0], wcfg.model_copy(update={"batch_size": batch_sizes[0]}), get_workload)
                sim_wall = estimate / rate
            return SweepRun(None, "dry-run", [], messages, plan, estimate, sim_wall)

        def make_workload(device: Device, batch: int) -> Any:
            return get_workload(wcfg.model_copy(update={"batch_size": batch}), device)

        # the per-GPU locks come first, so a refused run leaves nothing behind
        guard = contextlib.nullcontext() if observe else guard_mod.Guard(devices, reopen)
        with guard as g:
            sampler = Sampler(devices)
            sampler.start()
            try:
                if resumed is not None:
                    run_dir = resumed
                    spec = make_workload(devices[0], batch_sizes[0]).spec
                    check_same_run(run_dir.manifest, devices, ds.backend, spec)
                    run_dir.update_manifest(status="running", resumed=[*run_dir.manifest.get("resumed", []),
                                                                       {"start_utc": utc_now(),
                                                                        "command_line": sys.argv}])
                else:
                    spec = make_workload(devices[0], batch_sizes[0]).spec
                    run_id = opts.run_id or new_run_id(profile.name or "sweep")
                    manifest = _manifest(run_id, opts, profile, plan, devices, ds.backend, spec, reopen)
                    manifest["idle_power_w"] = {str(k): v for k, v in measure_idle(devices, sampler).items()}
                    run_dir = RunDir.create(opts.out, run_id, manifest)
                ctx = SweepContext(devices, plan, source, make_workload, run_dir, sampler, g,
                                   status or LiveStatus(), on_point, run_dir.next_point_index(), run_dir.recorded())
                searches: list[SearchResult] = []
                ctx.status.total = None if plan.search else len(plan.grid())
                ctx.status.estimate_s = None if plan.search else estimate
                final = "failed"
                try:
                    outcomes = run_points(ctx)
                    final = "stopped" if ctx.stopped_by_budget else "complete"
                    if isinstance(source, SearchPerBatch):
                        searches = source.results(outcomes)
                        run_dir.update_manifest(search=[asdict(r) | {"excluded": {f"{k:g}": v for k, v in
                                                                                 r.excluded.items()}}
                                                        for r in searches])
                except (KeyboardInterrupt, guard_mod.Terminated) as e:
                    final = "interrupted"
                    name, code = ("SIGINT", 130) if isinstance(e, KeyboardInterrupt) else (e.signal_name, e.exit_code)
                    raise RunInterrupted(run_dir.path, len(run_dir.points()), name, code) from e
                finally:
                    run_dir.update_manifest(status=final)
                    run_dir.close()
            finally:
                sampler.stop()
        result = SweepRun(run_dir, final, run_dir.records(), messages, plan, estimate, searches=searches)
        if final == "stopped":
            result.remaining = _remaining(plan, devices, wcfg.resolved_phases, run_dir)
        return result
    finally:
        ds.close()
        if resumed is not None:
            resumed.close()


def max_q_searches(plan: SweepPlan, lever: Knob, device: Device) -> SearchPerBatch:
    """One Max-Q search per batch size over the knob's whole range; its budget is the plan's share of the
    knob's equivalent grid: 21 settings (25 W steps over an H100's 200-700 W), one repeat each."""
    lo, hi, discrete = lever.range(device)
    snap = (lambda v: min(discrete, key=lambda c: abs(c - v))) if discrete else (lambda v: round(v, 1))
    # resolve the location to a 21-point grid's step, never finer than the knob's own floor
    resolution = max((hi - lo) / 20, lever.min_resolution)
    grid_points = int(round((hi - lo) / resolution)) + 1
    return SearchPerBatch([MaxQSearch(lo, hi, b, resolution=resolution, margin_pct=plan.search_margin_pct,
                                      budget_share=plan.search_budget, grid_points=grid_points,
                                      window_s=plan.window_s, snap=snap) for b in plan.batch_sizes])


def _budget_points(search: MaxQSearch) -> list[PlannedPoint]:
    """The points a search may spend for the estimate: its budget's share of its grid, spread from the
    top of the range down (as its coarse pass runs), so warm-ups see the thermal steps it will."""
    n = math.ceil(search.budget_share * search.grid_points)
    hi, lo = search.hi, search.lo
    return [PlannedPoint(search.snap(hi - (hi - lo) * i / max(n - 1, 1)), search.batch_size, 0) for i in range(n)]


def check_not_swept(devices: Sequence[Device]) -> None:
    """Observing a GPU that another tokbench run is sweeping would record that run's setting, not
    the one in force when this run started: refuse."""
    from harness.sweep.guard import gpu_in_use

    for d in devices:
        pid = gpu_in_use(d)
        if pid is not None:
            raise GpuBusy(f"GPU {d.info.index} is being swept by another tokbench run (pid {pid}); its setting "
                          "changes under an observation, so --observe waits until that run ends")


def check_clock_restorable(devices: Sequence[Device], lever: Knob, reset_foreign_lock: bool) -> None:
    """A clock lock someone else set cannot be read back through NVML, so the restore at the end of
    an SM-clock sweep would reset it rather than put it back: refuse unless told it may go."""
    if lever is not SM_CLOCK or reset_foreign_lock:
        return
    for d in devices:
        if d.sm_clock_lock() is None and any("locked-clock" in n or "application-clock" in n
                                             for n in d.state_check().notes):
            raise UsageError(f"GPU {d.info.index}'s SM clock is held by a setting tokbench did not make and cannot "
                             "read back: after the sweep it would be reset, not restored. Pass "
                             "--reset-foreign-clock-lock to sweep anyway (the lock is lost)")


def check_same_run(manifest: dict, devices: Sequence[Device], backend: str, spec: Any) -> None:
    """Resume only onto the GPUs, driver, tool and workload the run started with."""
    from harness.records.manifest import tool_version

    had = [d.get("uuid") for d in manifest.get("devices", [])]
    now = [d.info.uuid for d in devices]
    problems = []
    if had != now:
        problems.append(f"GPUs {', '.join(map(str, now))} instead of {', '.join(map(str, had))}")
    if manifest.get("backend") != backend:
        problems.append(f"backend {backend} instead of {manifest.get('backend')}")
    drivers = {d.get("driver") for d in manifest.get("devices", [])}
    if drivers and drivers != {d.info.driver for d in devices}:
        problems.append(f"driver {devices[0].info.driver} instead of {', '.join(map(str, drivers))}")
    if manifest.get("tool_version") not in (None, "unknown", tool_version()):
        problems.append(f"tokbench {tool_version()} instead of {manifest.get('tool_version')}")
    if manifest.get("workload") and manifest["workload"] != spec.to_dict():
        problems.append("a different workload")
    if problems:
        raise RunDirError("cannot resume this run here: " + "; ".join(problems)
                          + " (a resumed run must measure what it started measuring)")


def _remaining(plan: SweepPlan, devices: Sequence[Device], phases: Sequence[str], run_dir: Any) -> int:
    """Planned measurements (GPU x setting x batch x repeat x phase) of a grid with no row yet."""
    if plan.search:
        return 0
    from harness.records.rundir import point_key

    done = run_dir.done_keys()
    return sum(1 for p in plan.grid() for d in devices for ph in phases
               if point_key(d.info.uuid, p.setting, p.batch_size, p.repeat, ph) not in done)


def _manifest(run_id: str, opts: SweepOptions, profile: Any, plan: SweepPlan, devices: Sequence[Device],
              backend: str, spec: Any, reopen: dict) -> dict:
    from dataclasses import asdict

    return build_manifest(
        run_id=run_id, backend=backend, knob=plan.lever.field,
        devices=[{**asdict(d.info), "power_limits": asdict(d.power_limits())} for d in devices],
        workload=spec.to_dict(),
        comparison={"gpu_model": devices[0].info.name, "driver": devices[0].info.driver, **spec.comparison_key()},
        profile=profile.model_dump(mode="json"),
        plan={**asdict(plan), "settings": list(plan.settings), "batch_sizes": list(plan.batch_sizes)},
        options={**asdict(opts), "values": list(opts.values) if opts.values else None,
                 "percent": list(opts.percent) if opts.percent else None,
                 "batch_sizes": list(opts.batch_sizes) if opts.batch_sizes else None,
                 "sim_overrides": list(opts.sim_overrides)},
        reopen=reopen,
    )
