"""A job for simulated GPUs: without work a simulated board draws idle power and a governor has
nothing to govern. Keeps every board's queue a few steps deep with a profile's workload (its
simulated twin) and counts the tokens of finished steps - what the governor's tokens come from."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from harness.devices.base import Device, supports_sim_load
from harness.errors import UsageError


class SimJob:
    def __init__(self, devices: Sequence[Device], workload_config, depth: int = 2, period_s: float = 0.05) -> None:
        from workloads.registry import get as get_workload

        if not all(supports_sim_load(d) for d in devices):
            raise UsageError("a simulated job needs simulated GPUs (--backend sim)")
        self.devices = list(devices)
        self.workloads = [get_workload(workload_config, d) for d in self.devices]
        self.depth = depth
        self.period_s = period_s
        self._steps: list[deque[tuple[int, int]]] = [deque() for _ in self.devices]  # (loads before end, tokens)
        self._submitted = [0] * len(self.devices)
        self._done_loads = [0] * len(self.devices)
        self._tokens = [0] * len(self.devices)
        self._cancel = None

    def start(self) -> None:
        for d, w in zip(self.devices, self.workloads):
            w.prepare(d)
        self._top(0.0)
        self._cancel = self.devices[0].clock.call_every(self.period_s, self._top)  # type: ignore[attr-defined]

    def _top(self, _t: float) -> None:
        for i, (d, w) in enumerate(zip(self.devices, self.workloads)):
            self._count(i)
            while len(self._steps[i]) < self.depth:
                before = len(d.queue)  # type: ignore[attr-defined]
                res = w.step(w.phases[0])
                self._submitted[i] += len(d.queue) - before  # type: ignore[attr-defined]
                self._steps[i].append((self._submitted[i], res.tokens))

    def _count(self, i: int) -> None:
        done = self._submitted[i] - len(self.devices[i].queue)  # type: ignore[attr-defined]
        steps = self._steps[i]
        while steps and steps[0][0] <= done:
            self._tokens[i] += steps.popleft()[1]

    def tokens(self) -> int:
        """Tokens of every step finished so far, all GPUs."""
        for i in range(len(self.devices)):
            self._count(i)
        return sum(self._tokens)

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel()
            self._cancel = None
        for w in self.workloads:
            w.close()
