"""The schedule as a PyPSA network: the reference model, and what ``--export-network`` writes.

The planner solves its own HiGHS model (lp.py); this builds the same continuous problem in PyPSA so
a utility can load the factory's flexibility into its own grid study, and so the benchmark and the
tests can check the planner against an independently built model. Per scenario (components
prefixed ``<scenario>|``, so several independent scenarios share one solve):

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

import logging
import math

from harness.errors import UsageError
from harness.planner.capacity import Fleet
from harness.planner.horizon import Horizon, Scenario, weights
from harness.planner.lp import quiet_stdout
from harness.planner.site import Site


def _add_scenario(n, site: Site, fleet: Fleet, h: Horizon, sc: Scenario) -> None:
    p = f"{sc.key}|"
    w = weights(site, h, sc.objective)
    imp_c, exp_v, gen_c, reward = w.import_, w.export, w.generation, w.reward
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
            p_max_pu=-h.stress.astype(float) * (site.grid.export_required_mw / site.grid.export_mw),
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
        # float weights: PyPSA makes them integers (1 h), which a 15-minute interval cannot be
        n.snapshot_weightings = n.snapshot_weightings.astype(float)
        n.snapshot_weightings.loc[:, :] = h.step_h
        n.add("Carrier", ["AC", "tokens"])
        for sc in scenarios:
            _add_scenario(n, site, fleet, h, sc)
    return n


def optimize(n) -> tuple[str, str]:
    """Solve with HiGHS through its direct interface (no LP file), quietly."""
    pypsa = _pypsa()

    with pypsa.option_context(*PYPSA_OPTIONS), quiet_stdout():
        return n.optimize(
            solver_name="highs",
            io_api="direct",
            solver_options={"output_flag": False, "log_to_console": False},
        )


def solve_reference(site: Site, fleet: Fleet, h: Horizon, scenarios: list[Scenario]):
    """Build and solve the PyPSA model; returns the solved network (``n.objective`` is its optimum)."""
    n = build_network(site, fleet, h, scenarios)
    status, condition = optimize(n)
    if status != "ok":
        raise UsageError(f"the PyPSA reference model did not solve ({status}: {condition})")
    return n


def unsupported(site: Site) -> list[str]:
    """Site settings the continuous PyPSA model does not carry."""
    out = []
    if site.grid.ramp_mw_per_interval is not None:
        out.append("a ramp limit")
    if site.integer or any(w.synchronous for w in site.workloads):
        out.append("whole units")
    if site.battery is not None and site.battery.charge_within_budget:
        out.append("charging within the budget")
    return out
