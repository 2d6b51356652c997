"""The workload protocol: what the harness needs from a piece of work it measures.

A workload is prepared on one device, then stepped repeatedly; each step runs one repeat of
one *phase* and says how many tokens it processed. The harness times steps with the device's
clock and derives throughput, energy per token and latencies; a workload only counts tokens
exactly and synchronises the device when asked. Inference has phases measured apart
(``prefill``, ``decode``) because one prefill is shorter than the energy counter's update
period; training has one phase (``train``); a serving mix has one (``serve``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from harness.devices.base import Device
from harness.errors import UsageError

PHASES = ("train", "prefill", "decode", "serve")


@dataclass(frozen=True)
class StepResult:
    """Tokens one step processed. ``sequences`` is the number of concurrent sequences (the
    batch), which the harness needs to turn time into per-user speed."""

    input_tokens: int
    output_tokens: int
    sequences: int = 1
    #: latencies a whole-request step observed itself (``serve``), else None: time to first
    #: token and time per output token after the first, in seconds of the device's clock
    ttft_s: float | None = None
    tpot_s: float | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def checked_step(result: object, who: str) -> StepResult:
    """A step's result as the harness needs it, or one ``UsageError`` line saying what is wrong (a
    user workload that returns a string, NaN or negative tokens must not become a record)."""
    counts = [getattr(result, k, None) for k in ("input_tokens", "output_tokens", "sequences")]
    if not all(isinstance(c, int | float) and not isinstance(c, bool) for c in counts):
        raise UsageError(f"workload {who}: step() must return a StepResult with integer input_tokens, output_tokens "
                         f"and sequences; got {result!r}")
    if not all(math.isfinite(c) and c >= 0 and c == int(c) for c in counts):
        raise UsageError(f"workload {who}: step() returned token counts that are not whole numbers >= 0: {result!r}")
    return result  # type: ignore[return-value]


@dataclass(frozen=True)
class WorkloadSpec:
    """What a workload is: recorded in the manifest, and the metadata that decides whether two
    runs may be compared."""

    name: str
    kind: str  # "training" | "inference" | "serve"
    engine: str  # e.g. "torch", "torch-compile", "hf-static", "hf-generate", "vllm", "sim"
    model: str  # preset name or model path
    precision: str  # "bf16" | "fp32" | ...
    batch_size: int
    seq_len: int = 0  # training sequence length
    input_len: int = 0  # inference prompt length
    output_len: int = 0  # inference output length
    params: int = 0  # parameter count
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def comparison_key(self) -> dict[str, Any]:
        """The fields that must match for two runs to be compared."""
        return {
            "kind": self.kind,
            "model": self.model,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "input_len": self.input_len,
            "output_len": self.output_len,
        }


@runtime_checkable
class Workload(Protocol):
    """One measured piece of work on one device."""

    spec: WorkloadSpec
    phases: tuple[str, ...]

    def prepare(self, device: Device) -> None:
        """Build the model and inputs on ``device``; compile here, never inside a window."""

    def step(self, phase: str) -> StepResult:
        """Run one repeat of ``phase`` (may return before the device finishes)."""

    def synchronize(self) -> None:
        """Wait until the device has finished all submitted work."""

    def close(self) -> None:
        """Free device memory."""


@runtime_checkable
class ReportsFlops(Protocol):
    """A workload that knows its model FLOPs per token, so the harness can report MFU."""

    def flops_per_token(self, phase: str) -> float:
        """Model FLOPs per counted token of ``phase`` (6·N for training, 2·N for a forward)."""
