"""Benchmark profiles: ``profiles/<name>.toml`` → validated pydantic models.

A profile holds the workload (``[workload]``) and the sweep plan's defaults (``[sweep]``). Every
key is checked: an unknown key, a wrong type or an impossible value is refused with one line
that names the file, the key and what is allowed (``ProfileError``), never a traceback.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import ProfileError

#: where the named profiles live (the repository's profiles/ directory)
PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"

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
        from workloads import models

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


class SweepConfig(_Strict):
    """The sweep plan's defaults (the sweep reads these; the CLI may override them).

    The knob's points are given one way at most: ``points`` (count, spread evenly over the
    settable range), ``step`` (W or MHz), ``values`` (W or MHz) or ``percent`` (of the maximum).
    """

    knob: Literal["power-limit", "sm-clock"] = "power-limit"
    points: int | None = Field(None, ge=1)
    step: float | None = Field(None, gt=0)
    values: list[float] | None = Field(None, min_length=1)
    percent: list[float] | None = Field(None, min_length=1)
    batch_sizes: list[int] | None = Field(None, min_length=1)  # inference: one curve per batch size
    repeats: int = Field(3, ge=1)
    order: Literal["descending", "ascending", "interleaved"] = "interleaved"
    warmup_min_s: float = Field(5.0, ge=0)
    warmup_max_s: float = Field(120.0, gt=0)
    window_s: float = Field(30.0, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        given = [k for k in ("points", "step", "values", "percent") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(
                f"{' and '.join(given)}: give the knob's points one way only "
                "(points, step, values or percent)"
            )
        if self.values is not None and any(v <= 0 for v in self.values):
            raise ValueError("values: every value must be > 0 (watts or MHz)")
        if self.percent is not None and any(not 0 < p <= 100 for p in self.percent):
            raise ValueError("percent: every value must be in (0, 100]")
        if self.batch_sizes is not None and any(b < 1 for b in self.batch_sizes):
            raise ValueError("batch_sizes: every batch size must be >= 1")
        if self.warmup_min_s > self.warmup_max_s:
            raise ValueError(
                f"warmup_min_s: {self.warmup_min_s} exceeds warmup_max_s {self.warmup_max_s}"
            )
        return self


class Profile(_Strict):
    name: str = ""
    description: str = ""
    workload: WorkloadConfig
    sweep: SweepConfig = Field(default_factory=SweepConfig)


def profile_path(name_or_path: str | Path) -> Path:
    """A profile file: an existing path, or ``profiles/<name>.toml``."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ProfileError(f"{path}: profile file not found")
        return path
    named = PROFILE_DIR / f"{name_or_path}.toml"
    if not named.is_file():
        available = ", ".join(list_profiles())
        raise ProfileError(f"unknown profile {str(name_or_path)!r}; available: {available}")
    return named


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """Read and validate a profile; every failure is one ``ProfileError`` line."""
    path = profile_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    data.setdefault("name", path.stem)
    return parse_profile(data, source=str(path))


def parse_profile(data: dict[str, Any], source: str = "<profile>") -> Profile:
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        raise ProfileError(f"{source}: {format_errors(e)}") from None


def format_errors(e: ValidationError) -> str:
    """Pydantic's errors as one line: ``key: what is wrong (what is allowed)``."""
    parts = []
    for err in e.errors(include_url=False):
        loc = ".".join(str(x) for x in err["loc"])
        kind, msg = err["type"], err["msg"]
        if kind == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            allowed = ", ".join(parent.model_fields) if parent else ""
            parts.append(f"{loc}: unknown key; allowed keys: {allowed}")
        elif kind == "value_error":
            # our validators put the key first ("key: problem"); prefix the section
            text = msg.removeprefix("Value error, ")
            parts.append(f"{loc + '.' if loc else ''}{text}")
        elif kind == "missing":
            parts.append(f"{loc}: required key is missing")
        else:
            parts.append(f"{loc}: {msg} (got {err.get('input')!r})")
    return "; ".join(parts)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Profile
    for key in loc:
        field = model.model_fields.get(str(key))
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model
