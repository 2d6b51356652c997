"""Benchmark profiles: ``profiles/<name>.toml`` → validated pydantic models.

A profile holds the workload (``[workload]``) and the sweep plan's defaults (``[sweep]``). Every
key is checked: an unknown key, a wrong type or an impossible value is refused with one line
that names the file, the key and what is allowed (``ProfileError``), never a traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import ProfileError
from workloads.config import WorkloadConfig

#: where the named profiles live (the repository's profiles/ directory)
PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
