"""The control loop: every ``period_s`` of the device clock, read the signal, measure the node,
choose each GPU's setting from the curve, limit the ramp, apply through the guard, log.

Closed loop: per GPU, the ratio of measured power to the curve's power at the setting in force
is learned once the setting has settled; budgets are divided by it, so a board drawing 8% above
its curve is given a setting whose curve power is 8% lower. The ratio is kept in
[ratio_min, ratio_max] (by default never below 1: a board is not trusted to draw less than its
curve).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from harness.devices.base import Device
from harness.govern.config import GovernConfig
from harness.govern.log import Decision, DecisionLog
from harness.govern.menu import Choice, Menu
from harness.govern.meter import NodeMeter
from harness.govern.signals import Directive, Signal, SignalError


class TimeBase:
    """Signal time (UTC) from the device clock: ``start_utc + elapsed x speedup``. On simulated
    parts ``realtime`` keeps the device clock in step with the wall (an external server, a VTN,
    lives in wall time)."""

    def __init__(self, clock, start_utc: datetime, speedup: float = 1.0, realtime: bool = False) -> None:
        self.clock = clock
        self.start_utc = start_utc
        self.speedup = speedup
        self.realtime = realtime and getattr(clock, "simulated", False)
        self.t0 = clock.now()
        self.wall0 = time.monotonic()

    def elapsed(self) -> float:
        return self.clock.now() - self.t0

    def now_utc(self) -> datetime:
        return self.start_utc + timedelta(seconds=self.elapsed() * self.speedup)

    def wait(self, seconds: float) -> None:
        self.clock.sleep(seconds)
        if self.realtime:
            time.sleep(max(0.0, self.wall0 + self.elapsed() - time.monotonic()))


@dataclass
class _Gpu:
    choice: Choice
    ratio: float = 1.0
    changed_at: float = -math.inf
    #: counter sample from which the settled setting's mean power is measured
    anchor: tuple[float, int | None] | None = None


@dataclass
class Governor:
    devices: Sequence[Device]
    menu: Menu
    config: GovernConfig
    signal: Signal
    timebase: TimeBase
    log: DecisionLog
    #: applies one GPU's setting (the guard's setter); None: dry run, nothing is changed
    apply: Callable[[Device, str, float], None] | None = None
    #: finished tokens so far (a job's counter); None: the curve's estimate is logged
    tokens: Callable[[], float] | None = None
    reference_w: float = 0.0
    on_decision: Callable[[Decision], None] | None = None
    _gpus: list[_Gpu] = field(default_factory=list)
    _last_good: Directive | None = None
    _last_good_at: datetime | None = None
    _curve_tokens: float = 0.0
    _planned: float = 0.0
    _last_t: float | None = None
    _last_target: float | None = None
    _tokens0: float | None = None

    def __post_init__(self) -> None:
        self.meter = NodeMeter(self.devices)
        self._gpus = [_Gpu(self._found(d)) for d in self.devices]
        if not self.reference_w:
            self.reference_w = len(self.devices) * self.menu.at(self.menu.default_setting).power_w
        self.measured_w: float | None = None
        if hasattr(self.signal, "reference_w"):  # a signal that needs the node's power (OpenADR)
            self.signal.reference_w = self.reference_w  # type: ignore[attr-defined]
            self.signal.power_w = lambda: self.measured_w  # type: ignore[attr-defined]

    def _found(self, d: Device) -> Choice:
        if self.menu.knob == "power_limit_w":
            return self.menu.at(d.power_limits().current_w)
        lock = d.sm_clock_lock()
        return self.menu.at(self.menu.default_setting if lock is None else lock.hi_mhz)

    # --- signal with its safe behaviour ---------------------------------------------------
    def _directive(self, now: datetime) -> tuple[Directive | None, list[str]]:
        notes: list[str] = []
        try:
            d = self.signal.poll(now)
            fresh = d.issued is None or (now - d.issued).total_seconds() <= self.config.stale_after_s
            if fresh:
                self._last_good, self._last_good_at = d, now
                return d, notes
            notes.append(f"{d.source}: signal issued {d.issued:%H:%M:%S} is stale")
        except SignalError as e:
            notes.append(str(e))
        except Exception as e:  # noqa: BLE001 (a signal's own bug must not end the governing: log and stay safe)
            notes.append(f"{self.signal.name}: failed ({type(e).__name__}: {e})")
        if self._last_good is None:
            notes.append("no good signal yet: default setting")
            return None, notes
        age = (now - self._last_good_at).total_seconds() if self._last_good_at else math.inf
        if self._last_good.issued is not None:
            age = max(age, (now - self._last_good.issued).total_seconds())
        if age > self.config.stale_after_s and self.config.on_stale == "default":
            notes.append("signal stale: back to the default setting (on_stale = default)")
            return None, notes
        notes.append("holding the last good signal")
        return self._last_good, notes

    # --- choosing ---------------------------------------------------------------------------
    def _for_target(self, target_w: float) -> list[Choice]:
        share = target_w * (1.0 - self.config.margin) / len(self._gpus)
        return [self.menu.best_for(share / g.ratio) for g in self._gpus]

    def _expected(self, choices: Sequence[Choice]) -> float:
        return sum(c.power_w * g.ratio for c, g in zip(choices, self._gpus))

    def _choose(self, d: Directive | None, notes: list[str]) -> tuple[list[Choice], float | None]:
        if d is None:
            return [self.menu.at(self.menu.default_setting)] * len(self._gpus), None
        if d.settings is not None:
            return [self.menu.floor if not math.isfinite(s) else self.menu.at(s) for s in d.settings], None
        target = d.target_w if d.target_w is not None else (
            None if d.fraction is None else d.fraction * self.reference_w)
        if target is None:
            return [self.menu.best_for(None)] * len(self._gpus), None
        if target < len(self._gpus) * self.menu.idle_w:
            notes.append(f"target {target:.0f} W is below the GPUs' idle power "
                         f"({len(self._gpus) * self.menu.idle_w:.0f} W): holding the floor")
        choices = self._for_target(target)
        if all(c.zone == "floor" for c in choices) and self._expected(choices) > target:
            notes.append(f"target {target:.0f} W is below what the floor draws: holding the floor")
        return choices, target

    def _ramp(self, choices: list[Choice], dt: float, notes: list[str]) -> list[Choice]:
        now_w = self._expected([g.choice for g in self._gpus])
        new_w = self._expected(choices)
        up, down = self.config.ramp_up_w_per_s * dt, self.config.ramp_down_w_per_s * dt
        if new_w > now_w + up + 1e-9:
            limited = self._for_target((now_w + up) / (1.0 - self.config.margin))
            notes.append(f"ramp-limited up ({self.config.ramp_up_w_per_s:g} W/s)")
            return [min(a, b, key=lambda c: c.power_w) for a, b in zip(limited, choices)]
        if new_w < now_w - down - 1e-9:
            limited = self._for_target((now_w - down) / (1.0 - self.config.margin))
            notes.append(f"ramp-limited down ({self.config.ramp_down_w_per_s:g} W/s)")
            return [max(a, b, key=lambda c: c.power_w) for a, b in zip(limited, choices)]
        return choices

    def _learn(self, i: int, g: _Gpu, t: float) -> None:
        """Ratio of measured to curve power: the mean since the setting settled, once that span
        is at least the meter's window (a short mean of a 100 ms counter is too coarse). Not in a
        dry run: the GPUs do not run the settings the log shows."""
        if self.apply is None or t - g.changed_at < self.config.settle_s:
            return
        if g.anchor is None:
            g.anchor = self.meter.latest(i)
            return
        if t - g.anchor[0] < self.meter.window_s:
            return
        m = self.meter.mean_since(i, *g.anchor)
        if m is not None:
            r = min(max(m / g.choice.power_w, self.config.ratio_min), self.config.ratio_max)
            g.ratio += self.config.ratio_gain * (r - g.ratio)

    # --- one decision ---------------------------------------------------------------------------
    def step(self) -> Decision:
        t = self.timebase.clock.now()
        dt = self.config.period_s if self._last_t is None else max(t - self._last_t, 1e-6)
        self.meter.sample()
        measured = [self.meter.recent(i) for i in range(len(self._gpus))]
        for i, g in enumerate(self._gpus):
            self._learn(i, g, t)
        if self._last_t is not None:
            self._curve_tokens += dt * sum(g.choice.tokens_per_s for g in self._gpus)
        now = self.timebase.now_utc()
        d, notes = self._directive(now)
        if d is not None and d.planned_tokens_per_s is not None and self._last_t is not None:
            self._planned += dt * d.planned_tokens_per_s
        choices, target = self._choose(d, notes)
        choices = self._ramp(choices, dt, notes)
        if target is not None and target == self._last_target:
            choices = [g.choice if abs(c.power_w - g.choice.power_w) < self.config.deadband * g.choice.power_w else c
                       for g, c in zip(self._gpus, choices)]
        self._last_target = target
        for dev, g, c in zip(self.devices, self._gpus, choices):
            if c.setting != g.choice.setting:
                if self.apply is not None:
                    self.apply(dev, self.menu.knob, c.setting)
                g.changed_at = t
                g.anchor = None
            g.choice = c
        self._last_t = t
        node_measured = None if any(m is None for m in measured) else sum(measured)  # type: ignore[misc]
        self.measured_w = node_measured
        zones = sorted({c.zone for c in choices})
        dry = "" if self.apply is not None else "dry run (nothing changed): "
        decision = Decision(
            time_utc=now.isoformat(timespec="milliseconds"), t_s=t,
            source=d.source if d is not None else (self._last_good.source if self._last_good else self.signal.name),
            target_w=target, setting=sum(c.setting for c in choices) / len(choices),
            settings=";".join(f"{c.setting:g}" for c in choices), zone="+".join(zones),
            expected_w=self._expected(choices), measured_w=node_measured,
            energy_j=self.meter.energy_j(),
            ratio=sum(g.ratio for g in self._gpus) / len(self._gpus),
            tokens=self._tokens_since_start(),
            planned_tokens=self._planned,
            reason=dry + "; ".join([d.reason if d is not None else "default", *notes]),
        )
        self.log.add(decision)
        if self.on_decision is not None:
            self.on_decision(decision)
        return decision

    def _tokens_since_start(self) -> float:
        if self.tokens is None:
            return self._curve_tokens
        now = float(self.tokens())
        if self._tokens0 is None:
            self._tokens0 = now
        return now - self._tokens0

    def run(self, duration_s: float | None, until: Callable[[], bool] | None = None) -> None:
        """Decide every period until ``duration_s`` of device time has passed (or ``until()``)."""
        end = None if duration_s is None else self.timebase.clock.now() + duration_s
        while True:
            self.step()
            if (end is not None and self.timebase.clock.now() >= end - 1e-9) or (until is not None and until()):
                return
            self.timebase.wait(self.config.period_s if end is None
                               else min(self.config.period_s, end - self.timebase.clock.now()))
