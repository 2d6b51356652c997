"""The calibrated-curve file: what `tokbench export` writes and planners read.

One versioned schema (documented in docs/curve-schema.md), validated with pydantic both when it
is written and when it is read, so a damaged, foreign or future file is refused with a clear
message instead of feeding a planner wrong numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import CurveFileError, first_validation_error

CURVE_SCHEMA = "tokbench.curve"
CURVE_SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartIdentity(_Strict):
    name: str
    architecture: str = ""
    backend: Literal["nvml", "sim", "fleet"] = "sim"
    driver: str = ""
    uuids: list[str] = Field(default_factory=list)
    power_limit_min_w: float
    power_limit_max_w: float
    power_limit_default_w: float
    max_sm_clock_mhz: int = 0


class WorkloadIdentity(_Strict):
    name: str
    kind: str
    engine: str
    model: str
    precision: str
    batch_size: int
    seq_len: int = 0
    input_len: int = 0
    output_len: int = 0
    params: int = 0


class CurvePoint(_Strict):
    """One measured point, averaged over its repeats."""

    setting: float
    enforced: float | None = None
    phase: str
    batch_size: int
    repeats: int = 1
    tokens_per_s: float
    tokens_per_s_ci: float = 0.0  # half-width of the 95% interval
    tokens_per_j: float
    tokens_per_j_ci: float = 0.0
    power_mean_w: float
    power_p99_w: float | None = None
    power_max_1s_w: float | None = None
    sm_clock_mean_mhz: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    tokens_per_s_per_user: float | None = None
    flags: list[str] = Field(default_factory=list)
    valid: bool = True
    # serving under load (endpoint runs, docs/serving.md); null otherwise
    output_tokens_per_s: float | None = None
    output_tokens_per_j: float | None = None
    goodput_tokens_per_s: float | None = None
    goodput_tokens_per_j: float | None = None
    ttft_ms_p99: float | None = None
    tpot_ms_p99: float | None = None


class CurveFit(_Strict):
    """A monotone fit of throughput and power against the setting, on a grid inside the part's
    range, per (phase, batch)."""

    phase: str
    batch_size: int
    method: str
    settings: list[float]
    tokens_per_s: list[float]
    power_mean_w: list[float]
    power_p99_w: list[float] | None = None
    power_max_1s_w: list[float] | None = None
    residuals_tokens_per_s: list[float] = Field(default_factory=list)
    #: the measured settings the residuals belong to (measured mean - fit), ascending
    residual_settings: list[float] = Field(default_factory=list)
    residuals_power_mean_w: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _lengths(self) -> CurveFit:
        n = len(self.settings)
        if n < 1 or len(self.tokens_per_s) != n or len(self.power_mean_w) != n:
            raise ValueError("fit arrays must be non-empty and of equal length")
        for name in ("power_p99_w", "power_max_1s_w"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise ValueError(f"fit {name} must have one value per setting")
        r = len(self.residual_settings)
        if r and (len(self.residuals_tokens_per_s) != r
                  or (self.residuals_power_mean_w and len(self.residuals_power_mean_w) != r)):
            raise ValueError("fit residuals must have one value per residual setting")
        if any(b <= a for a, b in zip(self.settings, self.settings[1:])):
            raise ValueError("fit settings must be strictly ascending")
        return self


class SettingRange(_Strict):
    """A range of settings that cannot be told apart from the best."""

    phase: str
    batch_size: int
    lo: float
    hi: float
    best: float
    value: float  # tokens/J for Max-Q, tokens/s for Max-P, at ``best``


class LatencyPoint(_Strict):
    """Max-Q under a latency target."""

    tpot_ms_target: float
    ttft_ms_target: float | None = None
    setting: float
    batch_size: int
    tokens_per_j: float
    tokens_per_s: float
    tpot_ms: float
    ttft_ms: float | None = None
    tokens_per_s_per_user: float | None = None  # optional: absent in files written before it
    goodput_tokens_per_j: float | None = None  # serving under load only


class Provenance(_Strict):
    tool_version: str
    run_ids: list[str]
    created: str
    host: str = ""
    command: str = ""


class CurveFile(_Strict):
    schema_: Literal["tokbench.curve"] = Field(CURVE_SCHEMA, alias="schema")
    schema_version: int = CURVE_SCHEMA_VERSION
    knob: Literal["power_limit_w", "sm_clock_mhz"]
    units: dict[str, str] = Field(
        default_factory=lambda: {
            "setting": "W for power_limit_w, MHz for sm_clock_mhz",
            "tokens_per_s": "tokens/s per GPU",
            "tokens_per_j": "tokens/J per GPU",
            "power": "W per GPU",
            "latency": "ms",
        }
    )
    part: PartIdentity
    workload: WorkloadIdentity
    idle_power_w: float | None = None
    points: list[CurvePoint]
    fits: list[CurveFit]
    max_q: list[SettingRange] = Field(default_factory=list)
    max_p: list[SettingRange] = Field(default_factory=list)
    latency_points: list[LatencyPoint] = Field(default_factory=list)
    provenance: Provenance

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _version(self) -> CurveFile:
        if self.schema_version != CURVE_SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported (this tokbench reads "
                f"version {CURVE_SCHEMA_VERSION})"
            )
        return self

    def fit_for(self, phase: str | None = None, batch_size: int | None = None) -> CurveFit:
        """The fit of one phase and batch (the only one, when the file holds one)."""
        fits = [
            f
            for f in self.fits
            if (phase is None or f.phase == phase) and (batch_size is None or f.batch_size == batch_size)
        ]
        if not fits:
            raise CurveFileError(f"curve file has no fit for phase={phase} batch={batch_size}")
        return fits[0]


def save_curve(curve: CurveFile, path: Path) -> None:
    path.write_text(json.dumps(curve.model_dump(mode="json", by_alias=True), indent=2) + "\n")


def load_curve(path: Path) -> CurveFile:
    """Read and validate a curve file; every failure is a one-line ``CurveFileError``."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise CurveFileError(f"{path}: no such curve file") from err
    except (OSError, json.JSONDecodeError) as e:
        raise CurveFileError(f"{path}: not a readable JSON curve file ({e})") from e
    if not isinstance(raw, dict) or raw.get("schema") != CURVE_SCHEMA:
        raise CurveFileError(f"{path}: not a tokbench curve file (schema must be '{CURVE_SCHEMA}')")
    if raw.get("schema_version") != CURVE_SCHEMA_VERSION:
        raise CurveFileError(
            f"{path}: curve schema version {raw.get('schema_version')!r} is not supported "
            f"(this tokbench reads version {CURVE_SCHEMA_VERSION})"
        )
    try:
        return CurveFile.model_validate(raw)
    except ValidationError as e:
        where, what = first_validation_error(e)
        raise CurveFileError(f"{path}: invalid curve file at '{where}': {what}") from e
