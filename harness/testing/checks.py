"""Measurement self-checks that also run on a real GPU (``scripts/gpu_check.py``), observe-only.

``square_wave_check`` measures a square-wave load four ways side by side (energy counter,
integrated instant power, integrated average power, drained power history), plus p99 and peak
power. ``paired_ratio`` times two variants of a workload as interleaved pairs (the sampler's
cost on throughput). Nothing here changes a GPU setting: devices are wrapped in ``ObserveOnly``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.devices.base import Device
from harness.errors import PermissionDenied
from harness.telemetry.sampler import Sampler
from harness.telemetry.window import Window

_SETTERS = ("set_power_limit", "lock_sm_clock", "reset_sm_clock")


class ObserveOnly:
    """A device view that refuses every setting change (reads pass through)."""

    def __init__(self, device: Device) -> None:
        self._device = device
        self.info = device.info
        self.clock = device.clock

    def __getattr__(self, name: str):
        if name in _SETTERS:
            def refuse(*_a: object, **_k: object) -> None:
                raise PermissionDenied(f"{name} (an observe-only check never changes a GPU setting)")
            return refuse
        return getattr(self._device, name)


class WallClockView:
    """A simulated GPU read on the wall clock with no power history: exercises (and benchmarks)
    the sampler's background thread where there is no GPU."""

    def __init__(self, device: Device) -> None:
        from harness.devices.base import WallClock

        self._device = device
        self.info = device.info
        self.clock = WallClock()

    def read(self):
        import dataclasses

        return dataclasses.replace(self._device.read(), t_s=self.clock.now())

    def power_samples(self, since_us: int) -> None:
        return None

    def __getattr__(self, name: str):
        return getattr(self._device, name)


@dataclass(frozen=True)
class SquareWaveCheck:
    """One GPU's square-wave window measured four ways. ``*_rel`` are relative to the counter."""

    gpu_index: int
    seconds: float
    counter_j: float | None
    instant_j: float | None
    average_j: float | None
    history_j: float | None
    true_j: float | None
    power_p99_w: float | None
    power_peak_w: float | None
    power_max_1s_w: float | None
    power_mean_w: float
    history_samples: int
    flags: tuple[str, ...]

    def rel(self, value: float | None) -> float | None:
        if value is None or not self.counter_j:
            return None
        return value / self.counter_j - 1.0

    def rows(self) -> list[tuple[str, float | None, float | None]]:
        """(method, joules, relative to counter) for a table."""
        out = [("energy counter (window)", self.counter_j, 0.0 if self.counter_j else None),
               ("integrated instant power", self.instant_j, self.rel(self.instant_j)),
               ("integrated average power", self.average_j, self.rel(self.average_j)),
               ("drained power history (50 Hz)", self.history_j, self.rel(self.history_j))]
        if self.true_j is not None:
            out.append(("simulator ground truth", self.true_j, self.rel(self.true_j)))
        return out


def square_wave_check(device: Device, busy: Callable[[float], None], sync: Callable[[], None],
                      busy_s: float = 0.4, idle_s: float = 0.4, cycles: int = 8,
                      rate_hz: float = 100.0) -> SquareWaveCheck:
    """Run ``busy(busy_s)`` / idle ``idle_s`` for ``cycles`` cycles inside one window and measure
    it by counter, integrated instant and average power, and drained history.

    ``busy(seconds)`` must keep the GPU computing for about that long and return after a device
    synchronise (on a real GPU: bf16 matmuls; on a simulated one: ``Load``s). The device is wrapped
    in ``ObserveOnly``: the check cannot change a setting even by mistake.
    """
    dev = ObserveOnly(device)
    clock = dev.clock
    sampler = Sampler([dev], rate_hz=rate_hz, drain_history_s=0.5)
    sampler.start()
    try:
        clock.sleep(1.5)  # idle lead-in, as the recorded H100 trace has
        with Window([dev], sampler, sync=sync, knob="observe", min_seconds=0.0) as w:
            for _ in range(cycles):
                busy(busy_s)
                clock.sleep(idle_s)
    finally:
        sampler.stop()
    r = w.results[dev.info.index]
    hist = r.samples[r.samples["source"] == "history"]
    hist = hist[(hist["t_s"] >= r.t_start) & (hist["t_s"] <= r.t_end)]
    return SquareWaveCheck(
        gpu_index=dev.info.index, seconds=r.seconds,
        counter_j=r.joules if r.energy_source == "counter" else None,
        instant_j=r.integrals_j.get("instant"), average_j=r.integrals_j.get("average"),
        history_j=r.integrals_j.get("history"), true_j=r.true_joules,
        power_p99_w=r.power_p99_w, power_peak_w=float(hist["power_w"].max()) if len(hist) else None,
        power_max_1s_w=r.power_max_1s_w, power_mean_w=r.power_mean_w, history_samples=len(hist), flags=r.flags,
    )


@dataclass(frozen=True)
class PairedRatio:
    """Median of per-pair ratios (variant / baseline) with a distribution-free 95% interval."""

    median: float
    lo: float
    hi: float
    ratios: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.median:.4f} (95% CI {self.lo:.4f}-{self.hi:.4f}, {len(self.ratios)} pairs)"


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Median and the order-statistic confidence interval for it (binomial, no normality assumed)."""
    from scipy.stats import binom

    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, math.nan
    # largest k with P(Binom(n, 0.5) < k) <= alpha/2: the interval is [x_(k), x_(n-k+1)] (1-based)
    alpha = 1.0 - confidence
    k = int(binom.ppf(alpha / 2, n, 0.5))
    while k > 0 and binom.cdf(k - 1, n, 0.5) > alpha / 2:
        k -= 1
    k = max(k, 1)
    return statistics.median(xs), xs[k - 1], xs[n - k]


def paired_ratio(baseline: Callable[[], float], variant: Callable[[], float], pairs: int = 10) -> PairedRatio:
    """Run ``baseline`` and ``variant`` (each returns a throughput) as ``pairs`` interleaved pairs,
    alternating which goes first so slow drift cancels, and compare them pair by pair."""
    ratios = []
    for i in range(pairs):
        if i % 2 == 0:
            a = baseline()
            b = variant()
        else:
            b = variant()
            a = baseline()
        ratios.append(b / a)
    med, lo, hi = median_ci(ratios)
    return PairedRatio(med, lo, hi, tuple(ratios))


def torch_matmul_busy(cuda_index: int, n: int = 8192) -> tuple[Callable[[float], None], Callable[[], None]]:
    """``busy(seconds)`` and ``sync()`` for ``square_wave_check`` on a real GPU: bf16 n x n matmuls
    (the load of the recorded H100 trace) until ``seconds`` have passed, then a synchronise."""
    import time

    import torch

    dev = torch.device("cuda", cuda_index)
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)

    def sync() -> None:
        torch.cuda.synchronize(dev)

    def busy(seconds: float) -> None:
        t_end = time.monotonic() + seconds  # the NVML backend's clock is the monotonic clock
        while time.monotonic() < t_end:
            for _ in range(4):
                a @ b
            sync()

    busy(0.2)  # warm-up: cuBLAS handles and kernels, before any window
    return busy, sync


def format_square_wave(c: SquareWaveCheck) -> str:
    """A markdown table of one square-wave check."""
    lines = [f"GPU {c.gpu_index}: square wave over {c.seconds:.2f} s, {c.history_samples} history samples",
             "", "| method | joules | vs counter |", "|---|---|---|"]
    for name, joules, rel in c.rows():
        j = "n/a" if joules is None else f"{joules:.1f}"
        r = "n/a" if rel is None else f"{rel:+.1%}"
        lines.append(f"| {name} | {j} | {r} |")
    def w(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.0f} W"
    lines += ["", f"mean {w(c.power_mean_w)}, p99 {w(c.power_p99_w)}, peak {w(c.power_peak_w)}, "
                  f"highest 1 s mean {w(c.power_max_1s_w)}; flags: {', '.join(c.flags) or 'none'}"]
    return "\n".join(lines)
