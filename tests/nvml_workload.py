"""A user workload for NVML-backend tests (against the fake pynvml): it 'runs' by letting a
few milliseconds of wall time pass and counts a fixed number of tokens per step, so a sweep's
real-hardware code path (wall clock, sampler thread, restore) runs in CI in seconds."""

from __future__ import annotations

import time

from workloads.base import StepResult, WorkloadSpec


class SleepWorkload:
    phases = ("train",)

    def __init__(self, config, device) -> None:
        self.spec = WorkloadSpec(name="sleep", kind="training", engine="sleep", model="none", precision="fp32",
                                 batch_size=config.batch_size, seq_len=16)

    def prepare(self, device) -> None:
        self.device = device

    def step(self, phase: str) -> StepResult:
        time.sleep(0.01)
        return StepResult(input_tokens=16 * self.spec.batch_size, output_tokens=0, sequences=self.spec.batch_size)

    def synchronize(self) -> None:
        """Nothing is asynchronous here."""

    def close(self) -> None:
        """Nothing to free."""


def make(config, device) -> SleepWorkload:
    return SleepWorkload(config, device)
