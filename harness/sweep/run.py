"""One run end to end (what `tokbench sweep` and `tokbench run` call): open the node, check what may
change, plan, measure, restore."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.devices.base import Device
from harness.errors import GpuBusy, PermissionDenied, UsageError
from harness.records.rundir import Point
from harness.sweep.loop import LiveStatus, SweepContext, run_points
from harness.sweep.plan import SweepPlan, knob_range, resolve_settings
from harness.sweep.sources import GridSource, MaxQSearch, PointSource


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
    """Device time a plan needs: warm-ups, windows and compiles.

    A warm-up ends once power and clock hold and the temperature trend would move less than
    2.5 C over a window (harness/sweep/loop.py): after a temperature step dT that takes
    tau * ln(dT * window / (2.5 C * tau)) on a first-order thermal response, at least the
    profile's minimum and ~6 s of history, at most its maximum. The first point starts from idle
    (a large step), the others from the previous point (a smaller one).
    """
    # what it assumes of a GPU it has not seen: thermal time constant (s), the temperature step
    # from idle to work and between two points (C), how far a window runs past its length to
    # finish the step in progress
    tau_s, first_step_c, next_step_c, overrun = 25.0, 35.0, 8.0, 0.03

    def warm_up(step_c: float) -> float:
        settle = tau_s * math.log(max(1.0, step_c * plan.window_s / (2.5 * tau_s)))
        return min(plan.warmup_max_s, max(plan.warmup_min_s, 6.0, settle))

    windows = n_points * phases
    warm = warm_up(first_step_c) + (windows - 1) * warm_up(next_step_c) if windows else 0.0
    return warm + windows * plan.window_s * (1 + overrun) + compile_s * len(plan.batch_sizes)


def run_sweep(opts: SweepOptions, status: LiveStatus | None = None,
              on_point: Callable[[list[Point]], None] | None = None) -> SweepRun:
    """Open the node, decide what may change, measure, restore. Never loses a finished point."""
    from harness.devices import open_devices
    from harness.profiles import load_profile
    from harness.records.rundir import RunDir, new_run_id
    from harness.sweep import guard as guard_mod
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
