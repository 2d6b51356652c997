"""gpu_check sections for the measurement core (issue 3), observe-only:

- ``telemetry_square_wave``: a bf16 matmul square wave (~0.4 s busy, ~0.4 s idle, 8 cycles) on
  GPU 0 measured by the energy counter, integrated instant power, integrated average power and the
  drained power history, side by side, with p99 and peak power. (A real H100 at 700 W gave 5.1%
  fewer joules from integrated average power than from the counter.)
- ``telemetry_sampler_overhead``: eager training of the 1B model (batch 4 x 2048) with and without
  a 20 Hz sampler thread, as interleaved pairs: median tokens/s ratio with a 95% interval. (The
  same H100 kept 99.9% with a 20 Hz thread.)

Both only read: the NVML binding's setters are refused (``gpu_check.guard_observe_only``) and the
device is wrapped in ``ObserveOnly``. Without CUDA (a fake driver in CI) the square wave runs with
no load, to exercise the NVML path, and the overhead section is skipped.
"""

from __future__ import annotations

import dataclasses
import time

from gpu_check import _open_nvml, _pynvml_guarded


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def section_telemetry_square_wave(ctx: dict) -> dict:
    """Square wave on GPU 0: counter vs integrated instant / average power vs drained history; p99, peak."""
    from harness.testing.checks import format_square_wave, square_wave_check, torch_matmul_busy

    _pynvml_guarded()
    ds = _open_nvml()
    try:
        dev = ds.devices[0]
        if _cuda():
            busy, sync = torch_matmul_busy(0)
            load, cycles = "bf16 8192^3 matmuls on cuda:0", 8
        else:
            busy, sync, load, cycles = dev.clock.sleep, (lambda: None), "none (torch sees no CUDA device)", 2
        c = square_wave_check(dev, busy, sync, busy_s=0.4, idle_s=0.4, cycles=cycles)
    finally:
        ds.close()
    return {"load": load, "gpu": dev.info.name, **dataclasses.asdict(c),
            "relative_to_counter": {name: rel for name, _j, rel in c.rows()}, "table": format_square_wave(c),
            "calibration_h100": {"average_power_vs_counter": -0.051, "history_peak_w": 913.0}}


def section_telemetry_sampler_overhead(ctx: dict) -> dict:
    """1B eager training tokens/s with / without a 20 Hz sampler thread, interleaved pairs."""
    if not _cuda():
        return {"skipped": "torch sees no CUDA device"}
    from harness.profiles import load_profile
    from harness.telemetry import Sampler
    from harness.testing.checks import paired_ratio
    from workloads.registry import get

    _pynvml_guarded()
    ds = _open_nvml()
    cfg = load_profile("train-llama-1b").workload.model_copy(update={"compile": False, "batch_size": 4})
    work = get(cfg, ds.devices[0])
    work.prepare(ds.devices[0])
    deadline = time.monotonic() + ctx["timeout_s"] - 20

    def trial(steps: int = 8) -> float:
        work.step("train")
        work.synchronize()
        tokens, t0 = 0, time.monotonic()
        for _ in range(steps):
            tokens += work.step("train").tokens
        work.synchronize()
        return tokens / (time.monotonic() - t0)

    def with_sampler() -> float:
        s = Sampler(ds.devices, rate_hz=20.0, threaded=True)
        s.start()
        try:
            return trial()
        finally:
            s.stop()

    trial()  # warm-up outside any pair
    t0 = time.monotonic()
    trial()
    per_pair = 2.2 * (time.monotonic() - t0)
    pairs = max(3, min(10, int((deadline - time.monotonic()) / per_pair)))
    try:
        r = paired_ratio(trial, with_sampler, pairs=pairs)
    finally:
        work.close()
        ds.close()
    return {"workload": "train-llama-1b eager, batch 4 x 2048", "rate_hz": 20.0, "pairs": len(r.ratios),
            "median_ratio": r.median, "ci95": [r.lo, r.hi], "ratios": list(r.ratios), "summary": str(r),
            "calibration_h100": {"kept_share_20hz": 0.999}}


SECTIONS = [
    ("telemetry_square_wave", 60.0, section_telemetry_square_wave),
    ("telemetry_sampler_overhead", 150.0, section_telemetry_sampler_overhead),
]
