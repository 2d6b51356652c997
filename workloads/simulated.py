"""Simulated twins: the same workload shapes, turned into ``Load`` for a simulated GPU.

Each step's load is a roofline of its own FLOPs and bytes — training ≈ 6·N FLOPs per token,
prefill ≈ 2·N plus causal attention, decode bound by reading the weights and the KV cache once per
token step — times an engine factor: the share of the roofline the engine's kernels reach
(``efficiency``) and the host time per step during which the GPU waits (``host_s``, plus
``host_per_seq_s`` per sequence: Python, launches, the per-token sync of ``generate``). The
simulator (harness/devices/simulated.py) supplies the physics: clocks, caps, power.

The engine factors are calibrated, the physics is not: ``hf-generate``/``hf-static`` decode factors
reproduce CALIBRATION.md's H100 decode rows (1B preset, 128-token context, 256 new tokens) and the
training/prefill factors its compute-bound rows; ``scripts/calibrate_twins.py`` refits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import UsageError
from workloads import models
from workloads.base import StepResult, WorkloadSpec

if TYPE_CHECKING:
    from workloads.config import WorkloadConfig


@dataclass(frozen=True)
class EngineFactors:
    """How far an engine falls short of the roofline on one phase."""

    efficiency: float  # share of the roofline its kernels reach while the GPU works (0-1]
    host_s: float = 0.0  # host time per step (per token step for decode) with the GPU waiting
    host_per_seq_s: float = 0.0  # extra host time per sequence in the batch
    #: decode attention over the whole static cache (masked) instead of the filled context
    attends_full_cache: bool = False
    #: KV heads materialised per query head group (transformers' ``repeat_kv``): the cache read
    #: once, the expanded copy written and read again, i.e. 1 + 2 x (heads / kv_heads) reads
    expands_kv: bool = False


#: (engine, phase) -> factors; "serve" uses the prefill and decode factors of its engine.
#: Fitted with scripts/calibrate_twins.py against CALIBRATION.md's H100 rows (see docs/workloads.md).
FACTORS: dict[tuple[str, str], EngineFactors] = {
    # host_s of training and prefill: launching a step's kernels (hidden behind big steps, but it
    # keeps a tiny model's step from taking microseconds)
    ("torch", "train"): EngineFactors(efficiency=0.397, host_s=0.003),
    ("torch-compile", "train"): EngineFactors(efficiency=0.473, host_s=0.001),
    ("hf-static", "prefill"): EngineFactors(efficiency=0.483, host_s=0.001),
    ("hf-generate", "prefill"): EngineFactors(efficiency=0.483, host_s=0.001),  # the same eager forward
    ("hf-generate", "decode"): EngineFactors(efficiency=0.33, host_s=0.014373),
    # compiled decode with a masked static cache: transformers falls back to repeat_kv
    ("hf-static", "decode"): EngineFactors(
        efficiency=0.99, host_s=0.0025176, attends_full_cache=True, expands_kv=True
    ),
    # vLLM: no calibration row yet (set from its published behaviour: fused kernels, paged KV
    # read once per step, CUDA graphs); refit once scripts/gpu_check.py has measured it
    ("vllm", "prefill"): EngineFactors(efficiency=0.55, host_s=0.001),
    ("vllm", "decode"): EngineFactors(efficiency=0.70, host_s=0.0002, host_per_seq_s=2e-6),
}

#: bytes per value the twin assumes: a GPU runs bf16 ("auto")
_BYTES = {"auto": 2, "bf16": 2, "fp16": 2, "fp32": 4}


class SimWorkload:
    """A built-in workload's twin on a device that accepts ``Load`` (``supports_sim_load``)."""

    def __init__(self, config: WorkloadConfig, factors: dict[tuple[str, str], EngineFactors] | None = None):
        self.config = config
        self.shape, _ = models.resolve(config.model)
        if config.layers is not None:
            from dataclasses import replace

            self.shape = replace(self.shape, layers=config.layers)
        self.training = config.name == "training"
        engine = config.resolved_engine
        if self.training:
            compiled = True if config.compile is None else config.compile
            engine = "torch-compile" if compiled else "torch"
        self.engine = engine
        self.phases = config.resolved_phases
        self.factors = dict(FACTORS if factors is None else factors)
        for phase in self.phases:
            for p in ("prefill", "decode") if phase == "serve" else (phase,):
                if (engine, p) not in self.factors:
                    raise UsageError(f"no simulated twin for engine {engine!r} in phase {p!r}")
        self.bytes_per_value = _BYTES[config.precision]
        self.params = self.shape.params
        precision = "bf16" if config.precision == "auto" else config.precision
        self.spec = WorkloadSpec(
            name=config.name,
            kind="training" if self.training else ("serve" if self.phases == ("serve",) else "inference"),
            engine=engine,
            model=config.model,
            precision=precision,
            batch_size=config.batch_size,
            seq_len=config.seq_len if self.training else 0,
            input_len=0 if self.training else config.input_len,
            output_len=0 if self.training else config.output_len,
            params=self.params,
            extra={"simulated": True, "phases": list(self.phases),
                   "checkpointing": config.checkpointing, "layers": config.layers},
        )
        self._device: Any = None

    # --- loads --------------------------------------------------------------------------
    def _load(self, phase: str, flops: float, bytes_moved: float, seqs: int) -> Any:
        from harness.devices.simulated import Load

        f = self.factors[(self.engine, phase)]
        return Load(flops=flops, bytes_moved=bytes_moved, efficiency=f.efficiency,
                    host_s=f.host_s + f.host_per_seq_s * seqs)

    @property
    def weight_bytes(self) -> float:
        return float(self.params * self.bytes_per_value)

    def train_load(self) -> Any:
        c, s = self.config, self.shape
        tokens = c.batch_size * c.seq_len
        flops = models.training_flops_per_token(self.params) * tokens
        if c.checkpointing:  # the forward runs twice
            flops += models.forward_flops_per_token(self.params) * tokens
        # weights read in forward and backward, gradients written and read, AdamW moments and
        # weights updated in place, plus activations written and read once
        optimizer_bytes = 8 * self.params * self.bytes_per_value
        activation_bytes = 2 * tokens * s.hidden * s.layers * 16 * self.bytes_per_value
        return self._load("train", flops, optimizer_bytes + activation_bytes, c.batch_size)

    def prefill_load(self) -> Any:
        c, s = self.config, self.shape
        tokens = c.batch_size * c.input_len
        attention = 2.0 * c.batch_size * c.input_len**2 * s.hidden * s.layers  # causal QK^T and AV
        flops = models.forward_flops_per_token(self.params) * tokens + attention
        kv_write = tokens * s.kv_bytes_per_token(self.bytes_per_value)
        activations = 2 * tokens * s.hidden * s.layers * 4 * self.bytes_per_value
        return self._load("prefill", flops, self.weight_bytes + kv_write + activations, c.batch_size)

    def decode_load(self, context: int) -> Any:
        """One token step for the batch at ``context`` tokens of cache."""
        c, s = self.config, self.shape
        b = c.batch_size
        f = self.factors[(self.engine, "decode")]
        span = c.input_len + c.output_len if f.attends_full_cache else context
        flops = models.forward_flops_per_token(self.params) * b + 4.0 * b * span * s.hidden * s.layers
        kv = s.kv_bytes_per_token(self.bytes_per_value)
        reads = 1 + 2 * (s.heads // s.kv_heads) if f.expands_kv else 1
        bytes_moved = self.weight_bytes + b * span * kv * reads + b * kv
        return self._load("decode", flops, bytes_moved, b)

    # --- protocol -----------------------------------------------------------------------
    def prepare(self, device: Any) -> None:
        if device is None or not hasattr(device, "submit"):
            raise UsageError("a simulated workload needs a simulated GPU (--backend sim)")
        self._device = device
        warm = self.phases if not self.training else ("train",)
        for phase in warm:
            self.step(phase)
        self.synchronize()

    def step(self, phase: str) -> StepResult:
        if phase not in self.phases:
            raise ValueError(f"phase {phase!r} not prepared (phases: {', '.join(self.phases)})")
        c, dev = self.config, self._device
        b = c.batch_size
        if phase == "train":
            dev.submit(self.train_load())
            return StepResult(b * c.seq_len, 0, b)
        if phase == "prefill":
            dev.submit(self.prefill_load())
            return StepResult(b * c.input_len, b, b)
        if phase == "decode":
            for i in range(c.output_len):
                dev.submit(self.decode_load(c.input_len + i))
            return StepResult(0, b * c.output_len, b)
        # serve: whole requests, stamped on the device's clock like the torch engines
        clock = dev.clock
        t0 = clock.now()
        dev.submit(self.prefill_load())
        dev.synchronize()
        t1 = clock.now()
        for i in range(c.output_len - 1):
            dev.submit(self.decode_load(c.input_len + i))
        dev.synchronize()
        t2 = clock.now()
        tpot = (t2 - t1) / (c.output_len - 1) if c.output_len > 1 else None
        return StepResult(b * c.input_len, b * c.output_len, b, ttft_s=t1 - t0, tpot_s=tpot)

    def synchronize(self) -> None:
        self._device.synchronize()

    def close(self) -> None:
        self._device = None

    def flops_per_token(self, phase: str) -> float:
        if phase == "train":
            return models.training_flops_per_token(self.params)
        return models.forward_flops_per_token(self.params)


def twin(config: WorkloadConfig) -> SimWorkload:
    """The simulated twin of a built-in workload."""
    return SimWorkload(config)


def measure_twin(
    config: WorkloadConfig,
    *,
    part: str = "h100-sxm",
    limit_w: float | None = None,
    warm_s: float = 5.0,
    window_s: float = 10.0,
    factors: dict[tuple[str, str], EngineFactors] | None = None,
    seed: int = 7,
) -> tuple[float, float]:
    """Tokens/s and mean watts (energy counter) of a twin's first phase on a fresh simulated GPU,
    over whole steps: the calibration's and the tests' yardstick, not the sweep's."""
    from harness.devices import open_devices

    # a node of its own, its limit set explicitly and put back: a simulated driver's settings
    # outlive the process, and a measurement must neither inherit nor leave one
    dev = open_devices("sim", sim_gpu=part, sim_seed=seed, sim_node=f"tokbench-measure-{part}").devices[0]
    found_w = dev.power_limits().current_w
    dev.set_power_limit(limit_w if limit_w is not None else dev.power_limits().default_w)
    try:
        wl = SimWorkload(config, factors)
        phase = wl.phases[0]
        wl.prepare(dev)
        clock = dev.clock
        end = clock.now() + warm_s
        while clock.now() < end:
            wl.step(phase)
            wl.synchronize()
        e0, t0, tokens = dev.read_energy_mj(), clock.now(), 0
        while clock.now() - t0 < window_s:
            tokens += wl.step(phase).tokens
            wl.synchronize()
        e1, t1 = dev.read_energy_mj(), clock.now()
    finally:
        dev.set_power_limit(found_w)
    return tokens / (t1 - t0), (e1 - e0) / 1000.0 / (t1 - t0)
