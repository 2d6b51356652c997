"""GPU checks of the workloads (a section of scripts/gpu_check.py), observe-only.

Runs the 1B preset at the GPU's current settings and reports ratios measured in the same run, so
they hold on an H100 or an H200: training MFU, prefill MFU (2·N FLOPs per token), decode at batch
1 against the bytes-bound ceiling (weight bytes ÷ device-to-device copy bandwidth measured here),
and decode at batch 64 against transformers' own static cache + compile (``generate`` with
``cache_implementation="static"``), with absolute tokens/s and tokens/J beside each and the
``hf-generate`` baseline beside ``hf-static``. It never changes a GPU setting: it only reads the
energy counter (when given a tokbench ``Device``) and runs torch work.

    from scripts.gpu_check_workloads import run_all
    for r in run_all(device): print(r.line())

scripts/gpu_check.py picks up ``SECTIONS`` (one per check, each in its own process; setters of
the NVML binding refused). Where torch sees no CUDA device (CI's fake driver) they skip.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workloads import models, torch_env

MODEL = "llama-1b"
DECODE_IN, DECODE_OUT = 128, 256


@dataclass(frozen=True)
class Window:
    tokens: int
    seconds: float
    joules: float | None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def tokens_per_j(self) -> float | None:
        return self.tokens / self.joules if self.joules else None


@dataclass(frozen=True)
class CheckResult:
    name: str
    value: float  # the ratio checked
    target: float  # pass when value >= target
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.value >= self.target

    def line(self) -> str:
        extra = ", ".join(f"{k} {_fmt(v)}" for k, v in self.detail.items())
        mark = "PASS" if self.passed else "FAIL"
        return f"[{mark}] {self.name}: {self.value:.3f} (target >= {self.target}) — {extra}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def measure(step: Callable[[], int], sync: Callable[[], None], device: Any = None, min_s: float = 10.0) -> Window:
    """Repeat ``step`` (returns tokens) for at least ``min_s``, synchronised at both edges; energy
    from the device's counter (read-only) when a tokbench Device is given."""
    sync()
    e0 = device.read_energy_mj() if device is not None else None
    t0, tokens = time.perf_counter(), 0
    while time.perf_counter() - t0 < min_s:  # host time; the final sync settles the queue
        tokens += step()
    sync()
    seconds = time.perf_counter() - t0
    e1 = device.read_energy_mj() if device is not None else None
    joules = (e1 - e0) / 1000.0 if e0 is not None and e1 is not None else None
    return Window(tokens, seconds, joules)


def copy_bandwidth_bytes_per_s(tdev: Any, size_bytes: int = 1 << 30, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth, counting the read and the write."""
    import torch

    src = torch.empty(size_bytes, dtype=torch.uint8, device=tdev)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize(tdev)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize(tdev)
    seconds = start.elapsed_time(end) / 1000.0
    del src, dst
    return 2.0 * size_bytes * repeats / seconds


def _detail(w: Window, **more: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"tokens/s": w.tokens_per_s}
    if w.tokens_per_j is not None:
        d["tokens/J"] = w.tokens_per_j
    d.update(more)
    return d


def check_training(device: Any, peak: float, min_s: float) -> CheckResult:
    from workloads.training import TrainingOptions, TrainingWorkload

    w = TrainingWorkload(TrainingOptions(model=MODEL, batch_size=8, seq_len=2048, compile=True, warmup_steps=3))
    w.prepare(device)
    win = measure(lambda: w.step("train").tokens, w.synchronize, device, min_s)
    mfu = win.tokens_per_s * w.flops_per_token("train") / peak
    w.close()
    return CheckResult("training 1B 8x2048 compile, MFU", mfu, 0.45, _detail(win))


def check_prefill(device: Any, peak: float, min_s: float) -> CheckResult:
    from workloads.hf_inference import HFInference, InferenceOptions

    w = HFInference(InferenceOptions(model=MODEL, engine="hf-static", batch_size=16, input_len=2048,
                                     output_len=1, phases=("prefill",)))
    w.prepare(device)
    win = measure(lambda: w.step("prefill").input_tokens, w.synchronize, device, min_s)
    mfu = win.tokens_per_s * w.flops_per_token("prefill") / peak
    w.close()
    return CheckResult("prefill 1B 16x2048, MFU (2N FLOPs/token)", mfu, 0.45, _detail(win))


def _decode(device: Any, engine: str, batch: int, min_s: float) -> Window:
    from workloads.hf_inference import HFInference, InferenceOptions

    w = HFInference(InferenceOptions(model=MODEL, engine=engine, batch_size=batch, input_len=DECODE_IN,
                                     output_len=DECODE_OUT, phases=("decode",)))
    w.prepare(device)
    win = measure(lambda: w.step("decode").output_tokens, w.synchronize, device, min_s)
    w.close()
    return win


def check_decode_bs1(device: Any, tdev: Any, min_s: float) -> CheckResult:
    bandwidth = copy_bandwidth_bytes_per_s(tdev)
    weight_bytes = models.preset(MODEL).params * 2  # bf16
    ceiling = bandwidth / weight_bytes
    ours = _decode(device, "hf-static", 1, min_s)
    base = _decode(device, "hf-generate", 1, min_s)
    return CheckResult(
        "decode 1B bs1 hf-static, share of bytes-bound ceiling", ours.tokens_per_s / ceiling, 0.40,
        _detail(ours, **{"ceiling tokens/s": ceiling, "copy TB/s": bandwidth / 1e12,
                         "hf-generate tokens/s": base.tokens_per_s,
                         "hf-generate tokens/J": base.tokens_per_j or float("nan")}),
    )


def hf_static_compile_baseline(device: Any, tdev: Any, batch: int, min_s: float) -> Window:
    """transformers' own path: ``generate`` with a static cache, which compiles the forward."""
    import torch
    from transformers import GenerationConfig

    net = models.build_model(MODEL, dtype=torch.bfloat16, device=tdev)
    prompts = torch.randint(1, net.config.vocab_size, (batch, DECODE_IN), device=tdev)
    cfg = GenerationConfig(max_new_tokens=DECODE_OUT, do_sample=False, eos_token_id=None, pad_token_id=0,
                           cache_implementation="static")

    @torch.inference_mode()
    def step() -> int:
        out = net.generate(input_ids=prompts, generation_config=cfg)
        return out[:, DECODE_IN:].numel()

    for _ in range(3):  # compilation and graph capture
        step()
    return measure(step, lambda: torch.cuda.synchronize(tdev), device, min_s)


def check_decode_bs64(device: Any, tdev: Any, min_s: float) -> CheckResult:
    """Whole requests on both sides (prefill + 256 new tokens), as ``generate`` does them."""
    from workloads.hf_inference import HFInference, InferenceOptions

    w = HFInference(InferenceOptions(model=MODEL, engine="hf-static", batch_size=64, input_len=DECODE_IN,
                                     output_len=DECODE_OUT, phases=("serve",)))
    w.prepare(device)
    ours = measure(lambda: w.step("serve").output_tokens, w.synchronize, device, min_s)
    w.close()
    base = hf_static_compile_baseline(device, tdev, 64, min_s)
    plain = _decode(device, "hf-generate", 64, min_s)
    return CheckResult(
        "decode 1B bs64 hf-static vs HF static cache + compile", ours.tokens_per_s / base.tokens_per_s, 1.25,
        _detail(ours, **{"HF static+compile tokens/s": base.tokens_per_s,
                         "HF static+compile tokens/J": base.tokens_per_j or float("nan"),
                         "hf-generate tokens/s": plain.tokens_per_s}),
    )


def _context(device: Any = None) -> tuple[Any, Any, float]:
    """(device, torch device, dense BF16 peak) for GPU 0, or for ``device``; read-only."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")
    if device is None:
        from harness.devices import open_devices

        device = open_devices("nvml").devices[0]  # only read: name, energy counter
    tdev = torch_env.torch_device(device)
    peak = torch_env.peak_flops(device)
    if peak is None:
        raise RuntimeError(f"no dense BF16 peak known for {device.info.name}")
    return device, tdev, peak


CHECKS: dict[str, Callable[[Any, Any, float, float], CheckResult]] = {
    "training": lambda d, t, peak, s: check_training(d, peak, s),
    "prefill": lambda d, t, peak, s: check_prefill(d, peak, s),
    "decode_bs1": lambda d, t, peak, s: check_decode_bs1(d, t, s),
    "decode_bs64": lambda d, t, peak, s: check_decode_bs64(d, t, s),
}


def run_all(device: Any = None, min_s: float = 10.0, log: Callable[[str], None] = print) -> list[CheckResult]:
    """All workload checks on ``device`` (a tokbench NVML Device; None: GPU 0 opened read-only)."""
    import torch

    device, tdev, peak = _context(device)
    log(f"workload checks on {torch.cuda.get_device_name(tdev)} (peak {peak / 1e12:.0f} TFLOP/s bf16), "
        "current settings, observe-only")
    results = []
    for check in CHECKS.values():
        r = check(device, tdev, peak, min_s)
        log(r.line())
        results.append(r)
    return results


def _section(name: str, min_s: float = 8.0) -> Callable[[dict], dict]:
    def section(ctx: dict) -> dict:
        import torch

        if not torch.cuda.is_available():  # NVML without CUDA (a fake driver in CI)
            return {"skipped": "torch sees no CUDA device"}
        from gpu_check import _pynvml_guarded  # scripts/ is on sys.path when gpu_check runs us

        _pynvml_guarded()
        device, tdev, peak = _context()
        r = CHECKS[name](device, tdev, peak, min_s)
        return {"device": torch.cuda.get_device_name(tdev), "check": r.name, "value": r.value,
                "target": r.target, "passed": r.passed, "detail": r.detail, "line": r.line()}

    section.__doc__ = f"workload check {name!r} (1B preset, current settings, observe-only)"
    return section


#: for scripts/gpu_check.py: (name, timeout_s, section); compiles take 30-40 s each on an H100
SECTIONS = [
    ("workloads_training", 150.0, _section("training")),
    ("workloads_prefill", 90.0, _section("prefill")),
    ("workloads_decode_bs1", 150.0, _section("decode_bs1")),
    ("workloads_decode_bs64", 210.0, _section("decode_bs64")),
]


if __name__ == "__main__":
    run_all()
