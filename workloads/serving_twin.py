"""A continuous-batching serving engine on a simulated GPU: the endpoint workload without a GPU.

Each engine iteration admits waiting requests while the KV cache has room for their whole
sequence (prompt + output) and the iteration's prefill budget allows, runs their prefill (which
yields each one's first token) and one decode step for every running request, as one step of the
simulated GPU; a request leaves when it has its output. So prefill and decode interleave, and the
batch grows with the offered load up to the KV capacity (``twin_kv_share`` of the memory the
weights leave free). The loads are the simulated inference twin's (workloads/simulated.py, engine
``twin_engine``) at the batch and mean context of the iteration; the physics is the simulator's.

The load is the endpoint's: a closed loop of ``batch_size`` users (who join one by one during
``prepare``, so their requests do not end in lockstep), or Poisson (gamma) arrivals at
``batch_size`` requests per second, on the simulated clock. Requests are the same records the
HTTP client fills, so the window's accounting is the same code (workloads/serving_metrics.py).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from harness.errors import UsageError
from workloads import models
from workloads.base import StepResult
from workloads.endpoint import endpoint_spec, slo_of
from workloads.loadgen import RequestRecord, next_gap
from workloads.serving_metrics import interval_fields, token_counts
from workloads.simulated import SimWorkload

if TYPE_CHECKING:
    from workloads.config import WorkloadConfig

#: prompt tokens one iteration may prefill (a chunked-prefill engine's batched-token budget)
PREFILL_BUDGET_TOKENS = 8192


class ServingTwin:
    """The endpoint workload's twin on a device that accepts ``Load``."""

    phases = ("serve",)

    def __init__(self, config: WorkloadConfig) -> None:
        e = config.endpoint
        assert e is not None
        model = e.twin_model or config.model
        if not models.is_preset(model):
            raise UsageError(f"the simulated serving twin needs a preset: set [workload.endpoint].twin_model "
                             f"({', '.join(models.PRESETS)}) for the served model {config.model!r}")
        self.config, self.e, self.model = config, e, model
        self.spec = endpoint_spec(config, f"sim-{e.twin_engine}", {"simulated": True, "twin_model": model})
        self._shapes: dict[int, SimWorkload] = {}
        self._device: Any = None
        self.max_seqs = 0
        self.records: list[RequestRecord] = []
        self._waiting: list[RequestRecord] = []
        self._running: list[RequestRecord] = []
        self._rng = random.Random(config.seed)
        self._next_arrival = 0.0

    # --- the engine ---------------------------------------------------------------------------
    def _at(self, batch: int) -> SimWorkload:
        """The inference twin at ``batch`` sequences (its loads are this iteration's)."""
        if batch not in self._shapes:
            from workloads.config import WorkloadConfig

            c = self.config
            cfg = WorkloadConfig(name="inference", model=self.model, engine=self.e.twin_engine, phases=["serve"],
                                 batch_size=batch, input_len=c.input_len, output_len=c.output_len,
                                 precision=c.precision, seed=c.seed)
            self._shapes[batch] = SimWorkload(cfg)
        return self._shapes[batch]

    def prepare(self, device: Any) -> None:
        if device is None or not hasattr(device, "submit"):
            raise UsageError("the serving twin needs a simulated GPU (--backend sim)")
        self._device = device
        c = self.config
        one = self._at(1)
        free = device.info.memory_total_mb * 1e6 - one.weight_bytes
        per_seq = (c.input_len + c.output_len) * one.shape.kv_bytes_per_token(one.bytes_per_value)
        self.max_seqs = int(self.e.twin_kv_share * free // per_seq)
        if self.max_seqs < 1:
            raise UsageError(f"the {self.model} twin's KV cache cannot hold one {c.input_len}+{c.output_len}-token "
                             f"sequence on {device.info.name}")
        if self.e.load == "open":
            self._next_arrival = device.clock.now()
            return
        # users join one by one over one request's worth of iterations, so that their requests end
        # spread out as a real server's do, not in lockstep waves; then the mix is steady
        joins = [k * c.output_len // c.batch_size for k in range(c.batch_size)]
        for i in range(c.output_len):
            while joins and joins[0] <= i:
                joins.pop(0)
                self._arrive(device.clock.now())
            self._iteration()

    def _arrive(self, t: float) -> None:
        rec = RequestRecord(len(self.records), t, t)
        self.records.append(rec)
        self._waiting.append(rec)

    def _poisson_arrivals(self, now: float) -> None:
        while self._next_arrival <= now:
            self._arrive(self._next_arrival)
            self._next_arrival += next_gap(self._rng, float(self.config.batch_size), self.e.burstiness)

    def _iteration(self) -> None:
        """One engine step: admit, prefill the admitted, decode the running, on the simulated GPU."""
        c, dev = self.config, self._device
        if self.e.load == "open":
            self._poisson_arrivals(dev.clock.now())
            if not self._waiting and not self._running:  # idle until the next arrival
                dev.clock.sleep(self._next_arrival - dev.clock.now())
                self._poisson_arrivals(dev.clock.now())
        admitted: list[RequestRecord] = []
        budget = PREFILL_BUDGET_TOKENS
        while self._waiting and len(self._running) + len(admitted) < self.max_seqs and \
                (not admitted or budget >= c.input_len):
            admitted.append(self._waiting.pop(0))
            budget -= c.input_len
        if admitted:
            dev.submit(self._at(len(admitted)).prefill_load())
        if self._running:
            context = sum(c.input_len + len(r.chunk_times) for r in self._running) / len(self._running)
            dev.submit(self._at(len(self._running)).decode_load(int(context)))
        dev.synchronize()
        now = dev.clock.now()
        finished = []
        for r in self._running:
            r.chunk_times.append(now)
            if len(r.chunk_times) >= c.output_len:
                finished.append(r)
        for r in admitted:
            r.t_first = now
            r.chunk_times.append(now)
            if c.output_len == 1:
                finished.append(r)
        done = {id(r) for r in finished}
        self._running = [r for r in self._running + admitted if id(r) not in done]
        for r in finished:
            r.t_end, r.prompt_tokens, r.completion_tokens = now, c.input_len, len(r.chunk_times)
            if self.e.load == "closed":
                self._arrive(now)  # the user sends the next request at once

    # --- protocol -----------------------------------------------------------------------------
    def step(self, phase: str) -> StepResult:
        clock = self._device.clock
        t0 = clock.now()
        while clock.now() - t0 < self.e.slice_s:
            self._iteration()
        t1 = clock.now()
        live = [r for r in self.records if not r.t_end or r.t_end >= t0]
        inp, out = token_counts(live, t0, t1, self.config.input_len)
        return StepResult(inp, out, self.config.batch_size)

    def interval_fields(self, t_start: float, t_end: float) -> dict:
        fields = interval_fields(self.records, t_start, t_end, input_len=self.config.input_len,
                                 output_len=self.config.output_len, slo=slo_of(self.e))
        self.records = [r for r in self.records if not r.t_end or r.t_end >= t_end]
        return fields

    def synchronize(self) -> None:
        self._device.synchronize()

    def close(self) -> None:
        self._device = None

    def flops_per_token(self, phase: str) -> float:
        return models.forward_flops_per_token(self._at(1).params)
