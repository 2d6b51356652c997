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

BUILTIN_WORKLOADS = ("training", "inference")
ENGINES = {"training": ("torch",), "inference": ("hf-static", "hf-generate", "vllm")}
DEFAULT_PHASES = {"training": ["train"], "inference": ["prefill", "decode"]}
_USER_WORKLOAD = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

Phase = Literal["train", "prefill", "decode", "serve"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

    @property
    def is_user(self) -> bool:
        return ":" in self.name

    @property
    def resolved_engine(self) -> str:
        if self.engine is not None:
            return self.engine
        return "torch" if self.name == "training" else "hf-static"

    @property
    def resolved_phases(self) -> tuple[str, ...]:
        return tuple(self.phases or DEFAULT_PHASES.get(self.name, ["train"]))
