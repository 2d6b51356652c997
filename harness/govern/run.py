"""`tokbench govern` end to end: open the named GPUs, build the menu and the signal, take the
guard (journal before the first change, restore at exit, error and signals; a hard kill is
repaired at the next start), run the loop, report what it delivered against the plan."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.devices.base import Device
from harness.errors import UsageError
from harness.govern.config import GovernConfig, load_config
from harness.govern.governor import Governor, TimeBase
from harness.govern.log import Decision, DecisionLog
from harness.govern.menu import Menu
from harness.govern.signals import CsvFeed, FixedTarget, HttpFeed, Signal, parse_time, utc_now


@dataclass(frozen=True)
class GovernOptions:
    curve: str
    gpus: str | None = None
    yes: bool = False
    target_w: float | None = None
    schedule: str | None = None
    feed: str | None = None  # CSV path or http(s) URL
    openadr: str | None = None  # VTN URL
    ven_name: str = "tokbench-ven"
    config: str | None = None
    phase: str | None = None
    batch_size: int | None = None
    duration_s: float | None = None
    start: str | None = None  # signal time at the start (default: now)
    speedup: float = 1.0
    realtime: bool = False
    dry_run: bool = False
    log: str | None = "govern-log.csv"
    job: str | None = None  # simulated job's profile ("none": no job)
    backend: str = "auto"
    sim_gpu: str = "h100-sxm"
    sim_count: int = 1
    sim_seed: int = 0
    sim_overrides: tuple[str, ...] = ()


@dataclass
class GovernResult:
    rows: list[Decision]
    messages: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    log_path: Path | None = None

    @property
    def tokens(self) -> float:
        return self.rows[-1].tokens if self.rows else 0.0

    @property
    def planned_tokens(self) -> float:
        return self.rows[-1].planned_tokens if self.rows else 0.0


def make_signal(opts: GovernOptions, config: GovernConfig, gpus: int) -> Signal:
    chosen = [k for k in ("target_w", "schedule", "feed", "openadr") if getattr(opts, k) is not None]
    if len(chosen) > 1:
        raise UsageError(f"give one signal, not {' and '.join('--' + c.replace('_', '-') for c in chosen)}")
    if opts.schedule is not None:
        from harness.govern.schedule import ScheduleSignal

        return ScheduleSignal(opts.schedule, gpus)
    if opts.feed is not None:
        if opts.feed.startswith(("http://", "https://")):
            return HttpFeed(opts.feed, config)
        return CsvFeed(opts.feed, config)
    if opts.openadr is not None:
        from harness.govern.openadr import VenSignal

        return VenSignal(opts.openadr, opts.ven_name, config)
    if opts.target_w is not None and not (math.isfinite(opts.target_w) and opts.target_w >= 0):
        raise UsageError(f"--target-w must be a non-negative number of watts, got {opts.target_w}")
    return FixedTarget(opts.target_w)


def _setter(guard) -> Callable[[Device, str, float], None]:
    """The governor's one way to change a setting: through the guard, knob by its record field (the
    menu offers only settable values: supported clocks, limits in range)."""
    from harness.knobs import knob

    def apply(device: Device, field: str, value: float) -> None:
        guard.apply(device, knob(field), value)

    return apply


def _job(opts: GovernOptions, devices: list[Device], curve) -> object | None:
    """The simulated job: the named profile, else the curve's workload when a profile of that
    name exists; none on real GPUs (the real job runs on its own)."""
    from harness.devices.base import supports_sim_load
    from harness.errors import ProfileError
    from harness.govern.simjob import SimJob
    from harness.profiles import load_profile

    if opts.job == "none" or not all(supports_sim_load(d) for d in devices):
        return None
    try:
        profile = load_profile(opts.job or curve.workload.name)
    except ProfileError:
        if opts.job:
            raise
        return None
    return SimJob(devices, profile.workload)


def run_governor(opts: GovernOptions, on_decision: Callable[[Decision], None] | None = None,
                 signal: Signal | None = None, on_start: Callable[[list[Device]], None] | None = None
                 ) -> GovernResult:
    """Govern until the duration (or the schedule) ends. ``signal`` replaces the options' signal
    and ``on_start`` sees the devices before the first decision (benchmarks, tests)."""
    from harness.devices import open_devices
    from harness.knobs import knob
    from harness.records.curves import load_curve
    from harness.sweep import guard as guard_mod
    from harness.sweep.run import check_can_change

    result = GovernResult(rows=[])
    recovery = guard_mod.recover()
    result.restored = recovery.restored
    result.messages.extend(recovery.problems)
    if opts.speedup <= 0 or not math.isfinite(opts.speedup):
        raise UsageError("--speedup must be a positive number")
    if opts.duration_s is not None and opts.duration_s <= 0:
        raise UsageError("--duration must be positive")
    config = load_config(opts.config)
    curve = load_curve(Path(opts.curve))
    reopen = dict(backend=opts.backend, sim_gpu=opts.sim_gpu, sim_count=opts.sim_count, sim_seed=opts.sim_seed,
                  sim_overrides=list(opts.sim_overrides))
    ds = open_devices(**reopen)
    reopen["backend"] = ds.backend
    if ds.notice:
        result.messages.append(ds.notice)
    try:
        if ds.backend == "nvml" and opts.gpus is None and not opts.yes:
            raise UsageError("name the GPUs to govern with --gpus 0,1 (or --yes for every GPU of the node); "
                             "a governor changes only the GPUs it is given")
        devices = ds.select(opts.gpus)
        if not opts.dry_run:
            check_can_change(devices, knob(curve.knob))
        menu = Menu.from_curve(curve, devices[0], opts.phase, opts.batch_size, config.floor_setting)
        sig = signal or make_signal(opts, config, len(devices))
        start = parse_time(opts.start, "--start") if opts.start else utc_now()
        log = DecisionLog(opts.log)
        result.log_path = log.path
        guard = contextlib.nullcontext() if opts.dry_run else guard_mod.Guard(devices, reopen)
        job = _job(opts, devices, curve)
        try:
            with guard as g:
                if job is not None:
                    job.start()  # type: ignore[attr-defined]
                if on_start is not None:
                    on_start(devices)
                gov = Governor(
                    devices, menu, config, sig, TimeBase(devices[0].clock, start, opts.speedup, opts.realtime), log,
                    apply=None if opts.dry_run else _setter(g),
                    tokens=getattr(job, "tokens", None), on_decision=on_decision,
                )
                until = None
                if opts.schedule is not None and opts.duration_s is None:
                    end = sig.end  # type: ignore[attr-defined]
                    until = lambda: gov.timebase.now_utc() >= end  # noqa: E731
                try:
                    gov.run(opts.duration_s, until)
                finally:
                    if job is not None:
                        job.stop()  # type: ignore[attr-defined]
        finally:
            log.close()
            sig.close()
        result.rows = log.rows
        return result
    finally:
        ds.close()
