"""Simulated twins: the same workload shapes, turned into ``Load`` for a simulated GPU.

Each step's load is a roofline of its own FLOPs and bytes — training ≈ 6·N FLOPs per token,
prefill ≈ 2·N plus causal attention, decode bound by reading the weights and the KV cache once per
token step — times an engine factor: the share of the roofline the engine's kernels reach
(``efficiency``) and the host time per step during which the GPU waits (``host_s``, plus
``host_per_seq_s`` per sequence: Python, launches, the per-token sync of ``generate``). The
simulator (harness/devices/simulated.py) supplies the physics: clocks, caps, power.

The engine factors are calibrated, the physics is not: ``hf-generate``/``hf-static`` decode factors
reproduce the real H100's decode rows in docs/calibration.md (1B preset, 128 tokens in, 128 out, a
warm chip) and the training/prefill factors its compute-bound rows; ``scripts/calibrate_twins.py``
refits them.
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
    #: DRAM traffic the engine moves per step, as a multiple of the model's minimum (copies, casts,
    #: padding, re-reads of small kernels); it costs memory power as well as time
    traffic: float = 1.0
    #: the host prepares the next step while the GPU runs this one (CUDA graphs): a step takes the
    #: longer of host and GPU time, not their sum
    overlaps_host: bool = False


#: (engine, phase) -> factors; "serve" uses the prefill and decode factors of its engine.
#: Fitted with scripts/calibrate_twins.py against the real H100 rows of docs/calibration.md (see docs/workloads.md).
FACTORS: dict[tuple[str, str], EngineFactors] = {
    # host_s of training and prefill: launching a step's kernels (hidden behind big steps, but it
    # keeps a tiny model's step from taking microseconds)
    ("torch", "train"): EngineFactors(efficiency=0.461, host_s=0.003),
    ("torch-compile", "train"): EngineFactors(efficiency=0.554, host_s=0.001),
    ("hf-static", "prefill"): EngineFactors(efficiency=0.492, host_s=0.001),
    ("hf-generate", "prefill"): EngineFactors(efficiency=0.492, host_s=0.001),  # the same eager forward
    # eager generate: Python and launches between token steps, small kernels far below the roofline
    ("hf-generate", "decode"): EngineFactors(efficiency=0.3862, host_s=0.0146793, host_per_seq_s=1.436e-06,
                                             traffic=1.0),
    # compiled decode with a masked static cache: transformers falls back to repeat_kv; CUDA graphs
    # let the host prepare the next step while the GPU runs (batch 1 host-bound, batch 64 GPU-bound)
    ("hf-static", "decode"): EngineFactors(
        efficiency=0.7718, host_s=0.003367, attends_full_cache=True, expands_kv=True, traffic=1.898,
        overlaps_host=True,
    ),
    # vLLM: no calibration row yet (set from its published behaviour: fused kernels, paged KV
    # read once per step, CUDA graphs); refit once scripts/gpu_check.py has measured it
    ("vllm", "prefill"): EngineFactors(efficiency=0.55, host_s=0.001),
    ("vllm", "decode"): EngineFactors(efficiency=0.70, host_s=0.0002, host_per_seq_s=2e-6, overlaps_host=True),
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
    def _load(self, phase: str, seqs: int, gemm: tuple[float, float], attention: tuple[float, float],
              elementwise: tuple[float, float]) -> Any:
        """A step as its three kernel classes, each (FLOPs, bytes): the simulator bounds each by its
        own roofline at the current clock, so compute in one cannot hide memory in another."""
        from harness.devices.simulated import Kernel, Load

        f = self.factors[(self.engine, phase)]
        kernels = tuple(Kernel(flops, f.traffic * nbytes) for flops, nbytes in (gemm, attention, elementwise))
        return Load.of(kernels, efficiency=f.efficiency, host_s=f.host_s + f.host_per_seq_s * seqs,
                       host_overlaps=f.overlaps_host)

    @property
    def weight_bytes(self) -> float:
        return float(self.params * self.bytes_per_value)

    def _activation_bytes(self, tokens: int, values_per_layer: int) -> float:
        """Bytes of per-token activations written and read once (norms, residuals, activations)."""
        s = self.shape
        return 2.0 * tokens * s.hidden * s.layers * values_per_layer * self.bytes_per_value

    def train_load(self) -> Any:
        c, s = self.config, self.shape
        tokens = c.batch_size * c.seq_len
        flops = models.training_flops_per_token(self.params) * tokens
        if c.checkpointing:  # the forward runs twice
            flops += models.forward_flops_per_token(self.params) * tokens
        attention = 3 * 2.0 * c.batch_size * c.seq_len**2 * s.hidden * s.layers  # forward + backward
        # weights read in forward and backward; gradients written and read, AdamW moments and
        # weights updated in place (the optimizer's elementwise pass); activations written and read
        weights = 3 * self.weight_bytes
        optimizer = 8 * self.params * self.bytes_per_value
        kv = tokens * s.kv_bytes_per_token(self.bytes_per_value)
        return self._load("train", c.batch_size, (flops, weights), (attention, 3 * kv),
                          (0.0, optimizer + self._activation_bytes(tokens, 16)))

    def prefill_load(self) -> Any:
        c, s = self.config, self.shape
        tokens = c.batch_size * c.input_len
        attention = 2.0 * c.batch_size * c.input_len**2 * s.hidden * s.layers  # causal QK^T and AV
        gemm = models.forward_flops_per_token(self.params) * tokens
        kv_write = tokens * s.kv_bytes_per_token(self.bytes_per_value)
        return self._load("prefill", c.batch_size, (gemm, self.weight_bytes), (attention, 2 * kv_write),
                          (0.0, self._activation_bytes(tokens, 4)))

    def decode_load(self, context: int) -> Any:
        """One token step for the batch at ``context`` tokens of cache: weight GEMMs (the weights
        read once for the batch), attention over the KV cache (read per sequence), elementwise."""
        c, s = self.config, self.shape
        b = c.batch_size
        f = self.factors[(self.engine, "decode")]
        span = c.input_len + c.output_len if f.attends_full_cache else context
        kv = s.kv_bytes_per_token(self.bytes_per_value)
        reads = 1 + 2 * (s.heads // s.kv_heads) if f.expands_kv else 1
        gemm = (models.forward_flops_per_token(self.params) * b, self.weight_bytes)
        attention = (4.0 * b * span * s.hidden * s.layers, b * span * kv * reads)
        elementwise = (0.0, b * kv + self._activation_bytes(b, 8))
        return self._load("decode", b, gemm, attention, elementwise)

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

    def step_loads(self, phase: str) -> tuple[list[Any], int]:
        """The GPU loads of one step of ``phase`` and the tokens it counts (as ``step`` submits them)."""
        c = self.config
        if phase == "train":
            return [self.train_load()], c.batch_size * c.seq_len
        if phase == "prefill":
            return [self.prefill_load()], c.batch_size * c.input_len
        if phase == "decode":
            return [self.decode_load(c.input_len + i) for i in range(c.output_len)], c.batch_size * c.output_len
        if phase == "serve":
            decode = [self.decode_load(c.input_len + i) for i in range(c.output_len - 1)]
            return [self.prefill_load(), *decode], c.batch_size * (c.input_len + c.output_len)
        raise ValueError(f"unknown phase {phase!r}")

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


@dataclass(frozen=True)
class TwinPoint:
    """One steady operating point of a twin on a simulated GPU."""

    tokens_per_s: float
    watts: float  # true mean power (the simulator's energy, not a sensor)
    clock_mean_mhz: float  # SM clock while the GPU works, time-weighted
    clock_max_mhz: float
    roofline_tokens_per_s: float  # the per-kernel roofline bound at ``clock_max_mhz``


def measure_point(
    config: WorkloadConfig,
    *,
    part: str = "h100-sxm",
    limit_w: float | None = None,
    lock_mhz: int | None = None,
    warm_s: float = 5.0,
    window_s: float = 10.0,
    factors: dict[tuple[str, str], EngineFactors] | None = None,
    seed: int = 7,
) -> TwinPoint:
    """A twin's first phase on a fresh simulated GPU at a power limit (default: the part's) or a
    locked SM clock, over whole steps after ``warm_s``: the calibration's and the tests' yardstick,
    not the sweep's. Power is the simulator's true energy (the counter's 100 ms steps would add up to
    ~2% noise to a short window)."""
    from harness.devices import open_devices
    from harness.devices.simulated import roofline_s

    # a node of its own, its limit set explicitly and put back: a simulated driver's settings
    # outlive the process, and a measurement must neither inherit nor leave one
    dev = open_devices("sim", sim_gpu=part, sim_seed=seed, sim_node=f"tokbench-measure-{part}").devices[0]
    found_w = dev.power_limits().current_w
    dev.set_power_limit(limit_w if limit_w is not None else dev.power_limits().default_w)
    if lock_mhz is None:
        dev.reset_sm_clock()
    else:
        dev.lock_sm_clock(lock_mhz, lock_mhz)
    clocks: list[float] = []
    try:
        wl = SimWorkload(config, factors)
        phase = wl.phases[0]
        wl.prepare(dev)
        clock = dev.clock
        end = clock.now() + warm_s
        while clock.now() < end:
            wl.step(phase)
            wl.synchronize()
        cancel = clock.call_every(0.005, lambda _t: clocks.append(dev.f_now_mhz) if dev.act.busy > 0 else None)
        e0, t0, tokens = dev.true_energy_mj, clock.now(), 0
        while clock.now() - t0 < window_s:
            tokens += wl.step(phase).tokens
            wl.synchronize()
        e1, t1 = dev.true_energy_mj, clock.now()
        cancel()
    finally:
        dev.set_power_limit(found_w)
        dev.reset_sm_clock()
    f_max = max(clocks, default=float(dev.part.sm_clock_max_mhz))
    loads, step_tokens = wl.step_loads(phase)
    roof = sum(roofline_s(dev.part, load, f_max) for load in loads)
    return TwinPoint(tokens / (t1 - t0), (e1 - e0) / 1000.0 / (t1 - t0),
                     sum(clocks) / len(clocks) if clocks else f_max, f_max, step_tokens / roof)


def measure_twin(config: WorkloadConfig, **kwargs: Any) -> tuple[float, float]:
    """Tokens/s and mean watts of ``measure_point`` (same arguments)."""
    p = measure_point(config, **kwargs)
    return p.tokens_per_s, p.watts
