"""The site file: a factory's power, capacity, prices, battery and generation, as a validated TOML.

Operators buy power, not GPUs, so capacity may be given as a power budget, a GPU count, or the units
factories are bought in (racks, scalable units) with their own CPU, network and cooling power.
Paths in the file (curves, grid) are relative to the site file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import ProfileError, first_validation_error

Provision = Literal["mean", "p99", "max_1s"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Unit(_Strict):
    """A rack or scalable unit: the GPUs it holds and the non-GPU power it draws while it runs."""

    name: str
    count: int = Field(gt=0)
    gpus_per_unit: int = Field(gt=0)
    overhead_w_per_unit: float = Field(0.0, ge=0)


class WorkloadShare(_Strict):
    """One workload of the mix: its curve file and the share of the GPUs that run it."""

    curve: Path
    phase: str | None = None
    batch_size: int | None = None
    share: float = Field(1.0, gt=0, le=1)
    #: the [[units]] kind (by name) whose GPUs run this workload: a site of several GPU generations
    #: names one per workload, and shares then split each kind's GPUs among the workloads naming it
    unit: str | None = None
    #: a serving workload plans at this time-per-output-token SLO: at each setting, the batch from the
    #: curve file's points that makes the most tokens/s within it (settings where none does drop out)
    tpot_ms: float | None = Field(None, gt=0)
    #: one synchronous job (data-parallel training): every GPU at one setting, all running or all
    #: parked, since the job runs at its slowest GPU's pace; False: independent replicas (mixes allowed)
    synchronous: bool = False


class Capex(_Strict):
    per_gpu: float = Field(ge=0)
    amortisation_years: float = Field(gt=0)


class Battery(_Strict):
    energy_mwh: float = Field(gt=0)
    charge_mw: float = Field(gt=0)
    discharge_mw: float = Field(gt=0)
    round_trip_efficiency: float = Field(0.9, gt=0, le=1)
    soc_min: float = Field(0.0, ge=0, lt=1)
    soc_max: float = Field(1.0, gt=0, le=1)
    soc_initial: float = Field(0.5, ge=0, le=1)
    #: end the horizon at the state of charge it started with (no free energy from the first charge)
    cyclic: bool = True
    #: count charging against the facility budget (power at the meter = GPUs + charging); False: the
    #: battery charges from the grid connection beside the budget, so import may exceed it
    charge_within_budget: bool = False

    @model_validator(mode="after")
    def _soc(self) -> Battery:
        if self.soc_max <= self.soc_min:
            raise ValueError("soc_max must exceed soc_min")
        if not self.soc_min <= self.soc_initial <= self.soc_max:
            raise ValueError("soc_initial must lie between soc_min and soc_max")
        return self


class Generation(_Strict):
    """On-site generation: a constant capacity (gas) or a column of MW in the grid file (solar, wind)."""

    name: str
    capacity_mw: float | None = Field(None, ge=0)
    column: str | None = None
    marginal_cost_per_mwh: float = 0.0
    carbon_kg_per_mwh: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _source(self) -> Generation:
        if (self.capacity_mw is None) == (self.column is None):
            raise ValueError("give exactly one of capacity_mw or column")
        return self


class GridLink(_Strict):
    file: Path | None = None
    #: the connection's import limit; without it the grid file's available_mw governs alone (and
    #: where the file has none, the power budget, else the fleet at Max-P plus battery charging)
    import_mw: float | None = Field(None, gt=0)
    #: most the site may send back during a stress event (0: never)
    export_mw: float = Field(0.0, ge=0)
    #: intervals priced at or above this are stress events (besides the file's `event` column)
    stress_price_per_mwh: float | None = None
    #: what a MWh sent back in stress earns (default: the interval's price); under the tokens
    #: objective it is weighed against tokens at token_value_per_mtok
    export_value_per_mwh: float | None = None
    #: MW the site must send back in every stress interval (a demand-response commitment), under any objective
    export_required_mw: float = Field(0.0, ge=0)
    #: most the site's net grid power (import - export) may change from one interval to the next, MW
    ramp_mw_per_interval: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _export(self) -> GridLink:
        if self.export_required_mw > self.export_mw:
            raise ValueError("export_required_mw cannot exceed export_mw")
        return self


class Site(_Strict):
    name: str
    #: facility power at the meter (PUE included), MW
    power_budget_mw: float | None = Field(None, gt=0)
    gpus: int | None = Field(None, gt=0)
    units: list[Unit] = Field(default_factory=list)
    pue: float = Field(1.0, ge=1.0)
    #: non-GPU IT power per GPU while it runs (CPU, memory, NIC) on top of what units carry, W
    overhead_w_per_gpu: float = Field(0.0, ge=0)
    provision: Provision = "p99"
    #: the setting that sizes the fleet when only a budget is given: max_p, max_q, default or watts
    design_setting: Literal["max_p", "max_q", "default"] | float = "max_p"
    #: most segments of each workload's concave hull kept as LP links (a fine fit grid is thinned)
    max_segments: int = Field(12, ge=1, le=200)
    #: what is parked and powered as one: a GPU, or a whole unit (node) of the site's [[units]]
    schedule_unit: Literal["gpu", "unit"] = "gpu"
    #: solve whole units (HiGHS MIP) instead of the LP and its rounding; synchronous jobs always are
    integer: bool = False
    price_per_mwh: float = 0.0
    carbon_kg_per_mwh: float = Field(0.0, ge=0)
    token_target_gtok: float | None = Field(None, gt=0)
    #: what a million tokens is worth; lets the cost objective trade tokens against energy
    token_value_per_mtok: float | None = Field(None, gt=0)
    capex: Capex | None = None
    workloads: list[WorkloadShare] = Field(min_length=1)
    grid: GridLink = Field(default_factory=GridLink)
    battery: Battery | None = None
    generation: list[Generation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _capacity(self) -> Site:
        if self.gpus is not None and self.units:
            raise ValueError("give gpus or units, not both")
        if self.gpus is None and not self.units and self.power_budget_mw is None:
            raise ValueError("give power_budget_mw, gpus or units")
        named = [w.unit for w in self.workloads if w.unit is not None]
        if named and len(named) != len(self.workloads):
            raise ValueError("name a unit for every workload or for none")
        kinds = {u.name for u in self.units}
        for name in named:
            if name not in kinds:
                raise ValueError(f"workload names unit '{name}', which is not among the [[units]]")
        for kind in dict.fromkeys(named) if named else [None]:
            total = sum(w.share for w in self.workloads if w.unit == kind)
            if abs(total - 1.0) > 1e-6:
                of = f" of unit '{kind}'" if kind else ""
                raise ValueError(f"workload shares{of} must sum to 1 (they sum to {total:g})")
        if self.schedule_unit == "unit" and not self.units:
            raise ValueError('schedule_unit = "unit" needs [[units]]')
        if self.schedule_unit == "unit" and not named and len({u.gpus_per_unit for u in self.units}) != 1:
            raise ValueError('schedule_unit = "unit" needs [[units]] that all hold the same number of GPUs')
        if self.grid.export_value_per_mwh is not None and self.token_value_per_mtok is None:
            raise ValueError(
                "export_value_per_mwh needs token_value_per_mtok (to weigh energy sent back against tokens)"
            )
        names = [g.name for g in self.generation]
        if len(set(names)) != len(names):
            raise ValueError("generation names must be unique")
        return self

    @property
    def gpu_count(self) -> int | None:
        """GPUs installed, when the file says (directly or through its units)."""
        if self.gpus is not None:
            return self.gpus
        if self.units:
            return sum(u.count * u.gpus_per_unit for u in self.units)
        return None

    def unit_of(self, w: WorkloadShare) -> Unit | None:
        """The unit kind a workload runs on: the one it names, else the first (all one size when
        the site schedules by unit without naming them)."""
        if w.unit is not None:
            return next(u for u in self.units if u.name == w.unit)
        return self.units[0] if self.units else None

    def overhead_w_for(self, w: WorkloadShare) -> float:
        """Non-GPU IT power per running GPU of this workload: its own unit's when it names one."""
        if w.unit is None:
            return self.it_overhead_w_per_gpu
        u = self.unit_of(w)
        return self.overhead_w_per_gpu + u.overhead_w_per_unit / u.gpus_per_unit

    @property
    def it_overhead_w_per_gpu(self) -> float:
        """Non-GPU IT power per running GPU: the per-GPU figure plus the units' share, GPU-weighted."""
        if not self.units:
            return self.overhead_w_per_gpu
        gpus = sum(u.count * u.gpus_per_unit for u in self.units)
        unit_w = sum(u.count * u.overhead_w_per_unit for u in self.units)
        return self.overhead_w_per_gpu + unit_w / gpus


def load_site(path: Path) -> Site:
    """Read and validate a site file; paths inside it become absolute. Failures are one line."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such site file") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ProfileError(f"{path}: not a readable TOML site file ({e})") from e
    try:
        site = Site.model_validate(raw)
    except ValidationError as e:
        where, what = first_validation_error(e)
        raise ProfileError(f"{path}: invalid site file at '{where or 'site'}': {what}") from e
    base = path.resolve().parent
    workloads = [w.model_copy(update={"curve": (base / w.curve).resolve()}) for w in site.workloads]
    grid = site.grid
    if grid.file is not None:
        grid = grid.model_copy(update={"file": (base / grid.file).resolve()})
    return site.model_copy(update={"workloads": workloads, "grid": grid})
