"""Simulated parts, loaded from profiles/gpus/*.toml.

Every physical parameter in a part file carries its source in the file's ``[sources]`` table
(a public figure, "fitted to docs/calibration.md (<row>)", an "estimate" with its reasoning, or
"assumed"), and loading refuses a
parameter without one, so the simulator's numbers stay traceable.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import ProfileError, UsageError, first_validation_error

GPU_PROFILE_DIR = Path(str(resources.files("profiles"))) / "gpus"  # shipped in the wheel


class PartSpec(BaseModel):
    """Parameters of one simulated GPU model. Power in W, clocks in MHz, voltages in V."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    architecture: str
    memory_total_mb: int = Field(gt=0)
    # power limits
    power_min_w: float = Field(gt=0)
    power_max_w: float = Field(gt=0)
    power_default_w: float = Field(gt=0)
    # clocks
    sm_clock_min_mhz: int = Field(gt=0)
    sm_clock_max_mhz: int = Field(gt=0)
    sm_clock_step_mhz: int = Field(gt=0)
    idle_sm_clock_mhz: int = Field(gt=0)
    mem_clock_mhz: int = Field(gt=0)
    # throughput roofline
    peak_bf16_tflops: float = Field(gt=0)
    mem_bandwidth_tbs: float = Field(gt=0)
    # voltage-frequency curve: V = v_min below vf_knee_mhz, rising as a power law to v_max at max clock
    v_min: float = Field(gt=0)
    v_max: float = Field(gt=0)
    vf_knee_mhz: int = Field(gt=0)
    vf_exponent: float = Field(gt=0)
    # power model
    idle_base_w: float = Field(ge=0)
    p0_base_w: float = Field(ge=0)
    clock_tree_w: float = Field(ge=0)
    busy_dyn_w: float = Field(ge=0)
    compute_dyn_w: float = Field(ge=0)
    #: HBM/GDDR device and PHY power at full bandwidth: the only clock-independent dynamic term
    hbm_power_w: float = Field(ge=0)
    #: on-chip data movement (L2, crossbar, load/store) at full bandwidth and v_max
    onchip_mem_w: float = Field(ge=0)
    #: SM/L2 clock below which achieved DRAM bandwidth falls with the clock
    bw_knee_mhz: float = Field(gt=0)
    leak_w: float = Field(ge=0)
    leak_ref_c: float
    leak_per_c: float = Field(ge=0)
    overhead_clock_share: float = Field(ge=0, le=1)
    p0_hold_s: float = Field(ge=0)
    # power-cap controller
    cap_settle_s: float = Field(gt=0)  # slow loop: closes its error over this time, holding the mean
    cap_filter_s: float = Field(gt=0)  # ... over a moving window this long
    cap_fast_settle_s: float = Field(gt=0)  # fast loop: bounds bursts
    cap_fast_filter_s: float = Field(gt=0)
    cap_burst_margin: float = Field(ge=0)  # how far above the limit the fast loop lets a burst go
    cap_peak_ratio: float = Field(gt=1)  # instantaneous power the board's fast limiter allows, x power_max_w
    #: while a cap binds, the controller holds its mean by hopping between V-f states this far above and
    #: below its ceiling (a locked clock runs steady)
    cap_dither_mhz: float = Field(ge=0)
    # thermal
    ambient_c: float
    thermal_resistance_c_per_w: float = Field(gt=0)
    thermal_tau_s: float = Field(gt=0)
    slowdown_c: float
    # sensors
    sensor_update_s: float = Field(gt=0)
    instant_window_s: float = Field(gt=0)
    average_window_s: float = Field(gt=0)
    energy_update_s: float = Field(gt=0)
    energy_read_cost_s: float = Field(ge=0)
    cheap_read_cost_s: float = Field(ge=0)
    samples_period_s: float = Field(gt=0)
    samples_depth: int = Field(gt=0)
    has_energy_counter: bool
    has_instant_power: bool
    has_power_samples: bool
    has_memory_power: bool
    memory_power_idle_w: float = Field(ge=0)
    # board-to-board variation (standard deviations)
    leak_sigma: float = Field(ge=0)
    vf_offset_sigma_v: float = Field(ge=0)
    sensor_gain_sigma: float = Field(ge=0)
    speed_sigma: float = Field(ge=0)  # sustained speed at equal clock and power (process, memory, cooling)
    step_jitter_sigma: float = Field(ge=0)
    sources: dict[str, str]

    @model_validator(mode="after")
    def _checks(self) -> PartSpec:
        if not self.power_min_w <= self.power_default_w <= self.power_max_w:
            raise ValueError("need power_min_w <= power_default_w <= power_max_w")
        if not self.sm_clock_min_mhz < self.sm_clock_max_mhz:
            raise ValueError("need sm_clock_min_mhz < sm_clock_max_mhz")
        if not self.v_min < self.v_max:
            raise ValueError("need v_min < v_max")
        missing = sorted(set(type(self).model_fields) - {"id", "name", "architecture", "sources"}
                         - set(self.sources))
        if missing:
            raise ValueError(f"parameters without a source: {', '.join(missing)}")
        return self


def available_parts() -> list[str]:
    return sorted(p.stem for p in GPU_PROFILE_DIR.glob("*.toml"))


@cache
def load_part(part_id: str) -> PartSpec:
    """Load one part file by id (file stem) or path."""
    path = Path(part_id)
    if path.suffix != ".toml":
        path = GPU_PROFILE_DIR / f"{part_id}.toml"
    if not path.exists():
        raise UsageError(f"unknown simulated GPU '{part_id}'; available: {', '.join(available_parts())}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: not valid TOML ({e})") from e
    flat = {**raw.get("part", {}), **raw.get("params", {}), "sources": raw.get("sources", {})}
    try:
        return PartSpec.model_validate(flat)
    except ValidationError as e:
        where, what = first_validation_error(e)
        raise ProfileError(f"{path}: '{where or '(file)'}': {what}") from e
