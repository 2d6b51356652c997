"""The grid-interactive schedule as a PyPSA network, solved over the whole horizon with HiGHS.

Per scenario (components prefixed ``<scenario>|``, so several independent scenarios share one
solve and its fixed overhead):

- bus ``site`` (MW): the grid connection is a generator whose availability (``p_max_pu``) and
  price follow the grid file; on-site generation are generators; the battery is a StorageUnit;
- export during stress is a second generator on ``site`` that may only run negative (``p_min_pu =
  -1`` in stress intervals, 0 elsewhere) and is paid the interval price less a hair (0.01/MWh), so
  the site never imports merely to export; a negative dispatch is energy sent to the grid;
- bus ``facility``: reached from ``site`` by a link whose capacity is the facility budget (when the
  site has one), so a battery cannot push the factory past what its wiring carries;
- bus ``tokens`` (Gtok per hour): each workload's GPUs are links ``facility → tokens``, one per
  segment of the concave hull of its curve (capacity = GPUs × segment width, efficiency = segment
  slope in Gtok/MWh); a sink generator that can only run negative takes the tokens and is paid the
  token reward, and its ``e_sum_max`` enforces a token target.

The battery's state-of-charge floor is modelled by giving the StorageUnit only the usable window
(soc_max - soc_min) × energy and adding soc_min × energy back on read-out.

Energy through the GPU links is counted at the provisioned draw (conservative by the ratio of the
provisioned statistic to the mean); the schedule also reports the mean-draw energy.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.errors import UsageError
from harness.planner.capacity import Fleet, WorkloadFleet
from harness.planner.grid import GridSignal
from harness.planner.site import Site

Objective = str  # "tokens" | "cost" | "carbon"
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
    switching GPUs off to fit; ``import_mw`` replaces the grid's availability (what-ifs)."""

    key: str
    objective: Objective = "tokens"
    only: str | None = None
    target_gtok: float | None = None
    import_mw: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ScenarioResult:
    key: str
    objective: Objective
    frame: pd.DataFrame  # one row per interval
    totals: dict[str, float]


def _weights(site: Site, h: Horizon, objective: Objective) -> tuple[np.ndarray, np.ndarray, list[float], float]:
    """Objective coefficients: grid import, export value, generation, token reward (per Gtok)."""
    if objective == "tokens":
        # money only breaks ties; a negative price is not let reward burning energy in the battery
        price = np.clip(h.price, 0.0, None)
        gen = [max(g[2], 0.0) * TIE_BREAK for g in h.generation]
        return price * TIE_BREAK, (price - EXPORT_SPREAD) * TIE_BREAK, gen, 1.0
    if objective == "cost":
        # a hair of reward on tokens: among least-cost schedules, the one that makes most
        reward = site.token_value_per_mtok * 1e3 if site.token_value_per_mtok else TIE_BREAK
        return h.price, h.price - EXPORT_SPREAD, [g[2] for g in h.generation], reward
    if objective == "carbon":
        return h.carbon, h.carbon - EXPORT_SPREAD, [g[3] for g in h.generation], TIE_BREAK
    raise UsageError(f"unknown objective '{objective}' (choose one of {', '.join(OBJECTIVES)})")


def _add_scenario(n, site: Site, fleet: Fleet, h: Horizon, sc: Scenario) -> None:
    p = f"{sc.key}|"
    imp_c, exp_v, gen_c, reward = _weights(site, h, sc.objective)
    n.add("Bus", p + "site", carrier="AC")
    n.add("Bus", p + "tokens", carrier="tokens")
    imp = h.import_mw if sc.import_mw is None else sc.import_mw
    imp_nom = max(float(imp.max()), 1e-9)
    n.add("Generator", p + "grid", bus=p + "site", p_nom=imp_nom, p_max_pu=imp / imp_nom, marginal_cost=imp_c)
    if site.grid.export_mw > 0 and h.stress.any():
        n.add(
            "Generator",
            p + "export",
            bus=p + "site",
            p_nom=site.grid.export_mw,
            p_min_pu=-h.stress.astype(float),
            p_max_pu=0.0,
            marginal_cost=exp_v,
        )
    for (name, mw, _c, _k), cost in zip(h.generation, gen_c, strict=True):
        nom = max(float(mw.max()), 1e-9)
        n.add("Generator", p + "gen:" + name, bus=p + "site", p_nom=nom, p_max_pu=mw / nom, marginal_cost=cost)
    b = site.battery
    if b is not None:
        nom = max(b.charge_mw, b.discharge_mw)
        usable = b.energy_mwh * (b.soc_max - b.soc_min)
        eta = math.sqrt(b.round_trip_efficiency)
        n.add(
            "StorageUnit",
            p + "battery",
            bus=p + "site",
            p_nom=nom,
            max_hours=usable / nom,
            p_min_pu=-b.charge_mw / nom,
            p_max_pu=b.discharge_mw / nom,
            efficiency_store=eta,
            efficiency_dispatch=eta,
            cyclic_state_of_charge=b.cyclic,
            state_of_charge_initial=0.0 if b.cyclic else b.energy_mwh * (b.soc_initial - b.soc_min),
        )
    gpu_bus = p + "site"
    if fleet.budget_mw is not None and fleet.budget_mw < fleet.top_mw * (1 - 1e-9):  # only where it can bind
        gpu_bus = p + "facility"
        n.add("Bus", gpu_bus, carrier="AC")
        n.add("Link", p + "facility", bus0=p + "site", bus1=gpu_bus, p_nom=fleet.budget_mw, efficiency=1.0)
    top = 0.0
    for k, wf in enumerate(fleet.workloads):
        nom, eff, _v = wf.segments(None if sc.only is None else wf.index(sc.only))
        names = [f"{p}gpu{k}:seg{j}" for j in range(len(nom))]
        n.add("Link", names, bus0=gpu_bus, bus1=p + "tokens", p_nom=nom, efficiency=eff)
        top += float((nom * eff).sum())
    sink = dict(bus=p + "tokens", p_nom=max(top, 1e-9) * 1.01, p_min_pu=-1.0, p_max_pu=0.0, marginal_cost=reward)
    if sc.target_gtok is not None:
        sink["e_sum_max"] = -sc.target_gtok
    n.add("Generator", p + "tokens", **sink)


def _readback_workload(wf: WorkloadFleet, only: int | None, x_mw: np.ndarray) -> dict[str, np.ndarray]:
    """Settings and GPU counts from the fleet power of one workload in every interval."""
    v = wf.hull(only)
    w = np.concatenate([[0.0], wf.site_w[v]])
    t = np.concatenate([[0.0], wf.tokens_per_s[v]])
    m = np.concatenate([[0.0], wf.site_mean_w[v]])
    s = np.concatenate([[np.nan], wf.settings[v]])
    u = np.clip(x_mw * 1e6 / wf.gpus, 0.0, w[-1])
    hi = np.clip(np.searchsorted(w, u - 1e-9 * w[-1], side="left"), 1, len(w) - 1)
    lo = hi - 1
    frac = np.clip((u - w[lo]) / (w[hi] - w[lo]), 0.0, 1.0)
    frac[frac < 1e-9] = 0.0
    n_hi = wf.gpus * frac
    n_lo = np.where(lo > 0, wf.gpus - n_hi, 0.0)
    gpus_hi = np.floor(n_hi + 1e-6)
    gpus_lo = np.where(lo > 0, wf.gpus - gpus_hi, 0.0)
    running = n_hi + n_lo
    setting = np.where(running > 0, (n_hi * s[hi] + n_lo * np.nan_to_num(s[lo])) / np.maximum(running, 1e-12), np.nan)
    return {
        "setting_hi": np.where(gpus_hi > 0, s[hi], np.nan),
        "gpus_hi": gpus_hi,
        "setting_lo": np.where(gpus_lo > 0, s[lo], np.nan),
        "gpus_lo": gpus_lo,
        "gpus_running": gpus_hi + gpus_lo,
        "gpus_off": wf.gpus - gpus_hi - gpus_lo,
        "setting_mean": setting,
        "tokens_per_s_curve": n_hi * t[hi] + n_lo * t[lo],
        "gpu_mw": x_mw,
        "gpu_mean_mw": (n_hi * m[hi] + n_lo * m[lo]) * 1e-6,
    }


def _series(n, comp: str, attr: str, name: str, length: int) -> np.ndarray:
    df = getattr(n, comp + "_t")[attr]
    return df[name].to_numpy(dtype=float) if name in df else np.zeros(length)


def _readback(n, site: Site, fleet: Fleet, h: Horizon, sc: Scenario) -> ScenarioResult:
    p = f"{sc.key}|"
    T = len(h.index)
    hrs = h.step_h
    imp_cap = h.import_mw if sc.import_mw is None else sc.import_mw
    cols: dict[str, np.ndarray] = {
        "import_available_mw": imp_cap,
        "grid_import_mw": _series(n, "generators", "p", p + "grid", T),
        "export_mw": -_series(n, "generators", "p", p + "export", T),
        "generation_mw": sum((_series(n, "generators", "p", p + "gen:" + g[0], T) for g in h.generation), np.zeros(T)),
        "price_per_mwh": h.price,
        "carbon_kg_per_mwh": h.carbon,
        "stress": h.stress.astype(int),
    }
    if site.battery is not None:
        b = site.battery
        cols["battery_dispatch_mw"] = _series(n, "storage_units", "p_dispatch", p + "battery", T)
        cols["battery_store_mw"] = _series(n, "storage_units", "p_store", p + "battery", T)
        cols["soc_mwh"] = _series(n, "storage_units", "state_of_charge", p + "battery", T) + b.energy_mwh * b.soc_min
    links_p0 = n.links_t.p0
    tokens = np.zeros(T)
    gpu_mw = np.zeros(T)
    gpu_mean = np.zeros(T)
    multi = len(fleet.workloads) > 1
    for k, wf in enumerate(fleet.workloads):
        only = None if sc.only is None else wf.index(sc.only)
        nom, eff, _v = wf.segments(only)
        flows = np.stack([links_p0[f"{p}gpu{k}:seg{j}"].to_numpy(dtype=float) for j in range(len(nom))])
        flows = np.clip(flows, 0.0, None)
        x = flows.sum(axis=0)
        tok = (flows * eff[:, None]).sum(axis=0)  # Gtok per hour
        rb = _readback_workload(wf, only, x)
        pre = f"w{k}_" if multi else ""
        for key, val in rb.items():
            cols[pre + key] = val
        cols[pre + "tokens_gtok"] = tok * hrs
        tokens += tok * hrs
        gpu_mw += x
        gpu_mean += rb["gpu_mean_mw"]
    if multi:
        cols["gpu_mw"] = gpu_mw
        cols["gpu_mean_mw"] = gpu_mean
        cols["tokens_gtok"] = tokens
    frame = pd.DataFrame(cols, index=h.index)
    frame = frame.mask(frame.abs() < 1e-9, 0.0)  # solver dust and -0.0
    gen_cost = sum((_series(n, "generators", "p", p + "gen:" + g[0], T) * g[2]).sum() for g in h.generation)
    gen_carbon = sum((_series(n, "generators", "p", p + "gen:" + g[0], T) * g[3]).sum() for g in h.generation)
    cost = float(((frame["grid_import_mw"] - frame["export_mw"]) * h.price).sum() + gen_cost) * hrs
    carbon = float(((frame["grid_import_mw"] - frame["export_mw"]) * h.carbon).sum() + gen_carbon) * hrs
    tok = float(tokens.sum())
    capex = sum(wf.capex_per_gpu_h * wf.gpus for wf in fleet.workloads) * T * hrs
    totals = {
        "tokens_gtok": tok,
        "gpu_energy_mwh": float(gpu_mw.sum() * hrs),
        "gpu_energy_mean_mwh": float(gpu_mean.sum() * hrs),
        "grid_import_mwh": float(frame["grid_import_mw"].sum() * hrs),
        "export_mwh": float(frame["export_mw"].sum() * hrs),
        "generation_mwh": float(frame["generation_mw"].sum() * hrs),
        "energy_cost_usd": cost,
        "carbon_kg": carbon,
        "usd_per_mtok": cost / (tok * 1e3) if tok > 0 else float("nan"),
        "usd_per_mtok_with_capex": (cost + capex) / (tok * 1e3) if tok > 0 and capex > 0 else float("nan"),
        "g_co2_per_mtok": carbon * 1e3 / (tok * 1e3) if tok > 0 else float("nan"),
    }
    return ScenarioResult(sc.key, sc.objective, frame, totals)


PYPSA_OPTIONS = (
    "general.allow_network_requests",
    False,  # no version checks from a planning command
    "api.legacy_string_dtype",
    True,
    "params.optimize.include_objective_constant",
    False,
)


def _pypsa():
    """PyPSA and HiGHS come with the `plan` extra; say so instead of a traceback when they are missing."""
    try:
        import highspy  # noqa: F401
        import pypsa
    except ImportError as e:
        raise UsageError(
            f"planning a schedule needs the 'plan' extra ({e.name} is missing): pip install 'tokbench[plan]'"
        ) from e
    return pypsa


def build_network(site: Site, fleet: Fleet, h: Horizon, scenarios: list[Scenario]):
    """A PyPSA network holding every scenario as its own disconnected island."""
    pypsa = _pypsa()

    for name in ("pypsa", "linopy"):
        logging.getLogger(name).setLevel(logging.ERROR)  # failures come back as one-line errors
    with pypsa.option_context(*PYPSA_OPTIONS):
        n = pypsa.Network(name=site.name)
        n.set_snapshots(h.index)
        n.snapshot_weightings.loc[:, :] = h.step_h
        n.add("Carrier", ["AC", "tokens"])
        for sc in scenarios:
            _add_scenario(n, site, fleet, h, sc)
    return n


@contextlib.contextmanager
def _quiet_stdout():
    """HiGHS prints its banner from C++ before any option can silence it: park fd 1 meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def optimize(n) -> tuple[str, str]:
    """Solve with HiGHS through its direct interface (no LP file), quietly."""
    pypsa = _pypsa()

    with pypsa.option_context(*PYPSA_OPTIONS), _quiet_stdout():
        return n.optimize(
            solver_name="highs",
            io_api="direct",
            solver_options={"output_flag": False, "log_to_console": False},
        )


def solve(site: Site, fleet: Fleet, h: Horizon, scenarios: list[Scenario]):
    """Build and solve; returns the network and each scenario's read-back schedule."""
    n = build_network(site, fleet, h, scenarios)
    status, condition = optimize(n)
    if status != "ok":
        targets = [f"{s.key}: {s.target_gtok:g} Gtok" for s in scenarios if s.target_gtok is not None]
        if "infeasible" in str(condition) and targets:
            raise UsageError(f"no schedule reaches the token target ({'; '.join(targets)}) within the power offered")
        raise UsageError(f"the planner's LP did not solve ({status}: {condition})")
    return n, {sc.key: _readback(n, site, fleet, h, sc) for sc in scenarios}
