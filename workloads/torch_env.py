"""Where torch work runs: the torch device behind a tokbench ``Device``, its dtype and clock.

The NVML index and the CUDA index of a GPU can differ (``CUDA_VISIBLE_DEVICES`` reorders), so a
GPU is matched by UUID. ``device=None`` means the host CPU, which tests and CPU benchmarks use.
"""

from __future__ import annotations

from typing import Any

from harness.devices.base import Clock, Device, WallClock
from harness.errors import UsageError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def torch_device(device: Device | None) -> Any:
    """The ``torch.device`` that runs work for ``device`` (CPU when ``device`` is None)."""
    import torch

    if device is None:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        info = device.info
        raise UsageError(f"GPU {info.index} ({info.name}) has no CUDA device in this torch build")
    want = device.info.uuid.lower().removeprefix("gpu-")
    for i in range(torch.cuda.device_count()):
        uuid = str(getattr(torch.cuda.get_device_properties(i), "uuid", "")).lower()
        if uuid and uuid == want:
            return torch.device("cuda", i)
    return torch.device("cuda", device.info.index)


def resolve_dtype(precision: str, tdev: Any) -> Any:
    """``auto`` is bf16 on a GPU and fp32 on the CPU (bf16 matmuls are slow on most CPUs)."""
    import torch

    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "bf16" if tdev.type == "cuda" else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def dtype_name(dtype: Any) -> str:
    import torch

    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]


def synchronize(tdev: Any) -> None:
    """Wait for all queued work on ``tdev`` (a no-op on the CPU, where work is synchronous)."""
    import torch

    if tdev.type == "cuda":
        torch.cuda.synchronize(tdev)


def clock_of(device: Device | None) -> Clock:
    """The clock latencies are measured with: the device's own, or the wall clock on the CPU."""
    return device.clock if device is not None else WallClock()


#: dense BF16 peak by part name (CALIBRATION.md, public specifications), for MFU on real GPUs
PEAK_BF16_FLOPS = {
    "A100": 312e12,
    "H100": 989e12,
    "H200": 989e12,
    "B200": 2.25e15,
    "L40S": 362e12,
}


def peak_flops(device: Device | None) -> float | None:
    """Dense BF16 peak FLOP/s of ``device`` by name, or None when unknown (and on the CPU)."""
    if device is None:
        return None
    name = device.info.name.upper()
    for part, peak in PEAK_BF16_FLOPS.items():
        if part in name:
            return peak
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops_per_s: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the part's dense peak."""
    if not peak_flops_per_s:
        return None
    return tokens_per_s * flops_per_token / peak_flops_per_s
