"""What a workload is asked to run (the ``[workload]`` table of a profile), validated with pydantic.

It lives beside the workloads, which are built from it, so that profiles import workloads and never
the other way round.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workloads import models

BUILTIN_WORKLOADS = ("training", "inference", "endpoint")
ENGINES = {"training": ("torch",), "inference": ("hf-static", "hf-generate", "vllm"), "endpoint": ("openai",)}
DEFAULT_PHASES = {"training": ["train"], "inference": ["prefill", "decode"], "endpoint": ["serve"]}
_USER_WORKLOAD = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

Phase = Literal["train", "prefill", "decode", "serve"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointConfig(_Strict):
    """``[workload.endpoint]``: an OpenAI-compatible server driven under load (docs/serving.md).

    The sweep's batch sizes are the load: concurrencies (closed loop) or request rates in requests
    per second (open loop)."""

    url: str = "http://127.0.0.1:8000"
    #: argv that starts the server (no shell); None: measure the one already running at ``url``
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ready_path: str = "/v1/models"
    ready_timeout_s: float = Field(900.0, gt=0)
    load: Literal["closed", "open"] = "closed"
    burstiness: float = Field(1.0, gt=0)  # open loop: gamma shape of the gaps (1 = Poisson)
    ignore_eos: bool = True
    request_timeout_s: float = Field(600.0, gt=0)
    #: goodput targets (a request meets both to count)
    ttft_ms: float | None = Field(None, gt=0)
    tpot_ms: float | None = Field(None, gt=0)
    max_error_rate: float = Field(0.01, ge=0, le=1)
    max_lag_ms: float = Field(20.0, gt=0)
    #: device time per harness step while the load runs on its own (the window is whole steps)
    slice_s: float = Field(0.25, gt=0)
    #: a preset whose config and a synthetic tokenizer tokbench writes to a directory that
    #: ``command`` names as ``{model_dir}`` (a server with dummy weights, offline)
    dummy_model: str | None = None
    #: the preset the simulated serving twin runs (default: ``model`` when it is a preset)
    twin_model: str | None = None
    twin_engine: str = "vllm"
    #: the twin's KV cache as a share of the memory the weights leave free
    twin_kv_share: float = Field(0.9, gt=0, le=1)


class WorkloadConfig(_Strict):
    """What to run. ``name`` is a built-in workload or ``package.module:callable``."""

    name: str = "inference"
    model: str = "tiny"
    engine: str | None = None  # training: torch; inference: hf-static (default), hf-generate, vllm
    phases: list[Phase] | None = None  # measured phases; default train, or prefill + decode
    batch_size: int = Field(1, ge=1)
    seq_len: int = Field(2048, ge=2)  # training
    input_len: int = Field(128, ge=2)  # inference prompt length
    output_len: int = Field(128, ge=1)  # inference new tokens (EOS ignored)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    compile: bool | None = None  # None: compile on a GPU where the engine benefits
    checkpointing: bool = False  # training: activation checkpointing
    layers: int | None = Field(None, ge=1)  # keep the first N decoder layers (a pipeline stage)
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)  # engine or user-workload extras
    endpoint: EndpointConfig | None = None  # name = "endpoint": the server and its load

    @model_validator(mode="after")
    def _check(self) -> WorkloadConfig:
        if self.is_user:
            if not _USER_WORKLOAD.match(self.name):
                raise ValueError(f"name: {self.name!r} is not of the form 'package.module:callable'")
            return self
        if self.name not in BUILTIN_WORKLOADS:
            raise ValueError(
                f"name: {self.name!r} is not a workload; allowed: {', '.join(BUILTIN_WORKLOADS)}, "
                "or 'package.module:callable'"
            )
        engines = ENGINES[self.name]
        if self.engine is not None and self.engine not in engines:
            raise ValueError(
                f"engine: {self.engine!r} is not an engine of {self.name}; allowed: {', '.join(engines)}"
            )
        if self.name == "endpoint":
            return self._check_endpoint()
        if self.endpoint is not None:
            raise ValueError("endpoint: only the 'endpoint' workload takes an [workload.endpoint] table")
        phases = self.phases or DEFAULT_PHASES[self.name]
        allowed = ["train"] if self.name == "training" else ["prefill", "decode", "serve"]
        if any(p not in allowed for p in phases) or not phases:
            raise ValueError(
                f"phases: {phases} not allowed for {self.name}; allowed: {', '.join(allowed)}"
            )
        if not models.is_preset(self.model) and not Path(self.model).expanduser().is_dir():
            raise ValueError(
                f"model: {self.model!r} is neither a preset ({', '.join(models.PRESETS)}) "
                "nor a local model directory"
            )
        return self

    def _check_endpoint(self) -> WorkloadConfig:
        """The served model is a name the server knows, not a preset; the twin needs a preset."""
        if self.endpoint is None:
            raise ValueError("endpoint: the 'endpoint' workload needs an [workload.endpoint] table (url, ...)")
        if (self.phases or ["serve"]) != ["serve"]:
            raise ValueError("phases: the 'endpoint' workload has one phase, serve")
        for key in ("twin_model", "dummy_model"):
            preset = getattr(self.endpoint, key)
            if preset is not None and not models.is_preset(preset):
                raise ValueError(f"endpoint.{key}: {preset!r} is not a preset ({', '.join(models.PRESETS)})")
        names_dir = any("{model_dir}" in a for a in self.endpoint.command or [])
        if names_dir and self.endpoint.dummy_model is None:
            raise ValueError("endpoint.command: names {model_dir} but endpoint.dummy_model (a preset) is not set")
        return self

    @property
    def is_user(self) -> bool:
        return ":" in self.name

    @property
    def resolved_engine(self) -> str:
        if self.engine is not None:
            return self.engine
        return {"training": "torch", "endpoint": "openai"}.get(self.name, "hf-static")

    @property
    def resolved_phases(self) -> tuple[str, ...]:
        return tuple(self.phases or DEFAULT_PHASES.get(self.name, ["train"]))
