"""The schedule as one HiGHS model built straight from arrays, reused for every scenario.

Columns, one per interval each: for every workload and every candidate setting (the thinned hull's
vertices plus the fixed policies' settings) the number of GPUs, or whole units, running at it; grid
import; export (only in stress); each generator; the battery's charge, discharge and state of charge;
and one slack on the token target (open only for comparison scenarios). Rows: the site's power
balance, each workload's installed count, the facility budget, the battery's energy, the ramp limit
on net grid power, and the token target. A mix of settings on the concave hull is what the LP
relaxation reaches by itself; integrality (whole units, synchronous jobs) makes it a MIP.

The comparison policies and what-ifs only change bounds, costs and the target's row, so a model is
built once and re-solved from a previous basis (a fixed policy at Max-P and the surplus what-if
start from the plan's). PyPSA builds the same problem for reference and export (network.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.errors import ProfileError, UsageError
from harness.planner.capacity import GTOK_PER_MWH_PER_TOKENS_PER_J, Fleet, WorkloadFleet
from harness.planner.horizon import Horizon, Scenario, Weights, weights
from harness.planner.site import Site

if TYPE_CHECKING:
    from highspy import HighsBasis

INF = math.inf
#: the fixed policies the plan is compared with
FIXED = ("max_p", "max_q", "default")


@contextlib.contextmanager
def quiet_stdout():
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


def _highspy():
    try:
        import highspy
    except ImportError as e:
        raise UsageError(
            f"planning a schedule needs the 'plan' extra ({e.name} is missing): pip install 'tokbench[plan]'"
        ) from None
    return highspy


@dataclass(frozen=True)
class Granularity:
    """What one workload parks and powers as one: ``gpus`` per unit, ``units`` installed, whole or not."""

    gpus: int
    units: int
    integer: bool


def granularity(site: Site, wf: WorkloadFleet, k: int) -> Granularity:
    """A synchronous job is one unit of all its GPUs (one setting, all on or all parked), always
    whole; otherwise a GPU, or a node when the site schedules by unit."""
    if site.workloads[k].synchronous:
        return Granularity(wf.gpus, 1, True)
    per = site.unit_of(site.workloads[k]).gpus_per_unit if site.schedule_unit == "unit" else 1
    if wf.gpus % per:
        raise ProfileError(
            f"site '{site.name}': workload {wf.label} has {wf.gpus} GPUs, not a whole number of {per}-GPU units"
        )
    return Granularity(per, wf.gpus // per, site.integer)


def vertices(wf: WorkloadFleet) -> np.ndarray:
    """Candidate settings: the thinned hull and the fixed policies' settings, in rising site power."""
    idx = set(int(i) for i in wf.hull()) | {wf.max_p_index, wf.max_q_index, wf.default_index}
    return np.array(sorted(idx, key=lambda i: (wf.site_w[i], i)), dtype=int)


def _csc(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, nrow: int, ncol: int):
    """COO triplets as compressed columns, repeated entries summed (numpy alone: scipy.sparse
    would cost a third of a second to import)."""
    key = cols.astype(np.int64) * nrow + rows
    order = np.argsort(key, kind="stable")
    key, vals = key[order], vals[order]
    uniq, first = np.unique(key, return_index=True)
    value = np.add.reduceat(vals, first) if len(vals) else vals
    start = np.r_[0, np.cumsum(np.bincount(uniq // nrow, minlength=ncol))]
    return start.astype(np.int32), (uniq % nrow).astype(np.int32), value


class _Builder:
    """Column blocks of T and row blocks, gathered as COO triplets."""

    def __init__(self) -> None:
        self.ncol = 0
        self.nrow = 0
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.rlo: list[np.ndarray] = []
        self.rhi: list[np.ndarray] = []
        self.trip: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def cols(self, n: int, lb=0.0, ub=INF) -> np.ndarray:
        idx = np.arange(self.ncol, self.ncol + n)
        self.ncol += n
        self.lb.append(np.broadcast_to(np.asarray(lb, dtype=float), (n,)).copy())
        self.ub.append(np.broadcast_to(np.asarray(ub, dtype=float), (n,)).copy())
        return idx

    def rows(self, n: int, lo, hi) -> np.ndarray:
        idx = np.arange(self.nrow, self.nrow + n)
        self.nrow += n
        self.rlo.append(np.broadcast_to(np.asarray(lo, dtype=float), (n,)).copy())
        self.rhi.append(np.broadcast_to(np.asarray(hi, dtype=float), (n,)).copy())
        return idx

    def put(self, rows, cols, vals) -> None:
        rows, cols = np.asarray(rows), np.asarray(cols)
        self.trip.append((rows, cols, np.broadcast_to(np.asarray(vals, dtype=float), rows.shape)))


@dataclass
class WorkloadColumns:
    """One workload's columns (J × T) and what a unit of each is worth: MW drawn and Gtok per hour.

    Continuous workloads use the hull's segments (a column per segment, in MW; concavity makes the
    LP fill them in order, so bounds alone keep the mix real) plus one column per fixed policy's
    setting; whole-unit workloads use a count of units per candidate setting and a row that keeps
    the count within what is installed."""

    cols: np.ndarray
    mw: np.ndarray
    gtok_h: np.ndarray
    plan_ub: np.ndarray
    only_ub: dict[str, np.ndarray]
    by_count: bool

    def ub(self, only: str | None) -> np.ndarray:
        return self.plan_ub if only is None else self.only_ub[only]


def _columns(
    b: _Builder, wf: WorkloadFleet, g: Granularity, verts: np.ndarray, T: int, hull: bool
) -> WorkloadColumns:
    """A workload's columns; ``hull=False`` leaves out the segments (the fixed policies' model)."""
    if g.integer:
        on_hull = np.isin(verts, wf.hull())
        cols = b.cols(len(verts) * T, 0.0, g.units).reshape(len(verts), T)
        only = {k: np.where(verts == wf.index(k), g.units, 0.0) for k in FIXED}
        return WorkloadColumns(
            cols, g.gpus * wf.site_w[verts] * 1e-6, g.gpus * wf.tokens_per_s[verts] * 3600e-9,
            np.where(on_hull, g.units, 0.0), only, True,
        )  # fmt: skip
    nom, eff, _v = wf.segments() if hull else (np.zeros(0), np.zeros(0), None)
    fixed = np.array(sorted({wf.index(k) for k in FIXED}), dtype=int)
    top = wf.gpus * wf.site_w[fixed] * 1e-6
    ncol = len(nom) + len(fixed)
    cols = b.cols(ncol * T).reshape(ncol, T)
    gt = np.r_[eff, GTOK_PER_MWH_PER_TOKENS_PER_J * wf.tokens_per_s[fixed] / wf.site_w[fixed]]
    only = {k: np.r_[np.zeros(len(nom)), np.where(fixed == wf.index(k), top, 0.0)] for k in FIXED}
    return WorkloadColumns(cols, np.ones(ncol), gt, np.r_[nom, np.zeros(len(fixed))], only, False)


def unit_counts(wc: WorkloadColumns, wf: WorkloadFleet, g: Granularity, verts: np.ndarray, x: np.ndarray):
    """Solved columns (J × T) as units running at each candidate setting (vertices × T), fractional
    where the LP is: a segment flow becomes the two adjacent hull settings it mixes."""
    if wc.by_count:
        return x
    T = x.shape[1]
    pos = {int(i): j for j, i in enumerate(verts)}
    y = np.zeros((len(verts), T))
    fixed = sorted({wf.index(k) for k in FIXED})
    nseg = x.shape[0] - len(fixed)
    for j, i in enumerate(fixed):  # the fleet at one setting: MW / (MW per GPU) GPUs
        y[pos[i]] += x[nseg + j] / (wf.site_w[i] * 1e-6) / g.gpus
    if nseg == 0:
        return y
    hv = wf.hull()
    w = np.r_[0.0, wf.site_w[hv]]
    u = np.clip(x[:nseg].sum(axis=0) * 1e6 / wf.gpus, 0.0, w[-1])
    hi = np.clip(np.searchsorted(w, u - 1e-9 * w[-1], side="left"), 1, len(w) - 1)
    frac = np.clip((u - w[hi - 1]) / (w[hi] - w[hi - 1]), 0.0, 1.0)
    t = np.arange(T)
    at = np.array([pos[int(i)] for i in hv])
    np.add.at(y, (at[hi - 1], t), frac * wf.gpus / g.gpus)
    has_lo = hi > 1
    np.add.at(y, (at[np.maximum(hi - 2, 0)][has_lo], t[has_lo]), ((1 - frac) * wf.gpus / g.gpus)[has_lo])
    return y


@dataclass
class Solution:
    """One scenario's solved columns, as arrays of T (``y[k]`` is vertices × T, in units)."""

    y: list[np.ndarray]
    allowed: list[np.ndarray]  # per workload, which of its vertices the scenario allowed
    grid: np.ndarray
    export: np.ndarray
    generation: list[np.ndarray]
    store: np.ndarray | None
    dispatch: np.ndarray | None
    soc: np.ndarray | None  # usable window, MWh at the end of each interval
    shortfall_gtok: float
    objective_value: float


class ScheduleModel:
    """The horizon's model, built once; ``solve(scenario)`` sets bounds and costs and re-solves."""

    def __init__(self, site: Site, fleet: Fleet, h: Horizon, hull: bool = True):
        """``hull=False`` leaves out the hull's columns: a smaller model for the fixed policies alone."""
        self.site, self.fleet, self.h = site, fleet, h
        T = self.T = len(h.index)
        dt = h.step_h
        b = _Builder()
        self.units = [granularity(site, wf, k) for k, wf in enumerate(fleet.workloads)]
        self.verts = [vertices(wf) for wf in fleet.workloads]
        self.work = [
            _columns(b, wf, g, v, T, hull) for wf, g, v in zip(fleet.workloads, self.units, self.verts, strict=True)
        ]
        self.imp = b.cols(T, 0.0, h.import_mw)
        grid = site.grid
        stress = h.stress.astype(float)
        self.exp = b.cols(T, grid.export_required_mw * stress, grid.export_mw * stress)
        self.gen = [b.cols(T, 0.0, mw) for _n, mw, _c, _k in h.generation]
        bat = site.battery
        self.ch = self.dis = self.soc = None
        if bat is not None:
            self.ch = b.cols(T, 0.0, bat.charge_mw)
            self.dis = b.cols(T, 0.0, bat.discharge_mw)
            self.soc = b.cols(T, 0.0, bat.energy_mwh * (bat.soc_max - bat.soc_min))
        self.slack = b.cols(1, 0.0, 0.0)
        t = np.arange(T)

        # power balance: import + generation + discharge = GPUs + charge + export
        bal = b.rows(T, 0.0, 0.0)
        b.put(bal, self.imp, 1.0)
        b.put(bal, self.exp, -1.0)
        for g in self.gen:
            b.put(bal, g, 1.0)
        for wc in self.work:
            b.put(np.tile(bal, len(wc.mw)), wc.cols.ravel(), np.repeat(-wc.mw, T))
        # installed units: a unit runs at one setting or is parked
        for wc, g in zip(self.work, self.units, strict=True):
            if wc.by_count:
                run = b.rows(T, -INF, g.units)
                b.put(np.tile(run, wc.cols.shape[0]), wc.cols.ravel(), 1.0)
        # the facility budget (power at the meter behind the connection), with charging if the site says so
        within = bat is not None and bat.charge_within_budget
        if fleet.budget_mw is not None and (within or fleet.budget_mw < fleet.top_mw * (1 - 1e-9)):
            fac = b.rows(T, -INF, fleet.budget_mw)
            for wc in self.work:
                b.put(np.tile(fac, len(wc.mw)), wc.cols.ravel(), np.repeat(wc.mw, T))
            if within:
                b.put(fac, self.ch, 1.0)
        if bat is not None:
            b.put(bal, self.dis, 1.0)
            b.put(bal, self.ch, -1.0)
            # energy: soc[t] = soc[t-1] + eta × charge × dt − discharge × dt / eta
            eta = math.sqrt(bat.round_trip_efficiency)
            start = 0.0 if bat.cyclic else bat.energy_mwh * (bat.soc_initial - bat.soc_min)
            rhs = np.zeros(T)
            rhs[0] = start
            en = b.rows(T, rhs, rhs)
            b.put(en, self.soc, 1.0)
            b.put(en, self.ch, -eta * dt)
            b.put(en, self.dis, dt / eta)
            if bat.cyclic:
                b.put(en, self.soc[(t - 1) % T], -1.0)
            elif T > 1:
                b.put(en[1:], self.soc[:-1], -1.0)
        # ramp limit on net grid power between consecutive intervals
        if grid.ramp_mw_per_interval is not None and T > 1:
            r = grid.ramp_mw_per_interval
            ramp = b.rows(T - 1, -r, r)
            for cols, sign in ((self.imp, 1.0), (self.exp, -1.0)):
                b.put(ramp, cols[1:], sign)
                b.put(ramp, cols[:-1], -sign)
        # token target: Gtok made + shortfall >= target
        self.target_row = int(b.rows(1, -INF, INF)[0])
        for wc in self.work:
            b.put(np.full(wc.cols.size, self.target_row), wc.cols.ravel(), np.repeat(wc.gtok_h * dt, T))
        b.put([self.target_row], self.slack, 1.0)

        rows = np.concatenate([r for r, _c, _v in b.trip])
        cols = np.concatenate([c for _r, c, _v in b.trip])
        vals = np.concatenate([v for _r, _c, v in b.trip])
        start, index, value = _csc(rows, cols, vals, b.nrow, b.ncol)
        self.ncol, self.nrow = b.ncol, b.nrow
        self.col_lb = np.concatenate(b.lb)
        self.col_ub = np.concatenate(b.ub)
        highspy = _highspy()
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = b.ncol, b.nrow
        lp.col_cost_ = np.zeros(b.ncol)
        lp.col_lower_, lp.col_upper_ = self.col_lb, self.col_ub
        lp.row_lower_, lp.row_upper_ = np.concatenate(b.rlo), np.concatenate(b.rhi)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = start, index, value
        self.integer = any(g.integer for g in self.units)
        if self.integer:
            kinds = np.full(b.ncol, highspy.HighsVarType.kContinuous)
            for wc in self.work:
                if wc.by_count:
                    kinds[wc.cols.ravel()] = highspy.HighsVarType.kInteger
            lp.integrality_ = list(kinds)
        with quiet_stdout():
            self.highs = highspy.Highs()
        self.highs.setOptionValue("output_flag", False)
        self.highs.setOptionValue("mip_rel_gap", 1e-6)
        # devex pricing: a quarter fewer seconds than steepest edge on a year with a battery
        self.highs.setOptionValue("simplex_dual_edge_weight_strategy", 1)
        self.highs.passModel(lp)
        self._highspy = highspy

    def allowed(self, k: int, only: str | None) -> np.ndarray:
        """Which of workload k's vertices a scenario may use: the hull, or one fixed setting."""
        wf = self.fleet.workloads[k]
        keep = wf.hull() if only is None else [wf.index(only)]
        return np.isin(self.verts[k], keep)

    def _costs(self, w: Weights) -> np.ndarray:
        dt = self.h.step_h
        c = np.zeros(self.ncol)
        for wc in self.work:
            c[wc.cols] = -w.reward * wc.gtok_h[:, None] * dt
        c[self.imp] = w.import_ * dt
        c[self.exp] = -w.export * dt
        for cols, cost in zip(self.gen, w.generation, strict=True):
            c[cols] = cost * dt
        # a shortfall costs more than any Gtok can: the slack runs only when the target is out of reach
        eff = min(float((wc.gtok_h / wc.mw).min()) for wc in self.work)
        worst = max(float(np.abs(w.import_).max()), float(np.abs(w.export).max()), *map(abs, w.generation), 1.0)
        c[self.slack] = 1e3 * (worst / eff + w.reward)
        return c

    def basis(self) -> HighsBasis:
        """The last solve's simplex basis, to start a later scenario from (``solve(sc, start=...)``)."""
        return self.highs.getBasis()

    def solve(self, sc: Scenario, start: HighsBasis | None = None) -> Solution:
        """Solve one scenario from the previous solve's basis, or from ``start`` (a ``basis()``): a
        scenario near an earlier one (a fixed policy at the plan's usual setting, a what-if) is a
        few thousand dual simplex iterations from that one's basis instead of tens of thousands."""
        hs = self.highs
        if start is not None:
            hs.setBasis(start)
        ub = self.col_ub.copy()
        allowed = []
        for k, wc in enumerate(self.work):
            allowed.append(self.allowed(k, sc.only))
            ub[wc.cols] = wc.ub(sc.only)[:, None]
        if sc.import_mw is not None:
            ub[self.imp] = sc.import_mw
        ub[self.slack] = INF if (sc.soft and sc.target_gtok is not None) else 0.0
        idx = np.arange(self.ncol, dtype=np.int32)
        hs.changeColsBounds(self.ncol, idx, self.col_lb, ub)
        hs.changeColsCost(self.ncol, idx, self._costs(weights(self.site, self.h, sc.objective)))
        lo = -INF if sc.target_gtok is None else sc.target_gtok
        hs.changeRowBounds(self.target_row, lo, INF)
        hs.run()  # silent with output_flag off (only the constructor's banner needs quiet_stdout)
        status = hs.getModelStatus()
        ms = self._highspy.HighsModelStatus
        if status != ms.kOptimal:
            text = hs.modelStatusToString(status)
            if status in (ms.kInfeasible, ms.kUnboundedOrInfeasible) and sc.target_gtok is not None:
                raise UsageError(
                    f"no schedule reaches the token target of {sc.target_gtok:,.0f} Gtok within the power offered"
                )
            if status == ms.kInfeasible:
                raise UsageError(
                    f"no schedule meets the site's limits ({sc.key}: {text}); check export and ramp settings"
                )
            raise UsageError(f"the planner's model did not solve ({sc.key}: {text})")
        x = np.asarray(hs.getSolution().col_value)
        x = np.where(np.abs(x) < 1e-9, 0.0, x)  # solver dust and -0.0
        return Solution(
            y=[
                unit_counts(wc, wf, g, v, x[wc.cols])
                for wc, wf, g, v in zip(self.work, self.fleet.workloads, self.units, self.verts, strict=True)
            ],
            allowed=allowed,
            grid=x[self.imp],
            export=x[self.exp],
            generation=[x[g] for g in self.gen],
            store=None if self.ch is None else x[self.ch],
            dispatch=None if self.dis is None else x[self.dis],
            soc=None if self.soc is None else x[self.soc],
            shortfall_gtok=float(x[self.slack][0]),
            objective_value=float(hs.getInfo().objective_function_value),
        )
