"""What a run says: curves, Max-P and Max-Q as honest ranges, flatness, knee, Pareto frontier,
savings against the default setting, and monotone fits.

A curve is one (phase, batch) of a run: per setting, the repeats (and GPUs, unless one is chosen)
give a mean and an interval of tokens/s and tokens/J. Max-P is the lowest setting whose tokens/s
cannot be told from the best; Max-Q the settings whose tokens/J cannot be told from the best (both
walk outwards from the best setting while the test of ``harness.readers.stats`` says "same"). Flagged
points are kept for display and left out of every statistic unless ``include_flagged``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from harness.errors import UsageError
from harness.knobs import OBSERVE, SM_CLOCK
from harness.knobs import knob as knob_of
from harness.readers.fit import MonotoneCurve, monotone_fit
from harness.readers.ranges import Range, best_range, max_p_range
from harness.readers.stats import Interval, mean_interval, pooled_noise
from harness.records.runview import PartInfo, RunData, load_run

#: drawn power below this share of the cap means the cap is not what limits the work
NOT_BINDING_SHARE = 0.95


@dataclass(frozen=True)
class SettingStats:
    """One (phase, batch, setting) of a run, over its included repeats."""

    phase: str
    batch_size: int
    setting: float
    enforced: float
    n: int
    n_flagged: int
    tokens_per_s: Interval
    tokens_per_j: Interval
    j_per_token: float
    power_mean_w: float
    power_p99_w: float | None  # highest over repeats: facilities provision for peaks
    power_max_1s_w: float | None
    sm_clock_mean_mhz: float | None
    ttft_ms: float | None = None
    ttft_ms_max: float | None = None
    tpot_ms: float | None = None
    tpot_ms_max: float | None = None
    tokens_per_s_per_user: float | None = None
    flags: tuple[str, ...] = ()
    clock_events: dict[str, float] = field(default_factory=dict)
    #: serving under load (endpoint runs): output and goodput tokens/s (means), worst repeat's p99s
    output_tokens_per_s: float | None = None
    goodput_tokens_per_s: float | None = None
    ttft_ms_p99: float | None = None
    tpot_ms_p99: float | None = None


@dataclass(frozen=True)
class Flatness:
    flat: bool
    above: float | None  # the setting above which tokens/s cannot be told from the best
    binds: bool  # whether the cap still limits the drawn power in the flat region
    draw_w: float | None  # what the work draws in the flat region
    sentence: str
    lowest: float | None = None  # the lowest measured setting (for the short verdict)
    single: bool = False  # one setting measured: no curve to judge

    @property
    def short(self) -> str:
        """The verdict in a table cell."""
        if self.single:
            return "one setting"
        if not self.flat or self.above is None:
            return "binds"
        if self.binds:
            return f"binds (within noise above {self.above:.0f})"
        if self.lowest is not None and self.above <= self.lowest:
            return "never binds"
        return f"flat above {self.above:.0f}"


@dataclass(frozen=True)
class Knee:
    setting: float
    slope_below: float  # tokens/s bought per unit of setting below the knee
    slope_above: float
    sentence: str


@dataclass(frozen=True)
class VsDefault:
    default_setting: float
    measured: bool  # False: the default was not measured, the highest setting stands in
    throughput_kept: float  # tokens/s at Max-Q / at default
    energy_saved: float  # 1 - (J/token at Max-Q) / (J/token at default)
    tokens_per_j_default: float
    tokens_per_s_default: float


@dataclass(frozen=True)
class Curve:
    phase: str
    batch_size: int
    stats: tuple[SettingStats, ...]
    max_p: Range
    max_q: Range
    flat: Flatness
    knee: Knee | None
    pareto: tuple[float, ...]
    vs_default: VsDefault | None
    fit_tokens_per_s: MonotoneCurve
    fit_power_w: MonotoneCurve
    fit_power_p99_w: MonotoneCurve | None
    fit_power_max_1s_w: MonotoneCurve | None

    @property
    def settings(self) -> np.ndarray:
        return np.array([s.setting for s in self.stats])

    def at(self, setting: float) -> SettingStats:
        return min(self.stats, key=lambda s: abs(s.setting - setting))


@dataclass(frozen=True)
class RunAnalysis:
    run: RunData
    knob: str
    unit: str
    part: PartInfo
    curves: tuple[Curve, ...]
    flagged: pd.DataFrame  # rows of points.csv with flags (shown, left out unless included)
    include_flagged: bool
    gpu: int | None
    tokenomics: object | None = None  # harness.readers.tokenomics.Tokenomics
    problems: tuple[str, ...] = ()

    def curve(self, phase: str | None = None, batch_size: int | None = None) -> Curve:
        found = [c for c in self.curves if (phase is None or c.phase == phase)
                 and (batch_size is None or c.batch_size == batch_size)]
        if not found:
            raise UsageError(f"run {self.run.run_id} has no curve for phase={phase} batch={batch_size}")
        return found[0]

    @property
    def phases(self) -> list[str]:
        return list(dict.fromkeys(c.phase for c in self.curves))


def _shares(col) -> dict[str, float]:
    """Mean share of window time per clock-event reason, from "name=share;..." strings."""
    acc: dict[str, list[float]] = {}
    for s in col:
        for part in str(s or "").split(";"):
            if "=" in part:
                k, v = part.split("=", 1)
                try:
                    acc.setdefault(k.strip(), []).append(float(v))
                except ValueError:
                    continue
    n = max(len(col), 1)
    return {k: sum(v) / n for k, v in acc.items()}


def _opt(x: np.ndarray, how: str) -> float | None:
    x = x[np.isfinite(x)]
    if not len(x):
        return None
    return float(x.max() if how == "max" else x.mean())


_NUM_COLS = ("setting", "enforced", "tokens_per_s", "tokens_per_j", "power_mean_w", "power_p99_w", "power_max_1s_w",
             "sm_clock_mean_mhz", "ttft_ms", "tpot_ms", "tokens_per_s_per_user", "output_tokens_per_s",
             "goodput_tokens_per_s", "ttft_ms_p99", "tpot_ms_p99")


def _arrays(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """The numeric columns as float arrays (absent columns as NaN), so per-group work stays in numpy."""
    n = len(df)
    return {c: (pd.to_numeric(df[c], errors="coerce").to_numpy(float) if c in df.columns else np.full(n, np.nan))
            for c in _NUM_COLS}


def setting_stats(points: pd.DataFrame, include_flagged: bool = False) -> list[SettingStats]:
    """Per (phase, batch, setting) statistics of the included rows; groups with no included row
    are left out (their flagged rows are still in ``RunAnalysis.flagged``)."""
    out: list[SettingStats] = []
    flagged_all = points["flags"].astype(str).str.len().to_numpy() > 0
    for (phase, batch), idx in points.groupby(["phase", "batch_size"], sort=True).indices.items():
        rows = points.iloc[idx]
        fl = flagged_all[idx]
        col = _arrays(rows)
        use = np.ones(len(idx), bool) if include_flagged else ~fl
        if not use.any():
            continue
        flags_col = rows["flags"].astype(str).to_numpy()
        shares_col = rows["clock_event_shares"].astype(str).to_numpy()
        settings = col["setting"]
        uniq = np.unique(settings[use])
        groups = {k: (use & (settings == k)) for k in uniq}
        sig_s, df_s = pooled_noise([col["tokens_per_s"][m] for m in groups.values()],
                                   np.array([col["tokens_per_s"][m].mean() for m in groups.values()]))
        sig_j, df_j = pooled_noise([col["tokens_per_j"][m] for m in groups.values()],
                                   np.array([col["tokens_per_j"][m].mean() for m in groups.values()]))
        for setting, m in groups.items():
            flags = sorted({f for fl_ in flags_col[m] for f in fl_.split(";") if f})
            tpj = col["tokens_per_j"][m]
            enf = _opt(col["enforced"][m], "mean")
            out.append(SettingStats(
                phase=str(phase), batch_size=int(batch), setting=float(setting),
                enforced=float(setting) if enf is None else enf,
                n=int(m.sum()), n_flagged=int((fl & (settings == setting)).sum()),
                tokens_per_s=mean_interval(col["tokens_per_s"][m], sig_s, df_s),
                tokens_per_j=mean_interval(tpj, sig_j, df_j),
                j_per_token=float(1.0 / tpj.mean()) if tpj.mean() > 0 else float("nan"),
                power_mean_w=float(col["power_mean_w"][m].mean()),
                power_p99_w=_opt(col["power_p99_w"][m], "max"),
                power_max_1s_w=_opt(col["power_max_1s_w"][m], "max"),
                sm_clock_mean_mhz=_opt(col["sm_clock_mean_mhz"][m], "mean"),
                ttft_ms=_opt(col["ttft_ms"][m], "mean"), ttft_ms_max=_opt(col["ttft_ms"][m], "max"),
                tpot_ms=_opt(col["tpot_ms"][m], "mean"), tpot_ms_max=_opt(col["tpot_ms"][m], "max"),
                tokens_per_s_per_user=_opt(col["tokens_per_s_per_user"][m], "mean"),
                flags=tuple(flags), clock_events=_shares(shares_col[m]),
                output_tokens_per_s=_opt(col["output_tokens_per_s"][m], "mean"),
                goodput_tokens_per_s=_opt(col["goodput_tokens_per_s"][m], "mean"),
                ttft_ms_p99=_opt(col["ttft_ms_p99"][m], "max"), tpot_ms_p99=_opt(col["tpot_ms_p99"][m], "max"),
            ))
    return out


def _cap_free_above(stats: list[SettingStats]) -> float | None:
    """The lowest power limit from which every higher limit draws clearly less than itself: the
    physical sign that the cap is not what limits the work there (None when the top one binds)."""
    free = None
    for s in reversed(stats):
        if s.power_mean_w >= NOT_BINDING_SHARE * s.setting:
            break
        free = s.setting
    return free


def _flatness(stats: list[SettingStats], max_p: Range, knob: str, unit: str) -> Flatness:
    """Whether the curve is flat and, for the power limit, whether the cap binds. The cap's
    verdict comes from drawn power (it cannot bind where the work draws less than it allows);
    the throughput's from the statistics (Max-P)."""
    top = stats[-1].setting
    lowest = stats[0].setting
    if len(stats) == 1:
        how = "the setting found (observe-only run)" if knob_of(knob) is OBSERVE else "one setting"
        return Flatness(False, None, True, stats[0].power_mean_w,
                        f"{how}: {top:.0f} {unit} measured, so there is no curve to read; sweep the "
                        "setting to find Max-Q", single=True)
    tps_flat = max_p.hi == top and max_p.lo < top
    if knob_of(knob) is SM_CLOCK:
        if not tps_flat:
            return Flatness(False, None, True, None, f"tokens/s falls as soon as the clock is locked below "
                            f"{top:.0f} {unit}: the clock limits this work across the range")
        s = (f"tokens/s is flat above {max_p.lo:.0f} {unit}: a higher clock cannot be told from the best"
             if max_p.lo > lowest else f"tokens/s is flat across the whole range ({lowest:.0f}-{top:.0f} "
             f"{unit}): the clock does not limit this work")
        return Flatness(True, max_p.lo, True, None, s)
    free = _cap_free_above(stats)
    if free is not None:
        draw = float(np.median([s.power_mean_w for s in stats if s.setting >= free]))
        if free <= lowest:
            s = f"the cap does not bind anywhere in the range ({lowest:.0f}-{top:.0f} W): the work draws about " \
                f"{draw:.0f} W"
        else:
            s = f"the cap does not bind above {free:.0f} W: the work draws about {draw:.0f} W"
        if max_p.lo < free:
            s += f"; below it tokens/s still cannot be told from the best down to {max_p.lo:.0f} W"
        elif max_p.lo > free:
            s += f"; tokens/s is best above {max_p.lo:.0f} W by a measurable margin"
        return Flatness(True, free, False, draw, s)
    if not tps_flat:
        return Flatness(False, None, True, None, f"tokens/s falls as soon as the cap is lowered below "
                        f"{top:.0f} {unit}: it binds across the range")
    return Flatness(True, max_p.lo, True, None,
                    f"tokens/s above {max_p.lo:.0f} {unit} cannot be told from the best: the cap binds there "
                    "but costs less than the noise")


def _knee(fit: MonotoneCurve, unit: str) -> Knee | None:
    """Kneedle: the setting where the normalised curve stands furthest above its chord, i.e. past
    which each further unit of setting buys the least."""
    if len(fit.settings) < 3:
        return None
    x = np.linspace(fit.lo, fit.hi, 401)
    y = fit(x)
    if y[-1] - y[0] <= 0:
        return None
    d = (y - y[0]) / (y[-1] - y[0]) - (x - x[0]) / (x[-1] - x[0])
    i = int(np.argmax(d))
    if d[i] < 0.02 or i in (0, len(x) - 1):
        return None
    k = float(x[i])
    below = float((y[i] - y[0]) / (k - x[0]))
    above = float((y[-1] - y[i]) / (x[-1] - k))
    return Knee(k, below, above, f"knee at {k:.0f} {unit}: below it each {unit} buys {below:,.1f} tokens/s, "
                f"above it {above:,.1f}")


def _pareto(stats: list[SettingStats]) -> tuple[float, ...]:
    out = []
    for s in stats:
        a, b = s.tokens_per_s.mean, s.tokens_per_j.mean
        dominated = any(
            (o.tokens_per_s.mean >= a and o.tokens_per_j.mean >= b)
            and (o.tokens_per_s.mean > a or o.tokens_per_j.mean > b) for o in stats)
        if not dominated:
            out.append(s.setting)
    return tuple(out)


def _vs_default(stats: list[SettingStats], max_q: Range, knob: str, part: PartInfo) -> VsDefault | None:
    default = stats[-1].setting if knob_of(knob) is SM_CLOCK else part.power_limit_default_w
    near = min(stats, key=lambda s: abs(s.setting - default))
    measured = abs(near.setting - default) <= max(0.005 * default, 0.5)
    d = near if measured else stats[-1]
    q = next(s for s in stats if s.setting == max_q.best)
    if d.tokens_per_s.mean <= 0 or q.tokens_per_j.mean <= 0:
        return None
    return VsDefault(default_setting=d.setting if not measured else default, measured=measured,
                     throughput_kept=q.tokens_per_s.mean / d.tokens_per_s.mean,
                     energy_saved=1.0 - d.tokens_per_j.mean / q.tokens_per_j.mean if d.tokens_per_j.mean > 0 else 0.0,
                     tokens_per_j_default=d.tokens_per_j.mean, tokens_per_s_default=d.tokens_per_s.mean)


def _weights(stats: list[SettingStats], attr: str) -> np.ndarray:
    return np.array([max(s.n, 1) for s in stats], dtype=float)


def _fit(stats: list[SettingStats], attr: str) -> MonotoneCurve | None:
    vals = [getattr(s, attr) for s in stats]
    vals = [v.mean if isinstance(v, Interval) else v for v in vals]
    if any(v is None for v in vals):
        return None
    return monotone_fit([s.setting for s in stats], vals, _weights(stats, attr))


def _repeats(rows: pd.DataFrame, sold: bool = False) -> tuple[dict[float, np.ndarray], dict[float, np.ndarray]]:
    """tokens/s and tokens/J of every included repeat, by setting (what the ranges test). ``sold``: a
    server's output tokens where the rows have them (what tokenomics counts for a serving run)."""
    if sold and "output_tokens_per_s" in rows and rows["output_tokens_per_s"].notna().all():
        rows = rows.assign(tokens_per_s=rows["output_tokens_per_s"],
                           tokens_per_j=rows["output_tokens"] / rows["joules"])
    by_s = {float(k): np.asarray(g, dtype=float) for k, g in rows.groupby("setting")["tokens_per_s"]}
    by_j = {float(k): np.asarray(g, dtype=float) for k, g in rows.groupby("setting")["tokens_per_j"]}
    return by_s, by_j


def _curve(phase: str, batch: int, stats: list[SettingStats], rows: pd.DataFrame, knob: str, unit: str,
           part: PartInfo, chosen: float | None = None) -> Curve:
    stats = sorted(stats, key=lambda s: s.setting)
    by_s, by_j = _repeats(rows)
    max_p = max_p_range(stats, by_s)
    max_q = best_range(stats, by_j, "tokens_per_j", chosen)
    fit_s = _fit(stats, "tokens_per_s")
    return Curve(phase=phase, batch_size=batch, stats=tuple(stats), max_p=max_p, max_q=max_q,
                 flat=replace(_flatness(stats, max_p, knob, unit), lowest=stats[0].setting),
                 knee=_knee(fit_s, unit) if max_p.lo > stats[0].setting else None,  # a flat curve has no knee
                 pareto=_pareto(stats),
                 vs_default=_vs_default(stats, max_q, knob, part), fit_tokens_per_s=fit_s,
                 fit_power_w=_fit(stats, "power_mean_w"), fit_power_p99_w=_fit(stats, "power_p99_w"),
                 fit_power_max_1s_w=_fit(stats, "power_max_1s_w"))


def search_answers(manifest: dict, points: pd.DataFrame) -> dict[tuple[str, int], float]:
    """A run's Max-Q search answers (manifest ``search``) by (phase, batch): a search decides on the
    first phase each point measures. Empty for a grid run."""
    answers = [a for a in manifest.get("search") or [] if a.get("setting") is not None]
    if not answers or not len(points):
        return {}
    first = str(points.sort_values("point_index")["phase"].iloc[0])
    return {(first, int(a["batch_size"])): float(a["setting"]) for a in answers}


def ranges_of(points: pd.DataFrame, include_flagged: bool = False,
              searched: dict[tuple[str, int], float] | None = None) -> dict[tuple[str, int], tuple[Range, Range]]:
    """(Max-Q, Max-P) of every (phase, batch) in a table of points.csv rows: one run's, or several
    GPUs' pooled as repeats (``fleet collect``): the same definition every output uses. ``searched``:
    the run's Max-Q search answers (``search_answers``)."""
    use = points if include_flagged else points[points["flags"].astype(str).str.len() == 0]
    stats = setting_stats(points, include_flagged)
    out = {}
    for (phase, batch), rows in use.groupby(["phase", "batch_size"], sort=True):
        st = sorted((s for s in stats if s.phase == phase and s.batch_size == batch), key=lambda s: s.setting)
        if st:
            by_s, by_j = _repeats(rows)
            chosen = (searched or {}).get((str(phase), int(batch)))
            out[(str(phase), int(batch))] = (best_range(st, by_j, "tokens_per_j", chosen), max_p_range(st, by_s))
    return out


def analyse(run: RunData | str, include_flagged: bool = False, gpu: int | None = None,
            tpot_ms: float | None = None, ttft_ms: float | None = None) -> RunAnalysis:
    """Analyse a run directory (or a loaded run). ``gpu`` restricts to one GPU; otherwise the GPUs
    of a node are pooled as further repeats of the same part. ``tpot_ms``/``ttft_ms`` set the
    latency target of the tokenomics Max-Q."""
    from harness.readers.tokenomics import tokenomics

    if not isinstance(run, RunData):
        run = load_run(run)
    pts = run.points
    if gpu is not None:
        if gpu not in set(pts["gpu_index"]):
            raise UsageError(f"run {run.run_id} has no GPU {gpu} (it has {sorted(set(pts['gpu_index']))})")
        pts = pts[pts["gpu_index"] == gpu]
    knob = run.knob
    unit = knob_of(knob).unit
    flagged = pts[pts["flags"].astype(str).str.len() > 0]
    use = pts if include_flagged else pts[pts["flags"].astype(str).str.len() == 0]
    all_stats = setting_stats(pts, include_flagged)
    curves = []
    problems = list(run.problems)
    repeats: dict[tuple[str, int], tuple[dict, dict]] = {}
    searched = search_answers(run.manifest, run.points)
    for (phase, batch), rows in use.groupby(["phase", "batch_size"], sort=True):
        stats = [s for s in all_stats if s.phase == phase and s.batch_size == batch]
        repeats[(str(phase), int(batch))] = _repeats(rows, sold=True)
        if stats:
            chosen = searched.get((str(phase), int(batch)))
            curve = _curve(str(phase), int(batch), stats, rows, knob, unit, run.part, chosen)
            if chosen is not None and curve.max_q.best != chosen:
                problems.append(f"the Max-Q search chose {chosen:g} {unit} (batch {batch}), which the repeats tell "
                                f"from the best measured tokens/J ({curve.max_q.best:g} {unit})")
            curves.append(curve)
    if not curves:
        raise UsageError(f"run {run.run_id} has no valid point to analyse ({len(flagged)} flagged; "
                         "use --include-flagged to analyse them anyway)")
    if len(flagged) and not include_flagged:
        problems.append(f"{len(flagged)} flagged point(s) shown but left out of the statistics")
    tk = tokenomics(all_stats, tpot_ms=tpot_ms, ttft_ms=ttft_ms, unit=unit, repeats=repeats)
    return RunAnalysis(run=run, knob=knob, unit=unit, part=run.part, curves=tuple(curves), flagged=flagged,
                       include_flagged=include_flagged, gpu=gpu, tokenomics=tk, problems=tuple(problems))
