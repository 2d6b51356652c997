"""Training: one language-model step (forward, backward, AdamW) on a fixed batch of tokens.

A fixed batch keeps the step's cost constant from window to window (the sweep compares steps,
not learning curves), and lets a test show the step really trains: the loss falls. Tokens per
step are batch × sequence, counted from the tensor actually fed to the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.devices.base import Device
from workloads import models, torch_env
from workloads.base import StepResult, WorkloadSpec


@dataclass(frozen=True)
class TrainingOptions:
    model: str = "tiny"
    batch_size: int = 2
    seq_len: int = 64
    precision: str = "auto"  # bf16 on a GPU (parameters, gradients and AdamW moments), fp32 on the CPU
    compile: bool = False
    checkpointing: bool = False  # activation checkpointing (recompute in backward)
    layers: int | None = None  # keep only the first N decoder layers (a pipeline stage's slice)
    lr: float = 1e-3
    seed: int = 0
    warmup_steps: int = 1  # run in prepare(): allocates optimizer state and absorbs compilation


class TrainingWorkload:
    """LM training step on one device; ``device=None`` trains on the CPU."""

    phases = ("train",)

    def __init__(self, options: TrainingOptions) -> None:
        self.options = options
        params = models.preset(options.model).params if models.is_preset(options.model) else 0
        self.spec = WorkloadSpec(
            name="training",
            kind="training",
            engine="torch-compile" if options.compile else "torch",
            model=options.model,
            precision=options.precision,
            batch_size=options.batch_size,
            seq_len=options.seq_len,
            params=params,
            extra={"checkpointing": options.checkpointing, "layers": options.layers, "optimizer": "AdamW"},
        )
        self._net: Any = None
        self._step_fn: Any = None
        self.last_loss: Any = None  # a device tensor; read with float() (that synchronises)
        self.last_logits_shape: tuple[int, ...] = ()

    # --- protocol ---------------------------------------------------------------------
    def prepare(self, device: Device | None) -> None:
        import torch

        o = self.options
        self._tdev = torch_env.torch_device(device)
        dtype = torch_env.resolve_dtype(o.precision, self._tdev)
        net = models.build_model(o.model, dtype=dtype, device=self._tdev, seed=o.seed, layers=o.layers)
        net.train()
        net.config.use_cache = False
        if o.checkpointing:
            net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self._net = net
        n_params = models.count_params(net)
        self.spec = _with(self.spec, params=n_params, precision=torch_env.dtype_name(dtype))
        fused = self._tdev.type == "cuda"
        self._opt = torch.optim.AdamW(net.parameters(), lr=o.lr, fused=fused)
        gen = torch.Generator(device="cpu").manual_seed(o.seed)
        vocab = net.config.vocab_size
        self._batch = torch.randint(0, vocab, (o.batch_size, o.seq_len), generator=gen).to(self._tdev)
        forward = torch.compile(self._forward_backward) if o.compile else self._forward_backward
        self._step_fn = forward
        for _ in range(o.warmup_steps):
            self.step("train")
        self.synchronize()

    def step(self, phase: str = "train") -> StepResult:
        if phase != "train":
            raise ValueError(f"training has only the 'train' phase, not {phase!r}")
        self.last_loss = self._step_fn(self._batch)
        self._opt.step()
        self._opt.zero_grad(set_to_none=True)
        b, s = self._batch.shape
        return StepResult(input_tokens=b * s, output_tokens=0, sequences=b)

    def synchronize(self) -> None:
        torch_env.synchronize(self._tdev)

    def close(self) -> None:
        self._net = self._opt = self._step_fn = self._batch = None
        _free_cuda()

    def flops_per_token(self, phase: str = "train") -> float:
        return models.training_flops_per_token(self.spec.params)

    # --- internals --------------------------------------------------------------------
    def _forward_backward(self, batch: Any) -> Any:
        out = self._net(input_ids=batch, labels=batch, use_cache=False)
        out.loss.backward()
        self.last_logits_shape = tuple(out.logits.shape)
        return out.loss.detach()


def _with(spec: WorkloadSpec, **changes: Any) -> WorkloadSpec:
    from dataclasses import replace

    return replace(spec, **changes)


def _free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
