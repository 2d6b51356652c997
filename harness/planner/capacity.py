"""The fleet: how many GPUs run each workload, what each setting costs the site per GPU, and the
concave hull that the schedule climbs.

A GPU at setting *i* makes ``tokens_per_s[i]`` and costs the site ``site_w[i] = PUE × (provisioned
GPU draw + IT overhead)``: power is provisioned from the *measured* draw statistic the site names
(mean, p99 or highest 1 s average), never from the cap. A fleet of N GPUs may mix settings and park
GPUs (off = 0 W, 0 tokens), so what it can make from fleet power x is N × the upper concave hull of
{(0, 0)} ∪ {(site_w[i], tokens_per_s[i])} at x/N. That hull's segments become the PyPSA links: their
slopes fall, so an LP fills the most efficient first and picks the right setting without integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import CurveFileError, ProfileError
from harness.planner.site import Site
from harness.records.curves import CurveFile, load_curve

#: tokens/s per W of site power → Gtok per MWh
GTOK_PER_MWH_PER_TOKENS_PER_J = 3.6


def concave_hull(power_w: np.ndarray, tokens_per_s: np.ndarray) -> np.ndarray:
    """Indices of the settings on the upper concave hull from the origin, in rising power.

    Settings below the hull (a mix of two others, or parking some GPUs, does better) and those
    beyond the highest throughput (more power for no more tokens) are left out.
    """
    order = sorted(range(len(power_w)), key=lambda i: (power_w[i], -tokens_per_s[i]))
    hull: list[int] = []  # indices; the origin is implicit before the first
    best = -1.0
    for i in order:
        if tokens_per_s[i] <= best or tokens_per_s[i] <= 0:
            continue  # no more tokens for more power
        best = tokens_per_s[i]
        while hull:
            ax, ay = (power_w[hull[-2]], tokens_per_s[hull[-2]]) if len(hull) >= 2 else (0.0, 0.0)
            bx, by = power_w[hull[-1]], tokens_per_s[hull[-1]]
            px, py = power_w[i], tokens_per_s[i]
            if (bx - ax) * (py - ay) - (by - ay) * (px - ax) >= 0:  # b on or below a→p
                hull.pop()
            else:
                break
        hull.append(i)
    return np.array(hull, dtype=int)


def thin_hull(power_w: np.ndarray, tokens_per_s: np.ndarray, hull: np.ndarray, max_vertices: int) -> np.ndarray:
    """Keep at most ``max_vertices`` hull vertices, dropping each time the one whose triangle with
    its neighbours is smallest (Visvalingam). The chords left lie on or below the full hull, so the
    thinned curve is still concave and every point on it is a real mix of settings: a fit on a fine
    grid (an exported curve has one setting every few watts) plans with a dozen links per interval
    instead of seventy, and never promises more than the curve gives. The top vertex stays."""
    idx = [int(i) for i in hull]
    while len(idx) > max(max_vertices, 1):
        x = np.concatenate([[0.0], power_w[idx]])
        y = np.concatenate([[0.0], tokens_per_s[idx]])
        area = np.abs((x[1:-1] - x[:-2]) * (y[2:] - y[:-2]) - (x[2:] - x[:-2]) * (y[1:-1] - y[:-2]))
        del idx[int(np.argmin(area))]  # interior point k + 1 of x is idx[k]
    return np.array(idx, dtype=int)


@dataclass(frozen=True)
class LatencyOption:
    """Max-Q under a latency target, from the curve file's latency points, as the site sees it."""

    label: str  # e.g. "tpot<=50 ms b16"
    setting: float
    tokens_per_s: float
    gpu_w: float  # provisioned: the fit of that batch at that setting, else the mean
    gpu_mean_w: float


@dataclass(frozen=True)
class WorkloadFleet:
    """One workload's GPUs and its settings as the site sees them (arrays indexed by setting)."""

    label: str
    curve_path: str
    knob: str
    gpus: int
    settings: np.ndarray
    tokens_per_s: np.ndarray  # per GPU
    gpu_w: np.ndarray  # provisioned GPU draw (the site's statistic), per GPU
    gpu_mean_w: np.ndarray  # mean GPU draw, per GPU (energy at the meter)
    site_w: np.ndarray  # PUE × (gpu_w + overhead): what one running GPU costs the site's budget
    site_mean_w: np.ndarray
    default_index: int
    capex_per_gpu_h: float = 0.0
    latency: tuple[LatencyOption, ...] = ()
    #: most hull vertices (LP links per interval) kept; see ``thin_hull``
    max_segments: int = 12

    @property
    def max_p_index(self) -> int:
        top = self.tokens_per_s.max()
        return int(min(np.flatnonzero(self.tokens_per_s >= top * (1 - 1e-12)), key=lambda i: self.site_w[i]))

    @property
    def max_q_index(self) -> int:
        """Most tokens per joule at the meter (mean draw, overhead and PUE included), not the GPU's own."""
        return int(np.argmax(self.tokens_per_s / self.site_mean_w))

    def index(self, which: str) -> int:
        return {"max_p": self.max_p_index, "max_q": self.max_q_index, "default": self.default_index}[which]

    def hull(self, only: int | None = None) -> np.ndarray:
        """Hull vertex indices; ``only`` restricts the fleet to one setting (or parked)."""
        if only is not None:
            return np.array([only], dtype=int)
        full = concave_hull(self.site_w, self.tokens_per_s)
        return thin_hull(self.site_w, self.tokens_per_s, full, self.max_segments)

    def hull_gap(self) -> float:
        """Largest share of tokens the thinned hull gives up against the full one, at any setting."""
        full = concave_hull(self.site_w, self.tokens_per_s)
        thin = self.hull()
        w = np.concatenate([[0.0], self.site_w[thin]])
        t = np.concatenate([[0.0], self.tokens_per_s[thin]])
        lost = 1.0 - np.interp(self.site_w[full], w, t) / self.tokens_per_s[full]
        return float(max(lost.max(), 0.0))

    def segments(self, only: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per hull segment: fleet MW it spans, its efficiency in Gtok/MWh, and its top vertex."""
        v = self.hull(only)
        w = np.concatenate([[0.0], self.site_w[v]])
        t = np.concatenate([[0.0], self.tokens_per_s[v]])
        dw, dt = np.diff(w), np.diff(t)
        return self.gpus * dw * 1e-6, GTOK_PER_MWH_PER_TOKENS_PER_J * dt / dw, v


def curtailment_options(wf: WorkloadFleet, power_mw: float) -> dict[str, float | None]:
    """Site tokens/s one workload keeps on ``power_mw`` three ways: every GPU at the highest
    setting that fits ("lower"; None when even the lowest does not), as many GPUs as fit at the
    default setting with the rest off ("off"), and the hull's best mix ("plan")."""
    x = power_mw * 1e6
    fits = np.flatnonzero(wf.gpus * wf.site_w <= x * (1 + 1e-12))
    lower = float(wf.gpus * wf.tokens_per_s[fits].max()) if fits.size else None
    d = wf.default_index
    off = float(min(wf.gpus, np.floor(x / wf.site_w[d] + 1e-9)) * wf.tokens_per_s[d])
    v = wf.hull()
    w = np.concatenate([[0.0], wf.site_w[v]])
    t = np.concatenate([[0.0], wf.tokens_per_s[v]])
    plan = float(wf.gpus * np.interp(min(x / wf.gpus, w[-1]), w, t))
    return {"lower": lower, "off": off, "plan": plan}


@dataclass(frozen=True)
class Fleet:
    workloads: tuple[WorkloadFleet, ...]
    budget_mw: float | None

    @property
    def gpus(self) -> int:
        return sum(w.gpus for w in self.workloads)

    @property
    def top_mw(self) -> float:
        """The most the fleet can draw: every GPU at its hull's top setting, MW."""
        return sum(w.gpus * w.site_w[w.hull()[-1]] for w in self.workloads) * 1e-6

    def draw_mw(self, which: str) -> float:
        """Site power of the whole fleet running at one named setting, MW."""
        return sum(w.gpus * w.site_w[w.index(which)] for w in self.workloads) * 1e-6


def _stat(curve: CurveFile, fit, provision: str, path: Path) -> np.ndarray:
    arr = {"mean": fit.power_mean_w, "p99": fit.power_p99_w, "max_1s": fit.power_max_1s_w}[provision]
    if arr is None:
        raise CurveFileError(
            f"{path}: no power_{provision}_w for phase {fit.phase} batch {fit.batch_size}; "
            f'provision for another statistic in the site file (provision = "mean")'
        )
    return np.asarray(arr, dtype=float)


def _latency_options(curve: CurveFile, provision: str) -> tuple[LatencyOption, ...]:
    out = []
    for lp in curve.latency_points:
        mean_w = lp.tokens_per_s / lp.tokens_per_j if lp.tokens_per_j > 0 else float("nan")
        gpu_w = mean_w
        fits = [f for f in curve.fits if f.batch_size == lp.batch_size]
        if fits:
            f = fits[0]
            arr = {"mean": f.power_mean_w, "p99": f.power_p99_w, "max_1s": f.power_max_1s_w}[provision]
            if arr is not None:
                gpu_w = max(mean_w, float(np.interp(lp.setting, f.settings, arr)))
        label = f"tpot<={lp.tpot_ms_target:g} ms b{lp.batch_size}"
        out.append(LatencyOption(label, lp.setting, lp.tokens_per_s, gpu_w, mean_w))
    return tuple(out)


def _default_index(curve: CurveFile, settings: np.ndarray) -> int:
    if curve.knob == "power_limit_w":
        return int(np.argmin(np.abs(settings - curve.part.power_limit_default_w)))
    return len(settings) - 1  # clocks unlocked: the top of the range


def _at_slo(curve: CurveFile, wl, provision: str):
    """A serving workload's curve at its TPOT SLO: per setting, the measured point (any batch) that
    makes the most tokens/s with its time per output token within the SLO."""
    best: dict[float, object] = {}
    for p in curve.points:
        if not p.valid or p.tpot_ms is None or p.tpot_ms > wl.tpot_ms or (wl.phase and p.phase != wl.phase):
            continue
        if p.setting not in best or p.tokens_per_s > best[p.setting].tokens_per_s:
            best[p.setting] = p
    if not best:
        raise CurveFileError(f"{wl.curve}: no measured point meets tpot <= {wl.tpot_ms:g} ms")
    pts = [best[s] for s in sorted(best)]
    stat = {"mean": "power_mean_w", "p99": "power_p99_w", "max_1s": "power_max_1s_w"}[provision]
    if any(getattr(p, stat) is None for p in pts):
        raise CurveFileError(
            f"{wl.curve}: a point within the SLO has no {stat}; provision for another statistic in the site file"
        )
    arr = lambda name: np.array([float(getattr(p, name)) for p in pts])  # noqa: E731
    label = f"{curve.workload.name} {pts[0].phase} tpot<={wl.tpot_ms:g} ms"
    return arr("setting"), arr("tokens_per_s"), arr(stat), arr("power_mean_w"), label


def build_fleet(site: Site, curves: list[CurveFile] | None = None) -> Fleet:
    """Read the site's curves and size its fleet; a budget that cannot power one GPU is refused."""
    capex_h = site.capex.per_gpu / (site.capex.amortisation_years * 8760.0) if site.capex else 0.0
    parts = []
    for k, wl in enumerate(site.workloads):
        curve = curves[k] if curves is not None else load_curve(wl.curve)
        matching = [
            f
            for f in curve.fits
            if (wl.phase is None or f.phase == wl.phase) and (wl.batch_size is None or f.batch_size == wl.batch_size)
        ]
        if len(matching) > 1:
            which = ", ".join(f"{f.phase} b{f.batch_size}" for f in matching)
            raise ProfileError(
                f"{wl.curve}: fits for more than one (phase, batch): {which}; name phase and batch_size in the "
                "site's [[workloads]]"
            )
        if wl.tpot_ms is not None:
            settings, tps, gpu_w, mean_w, label = _at_slo(curve, wl, site.provision)
        else:
            fit = curve.fit_for(wl.phase, wl.batch_size)
            settings = np.asarray(fit.settings, dtype=float)
            tps = np.asarray(fit.tokens_per_s, dtype=float)
            gpu_w = _stat(curve, fit, site.provision, wl.curve)
            mean_w = np.asarray(fit.power_mean_w, dtype=float)
            label = f"{curve.workload.name} {fit.phase} b{fit.batch_size}"
        if (tps < 0).any() or not np.isfinite(tps).all():
            raise CurveFileError(f"{wl.curve}: tokens_per_s must be finite and non-negative")
        if not (tps > 0).any():
            raise CurveFileError(f"{wl.curve}: no setting of {label} makes any tokens; nothing to plan")
        if (gpu_w <= 0).any() or (mean_w <= 0).any():
            raise CurveFileError(f"{wl.curve}: power must be positive at every setting")
        if wl.unit is not None:
            label = f"{wl.unit}: {label}"
        parts.append((wl, curve, settings, tps, gpu_w, mean_w, label))

    def site_w(gpu: np.ndarray, wl) -> np.ndarray:
        return site.pue * (gpu + site.overhead_w_for(wl))

    if site.power_budget_mw is not None:
        lowest = min(float(site_w(p[4], p[0]).min()) for p in parts)
        if site.power_budget_mw * 1e6 < lowest:
            raise ProfileError(
                f"site '{site.name}': a budget of {site.power_budget_mw:g} MW cannot power a single GPU "
                f"(one needs {lowest / 1e3:.2f} kW at its lowest setting, PUE and overhead included)"
            )

    total = site.gpu_count
    if total is None:  # size the fleet from the budget at the design setting
        per_gpu = 0.0
        for wl, curve, settings, tps, gpu_w, _mean, _label in parts:
            w = site_w(gpu_w, wl)
            if isinstance(site.design_setting, float | int):
                i = int(np.argmin(np.abs(settings - site.design_setting)))
            else:
                probe = WorkloadFleet(
                    "", "", curve.knob, 1, settings, tps, gpu_w, gpu_w, w, w, _default_index(curve, settings)
                )
                i = probe.index(site.design_setting)
            per_gpu += wl.share * w[i]
        total = int(site.power_budget_mw * 1e6 // per_gpu)
    fleets = []
    for wl, curve, settings, tps, gpu_w, mean_w, label in parts:
        unit = site.unit_of(wl) if wl.unit is not None else None
        gpus = int(round((unit.count * unit.gpus_per_unit if unit else total) * wl.share))
        if gpus < 1:
            raise ProfileError(f"site '{site.name}': workload {label} gets no GPU (share {wl.share:g} of {total})")
        fleets.append(
            WorkloadFleet(
                label=label,
                curve_path=str(wl.curve),
                knob=curve.knob,
                gpus=gpus,
                settings=settings,
                tokens_per_s=tps,
                gpu_w=gpu_w,
                gpu_mean_w=mean_w,
                site_w=site_w(gpu_w, wl),
                site_mean_w=site_w(mean_w, wl),
                default_index=_default_index(curve, settings),
                capex_per_gpu_h=capex_h,
                latency=_latency_options(curve, site.provision),
                max_segments=site.max_segments,
            )
        )
    return Fleet(workloads=tuple(fleets), budget_mw=site.power_budget_mw)
