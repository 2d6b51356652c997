"""The endpoint workload: an OpenAI-compatible server under a steady load, cut by the sweep's window.

``prepare`` starts the profile's server (or finds the running one) and starts the load generator,
which then runs on its own; each ``step`` lets ``slice_s`` of the device's clock pass and reports
the tokens that arrived meanwhile (for the live display and the warm-up), and ``synchronize`` has
nothing to wait for, so the window's edges fall while the load keeps running. After the window the
sweep asks ``interval_fields(t_start, t_end)`` for the exact accounting of that interval
(workloads/serving_metrics.py). The sweep's batch size is the concurrency (closed loop) or the
request rate per second (open loop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.errors import TokbenchError, UsageError
from workloads import dummy_model
from workloads.base import StepResult, WorkloadSpec
from workloads.loadgen import LoadGenerator, LoadSpec, RequestRecord
from workloads.server_process import ServerError, probe, shared_server
from workloads.serving_metrics import Slo, interval_fields, token_counts

if TYPE_CHECKING:
    from workloads.config import EndpointConfig, WorkloadConfig

#: GPUs (uuids) with a prepared endpoint workload in this process: one at a time
_LIVE: set[str] = set()


def endpoint_spec(config: WorkloadConfig, engine: str, extra: dict[str, Any] | None = None) -> WorkloadSpec:
    """The manifest's description of an endpoint run (the twin's too, with its own engine)."""
    e = config.endpoint
    assert e is not None
    return WorkloadSpec(
        name="endpoint", kind="serve", engine=engine, model=config.model,
        precision="bf16" if config.precision == "auto" else config.precision,
        batch_size=config.batch_size, input_len=config.input_len, output_len=config.output_len,
        extra={"load": e.load, "load_axis": "concurrency" if e.load == "closed" else "requests_per_s",
               "url": e.url, "server_command": e.command, "burstiness": e.burstiness,
               "ttft_ms_target": e.ttft_ms, "tpot_ms_target": e.tpot_ms, **(extra or {})},
    )


def slo_of(e: EndpointConfig) -> Slo:
    return Slo(ttft_ms=e.ttft_ms, tpot_ms=e.tpot_ms, max_error_rate=e.max_error_rate, max_lag_ms=e.max_lag_ms)


class EndpointWorkload:
    """A load at one concurrency (or rate) on the profile's server."""

    phases = ("serve",)

    def __init__(self, config: WorkloadConfig) -> None:
        assert config.endpoint is not None
        self.config = config
        self.e: EndpointConfig = config.endpoint
        self.spec = endpoint_spec(config, "openai")
        self.load = LoadSpec(
            url=self.e.url, model=config.model, mode=self.e.load,
            concurrency=config.batch_size, rate=float(config.batch_size), burstiness=self.e.burstiness,
            input_len=config.input_len, output_len=config.output_len, ignore_eos=self.e.ignore_eos,
            timeout_s=self.e.request_timeout_s, seed=config.seed,
        )
        self.server: Any = None
        self.gen: LoadGenerator | None = None
        self._clock: Any = None
        self._uuid = ""

    def prepare(self, device: Any) -> None:
        from harness.devices.base import WallClock

        self._clock = getattr(device, "clock", None) or WallClock()
        if getattr(self._clock, "simulated", False):
            raise TokbenchError("an endpoint workload on a simulated clock runs as its serving twin")
        e = self.e
        info = getattr(device, "info", None)
        if info is not None and _LIVE - {info.uuid}:
            raise UsageError("an endpoint run measures one GPU (its server's load is not split across "
                             "GPUs); name one with --gpus")
        if e.command:
            # the server runs on the GPU being swept, unless the profile says otherwise
            env = {"CUDA_VISIBLE_DEVICES": info.uuid, **e.env} if info is not None else dict(e.env)
            command = dummy_model.fill(e.command, e.dummy_model)
            self.server = shared_server(command, e.url, env, e.ready_path, e.ready_timeout_s)
        elif not probe(e.url, e.ready_path):
            raise ServerError(f"no server answers at {e.url} (GET {e.ready_path}); start it, or give "
                              "[workload.endpoint].command so tokbench starts it")
        self.gen = LoadGenerator(self.load).start()
        if info is not None:
            _LIVE.add(info.uuid)
            self._uuid = info.uuid

    def _check_alive(self) -> None:
        if self.server is not None and self.server.exited() is not None:
            raise ServerError(self.server.died_message("during the run"))
        assert self.gen is not None
        if self.gen.failure is not None:
            raise TokbenchError(f"the load generator failed: {type(self.gen.failure).__name__}: {self.gen.failure}")

    def step(self, phase: str) -> StepResult:
        assert self.gen is not None
        t0 = self._clock.now()
        self._clock.sleep(self.e.slice_s)
        t1 = self._clock.now()
        self._check_alive()
        records = self.gen.records()
        ended = [r for r in records if r.t_end and t0 <= r.t_end < t1]
        if self.server is None and ended and all(r.error == "connection" for r in ended) \
                and not probe(self.e.url, self.e.ready_path):
            raise ServerError(f"the server at {self.e.url} stopped answering during the run")
        live = [r for r in records if not r.t_end or r.t_end >= t0]
        inp, out = token_counts(live, t0, t1, self.config.input_len)
        return StepResult(inp, out, self.config.batch_size)

    def _fields(self, records: list[RequestRecord], a: float, b: float) -> dict:
        assert self.gen is not None
        return interval_fields(records, a, b, input_len=self.config.input_len, output_len=self.config.output_len,
                               slo=slo_of(self.e), lags=self.gen.lags(), open_loop=self.e.load == "open")

    def interval_fields(self, t_start: float, t_end: float) -> dict:
        """The window's exact serving figures; records that ended before it are then dropped."""
        assert self.gen is not None
        self._check_alive()
        fields = self._fields(self.gen.records(), t_start, t_end)
        self.gen.prune(t_end)
        return fields

    def synchronize(self) -> None:
        """Nothing to wait for: the load runs on across the window's edges."""

    def close(self) -> None:
        if self.gen is not None:
            self.gen.stop()
            self.gen = None
        _LIVE.discard(self._uuid)
