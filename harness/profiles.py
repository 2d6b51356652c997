"""Benchmark profiles: ``profiles/<name>.toml`` → validated pydantic models.

A profile holds the workload (``[workload]``) and the sweep plan's defaults (``[sweep]``). Every
key is checked: an unknown key, a wrong type or an impossible value is refused with one line
that names the file, the key and what is allowed (``ProfileError``), never a traceback.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import ProfileError, UsageError
from workloads.config import WorkloadConfig

#: where the named profiles live: the ``profiles`` data package (the repository's profiles/ folder,
#: shipped inside the wheel)
PROFILE_DIR = Path(str(resources.files("profiles")))
#: the most settings, repeats or batch sizes one sweep plans (a typo like 1e9 must not fill memory)
MAX_SETTINGS = 500
MAX_REPEATS = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SweepConfig(_Strict):
    """The sweep plan's defaults (the sweep reads these; the CLI may override them).

    The knob's points are given one way at most: ``points`` (count, spread evenly over the
    settable range), ``step`` (W or MHz), ``values`` (W or MHz) or ``percent`` (of the maximum).
    """

    knob: Literal["power-limit", "sm-clock"] = "power-limit"
    points: int | None = Field(None, ge=1, le=MAX_SETTINGS)
    step: float | None = Field(None, gt=0, allow_inf_nan=False)
    values: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(None, min_length=1,
                                                                              max_length=MAX_SETTINGS)
    percent: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(None, min_length=1,
                                                                               max_length=MAX_SETTINGS)
    batch_sizes: list[int] | None = Field(None, min_length=1, max_length=MAX_SETTINGS)  # one curve per batch size
    repeats: int = Field(3, ge=1, le=MAX_REPEATS)
    order: Literal["descending", "ascending", "interleaved"] = "interleaved"
    warmup_min_s: float = Field(5.0, ge=0, le=86400, allow_inf_nan=False)
    warmup_max_s: float = Field(120.0, gt=0, le=86400, allow_inf_nan=False)
    window_s: float = Field(30.0, gt=0, le=86400, allow_inf_nan=False)
    # --search max-q: the practical margin (% of the best tokens/J) the chosen setting must be within, and
    # the device-time budget as a share of the knob's equivalent 1-repeat grid
    margin_pct: float = Field(1.0, gt=0, le=50, allow_inf_nan=False)
    search_budget: float = Field(1 / 3, gt=0, le=10, allow_inf_nan=False)
    max_time_s: float | None = Field(None, gt=0, allow_inf_nan=False)  # device-time budget of one invocation
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
        raise ProfileError(f"{path}: not valid TOML: {e}") from e
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from e
    data.setdefault("name", path.stem)
    return parse_profile(data, source=str(path))


def parse_profile(data: dict[str, Any], source: str = "<profile>") -> Profile:
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        raise ProfileError(f"{source}: {format_errors(e)}") from e


#: ``[sweep]`` key -> the option of `tokbench sweep` that overrides it
CLI_OPTIONS = {"knob": "--knob", "points": "--points", "step": "--step", "values": "--values", "percent": "--percent",
               "batch_sizes": "--batch-sizes", "repeats": "--repeats", "order": "--order",
               "warmup_min_s": "--warmup-min", "warmup_max_s": "--warmup-max", "window_s": "--window",
               "margin_pct": "--margin-pct", "search_budget": "--search-budget", "max_time_s": "--max-time"}
_POINT_KEYS = ("points", "step", "values", "percent")


def with_options(base: SweepConfig, **options: Any) -> SweepConfig:
    """The profile's ``[sweep]`` with the command line's options on top, validated by the same model,
    so an option is held to exactly the rules of its profile key; errors name the option."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = set(given) - set(CLI_OPTIONS)
    if unknown:
        raise ValueError(f"internal: not sweep options: {sorted(unknown)}")
    ways = [CLI_OPTIONS[k] for k in _POINT_KEYS if k in given]
    if len(ways) > 1:
        raise UsageError(f"give the knob's values one way only (got {' and '.join(ways)})")
    data = base.model_dump()
    if ways:
        data.update(dict.fromkeys(_POINT_KEYS))
    data.update({k: list(v) if isinstance(v, tuple) else v for k, v in given.items()})
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as e:
        raise UsageError(format_errors(e, names=CLI_OPTIONS)) from e


def format_errors(e: ValidationError, names: dict[str, str] | None = None) -> str:
    """Pydantic's errors as one line: ``key: what is wrong (what is allowed)``; ``names`` renames keys
    (a command line's options)."""
    parts = []
    for err in e.errors(include_url=False):
        loc = ".".join(str(x) for x in err["loc"])
        if names:
            loc = names.get(str(err["loc"][0]), loc) if err["loc"] else loc
        kind, msg = err["type"], err["msg"]
        if kind == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            allowed = ", ".join(parent.model_fields) if parent else ""
            parts.append(f"{loc}: unknown key; allowed keys: {allowed}")
        elif kind == "value_error":
            # our validators put the key first ("key: problem"); prefix the section
            text = msg.removeprefix("Value error, ")
            for key, option in (names or {}).items():
                if "_" in key:  # a key no prose word shares (warmup_min_s)
                    text = text.replace(key, option)
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
