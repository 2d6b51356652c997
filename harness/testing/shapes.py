"""Load shapes for simulated GPUs, to check measurements against the simulator's ground truth
(tests and ``scripts/bench_energy.py``). Each runs on the device's simulated clock."""

from __future__ import annotations

import random
from collections.abc import Callable

from harness.devices.simulated import Load, SimulatedGPU

#: FLOP per second a simulated H100 sustains near its cap (sizes the loads below)
_RATE = 650e12

SHAPES = ("steady", "bursty", "ramp", "square")


def steady(gpu: SimulatedGPU, seconds: float, rng: random.Random) -> None:
    """Back-to-back 50 ms compute steps."""
    t_end = gpu.clock.now() + seconds
    while gpu.clock.now() < t_end:
        gpu.submit(Load(flops=0.05 * _RATE))
        gpu.synchronize()


def bursty(gpu: SimulatedGPU, seconds: float, rng: random.Random) -> None:
    """Random bursts of 50-500 ms of compute with 50-500 ms of host-side idle between them."""
    clock = gpu.clock
    t_end = clock.now() + seconds
    while clock.now() < t_end:
        gpu.submit(Load(flops=rng.uniform(0.05, 0.5) * _RATE))
        gpu.synchronize()
        clock.sleep(min(rng.uniform(0.05, 0.5), max(0.0, t_end - clock.now())))


def square(gpu: SimulatedGPU, seconds: float, rng: random.Random, busy_s: float = 0.4, idle_s: float = 0.4) -> None:
    """The square wave of the real H100 trace: ~0.4 s busy, ~0.4 s idle."""
    clock = gpu.clock
    t_end = clock.now() + seconds
    while clock.now() < t_end:
        gpu.submit(Load(flops=busy_s * _RATE * 0.9))
        gpu.synchronize()
        clock.sleep(min(idle_s, max(0.0, t_end - clock.now())))


def ramp(gpu: SimulatedGPU, seconds: float, rng: random.Random) -> None:
    """Duty cycle rising from 10% to 100% over the window (100 ms periods)."""
    clock = gpu.clock
    t0 = clock.now()
    t_end = t0 + seconds
    while clock.now() < t_end:
        duty = 0.1 + 0.9 * min(1.0, (clock.now() - t0) / seconds)
        gpu.submit(Load(flops=0.1 * duty * _RATE))
        gpu.synchronize()
        clock.sleep(min(0.1 * (1 - duty), max(0.0, t_end - clock.now())))


def get(name: str) -> Callable[[SimulatedGPU, float, random.Random], None]:
    return {"steady": steady, "bursty": bursty, "ramp": ramp, "square": square}[name]
