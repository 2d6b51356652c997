"""The horizon the schedule is planned over, and what one schedule asks for.

``Horizon`` aligns the grid signal and the site's resources as arrays, one value per interval;
``Scenario`` says what to optimise (and, for the comparison policies, which settings are allowed);
``weights`` turns an objective into per-interval prices. Both the HiGHS model (lp.py) and the PyPSA
reference (network.py) read these, so the two solve the same problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.errors import UsageError
from harness.planner.capacity import Fleet
from harness.planner.grid import GridSignal
from harness.planner.site import Site

OBJECTIVES = ("tokens", "cost", "carbon")
#: weight of money in the tokens objective: only breaks ties between schedules with the same tokens
TIE_BREAK = 1e-6
#: export is paid the interval price less this, so importing only to export never pays
EXPORT_SPREAD = 0.01


@dataclass(frozen=True)
class Horizon:
    """The grid signal and site resources as aligned arrays, one value per interval."""

    index: pd.DatetimeIndex
    step_h: float
    import_mw: np.ndarray
    price: np.ndarray
    carbon: np.ndarray
    stress: np.ndarray
    generation: tuple[tuple[str, np.ndarray, float, float], ...]  # name, MW available, $/MWh, kg/MWh

    @property
    def generation_mw(self) -> np.ndarray:
        return sum((g[1] for g in self.generation), np.zeros(len(self.index)))

    @property
    def supply_mw(self) -> np.ndarray:
        return self.import_mw + self.generation_mw


def build_horizon(site: Site, fleet: Fleet, grid: GridSignal) -> Horizon:
    n = len(grid)
    avail = grid.column("available_mw")
    if avail is None:  # the grid offers whatever the connection carries
        charge = site.battery.charge_mw if site.battery else 0.0
        cap = site.grid.import_mw or fleet.budget_mw or fleet.draw_mw("max_p") + charge
        import_mw = np.full(n, cap)
    else:
        import_mw = avail if site.grid.import_mw is None else np.minimum(avail, site.grid.import_mw)
    price = grid.column("price_per_mwh")
    price = np.full(n, site.price_per_mwh) if price is None else price
    carbon = grid.column("carbon_kg_per_mwh")
    carbon = np.full(n, site.carbon_kg_per_mwh) if carbon is None else carbon
    stress = np.zeros(n, dtype=bool)
    event = grid.column("event")
    if event is not None:
        stress |= event > 0.5
    if site.grid.stress_price_per_mwh is not None:
        stress |= price >= site.grid.stress_price_per_mwh
    gens = []
    for g in site.generation:
        mw = np.full(n, float(g.capacity_mw)) if g.column is None else grid.column(g.column)
        gens.append((g.name, mw, g.marginal_cost_per_mwh, g.carbon_kg_per_mwh))
    return Horizon(grid.frame.index, grid.step_h, import_mw, price, carbon, stress, tuple(gens))


@dataclass(frozen=True)
class Scenario:
    """One schedule to solve. ``only`` pins every GPU to one named setting (max_p, max_q, default),
    switching GPUs off to fit; ``import_mw`` replaces the grid's availability (what-ifs); a ``soft``
    target may be missed (a comparison that cannot reach it says so instead of failing the plan)."""

    key: str
    objective: str = "tokens"
    only: str | None = None
    target_gtok: float | None = None
    import_mw: np.ndarray | None = field(default=None, compare=False)
    soft: bool = False


@dataclass(frozen=True)
class ScenarioResult:
    key: str
    objective: str
    frame: pd.DataFrame  # one row per interval
    totals: dict[str, float]
    objective_value: float = float("nan")  # the solver's, in the objective's own units


@dataclass(frozen=True)
class Weights:
    """Objective coefficients per MWh (import, export value, each generator) and per Gtok made."""

    import_: np.ndarray
    export: np.ndarray
    generation: list[float]
    reward: float


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise UsageError(f"unknown objective '{objective}' (choose one of {', '.join(OBJECTIVES)})")


def weights(site: Site, h: Horizon, objective: str) -> Weights:
    """The objective as prices: minimise import cost − export value + generation cost − reward × Gtok."""
    check_objective(objective)
    if objective == "tokens":
        # money only breaks ties; a negative price is not let reward burning energy in the battery
        price = np.clip(h.price, 0.0, None)
        gen = [max(g[2], 0.0) * TIE_BREAK for g in h.generation]
        export = (price - EXPORT_SPREAD) * TIE_BREAK
        if site.grid.export_value_per_mwh is not None and site.token_value_per_mtok:
            # energy sent back in stress is worth what the site file says, in tokens at their value
            export = np.full(len(h.index), site.grid.export_value_per_mwh / (site.token_value_per_mtok * 1e3))
        return Weights(price * TIE_BREAK, export, gen, 1.0)
    export_value = (
        h.price if site.grid.export_value_per_mwh is None else np.full(len(h.index), site.grid.export_value_per_mwh)
    )
    if objective == "cost":
        # a hair of reward on tokens: among least-cost schedules, the one that makes most
        reward = site.token_value_per_mtok * 1e3 if site.token_value_per_mtok else TIE_BREAK
        return Weights(h.price, export_value - EXPORT_SPREAD, [g[2] for g in h.generation], reward)
    return Weights(h.carbon, h.carbon - EXPORT_SPREAD, [g[3] for g in h.generation], TIE_BREAK)
