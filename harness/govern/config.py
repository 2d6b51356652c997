"""The governor's config file (TOML): how signals become power targets, and how fast it may move.

Every key has a documented default (docs/govern.md), so an empty file - or none - is valid.
Targets derived from a level or a price are fractions of the node's *reference* power: the named
GPUs at the curve's default setting (the draw a utility's baseline sees).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import TokbenchError, first_validation_error


class GovernConfigError(TokbenchError):
    """A governor config file that cannot be read or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceBand(_Strict):
    """At a price of ``at_least`` $/MWh or more, run at ``fraction`` of the reference power."""

    at_least: float
    fraction: float = Field(ge=0.0, le=1.0)


def _default_levels() -> dict[int, float]:
    return {0: 1.0, 1: 0.75, 2: 0.5, 3: 0.3}


def _default_prices() -> list[PriceBand]:
    return [PriceBand(at_least=150.0, fraction=0.8), PriceBand(at_least=300.0, fraction=0.6),
            PriceBand(at_least=1000.0, fraction=0.4)]


class GovernConfig(_Strict):
    #: seconds between decisions (device clock)
    period_s: float = Field(0.5, gt=0.0, le=60.0)
    #: share of the target kept free for telemetry noise
    margin: float = Field(0.02, ge=0.0, lt=0.5)
    #: a GPU's setting is left alone when the change would move its curve power by less than this
    #: share (and the target did not change): fewer changes, longer measurements
    deadband: float = Field(0.01, ge=0.0, lt=0.2)
    #: how fast the node's expected power may rise / fall, W per second per node
    ramp_up_w_per_s: float = Field(200.0, gt=0.0)
    ramp_down_w_per_s: float = Field(5000.0, gt=0.0)
    #: after a change, seconds before the measured/curve ratio is learned again
    settle_s: float = Field(1.5, ge=0.0)
    #: weight of the newest measured/curve ratio
    ratio_gain: float = Field(0.5, gt=0.0, le=1.0)
    #: the ratio is kept in this range (below 1: trust a board that draws less than its curve)
    ratio_min: float = Field(1.0, gt=0.0)
    ratio_max: float = Field(1.5, gt=0.0)
    #: lowest setting the governor will choose (W or MHz; default: the part's minimum)
    floor_setting: float | None = None
    #: a signal older than this (s) is stale: a feed that stopped updating, an unreachable VTN
    stale_after_s: float = Field(120.0, gt=0.0)
    #: what to do once the signal is stale: keep the last target, or return to the default setting
    on_stale: Literal["hold", "default"] = "hold"
    #: OpenADR simple levels (and feed "level") -> fraction of the reference power
    levels: dict[int, float] = Field(default_factory=_default_levels)
    #: price bands, $/MWh -> fraction of the reference power (the highest band reached applies)
    prices: list[PriceBand] = Field(default_factory=_default_prices)

    @field_validator("levels")
    @classmethod
    def _fractions(cls, v: dict[int, float]) -> dict[int, float]:
        for level, frac in v.items():
            if not 0.0 <= frac <= 1.0:
                raise ValueError(f"level {level}: fraction must be in 0..1, got {frac}")
        return v

    def fraction_for_level(self, level: float) -> float:
        """Fraction for a level; an unknown level takes the next lower one configured."""
        if not math.isfinite(level):
            raise ValueError(f"level {level} is not a number")
        known = sorted(k for k in self.levels if k <= level)
        if not known:
            raise ValueError(f"level {level:g} is below every configured level")
        return self.levels[known[-1]]

    def fraction_for_price(self, price: float) -> float:
        if not math.isfinite(price):
            raise ValueError(f"price {price} is not a number")
        frac = 1.0
        for band in sorted(self.prices, key=lambda b: b.at_least):
            if price >= band.at_least:
                frac = band.fraction
        return frac


def load_config(path: str | Path | None) -> GovernConfig:
    """The config at ``path`` (every default when None); failures are one-line errors."""
    if path is None:
        return GovernConfig()
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise GovernConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise GovernConfigError(f"{path}: not valid TOML: {e}") from None
    if isinstance(raw.get("levels"), dict):
        try:
            raw["levels"] = {int(k): v for k, v in raw["levels"].items()}
        except ValueError:
            raise GovernConfigError(f"{path}: levels: keys must be integers") from None
    try:
        return GovernConfig.model_validate(raw)
    except ValidationError as e:
        where, what = first_validation_error(e)
        raise GovernConfigError(f"{path}: invalid governor config at '{where}': {what}") from None
