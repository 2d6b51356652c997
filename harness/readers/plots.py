"""Figures of one run (matplotlib, Agg): curves with intervals and Max-Q/Max-P ranges, the Pareto
and tokenomics frontiers, power and SM-clock timelines, clock-event reasons.

Each function draws one figure and saves it as PNG and SVG under ``outdir``; it returns the PNG
path. Telemetry of long runs is reduced to a per-bin mean with its min-max envelope, so a plot of
a million samples stays light and still shows the peaks a facility provisions for.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.knobs import POWER_LIMIT, knob
from harness.readers.analysis import Curve, RunAnalysis  # noqa: E402

TIMELINE_BINS = 1500
plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
                     "axes.spines.top": False, "axes.spines.right": False, "legend.fontsize": 8,
                     "svg.fonttype": "none"})


#: file formats every figure is written in (the PNG is what a report embeds)
FORMATS = ("png", "svg")


def save(fig, outdir: Path, name: str, formats: tuple[str, ...] = FORMATS) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    for fmt in dict.fromkeys(("png", *formats)):
        fig.savefig(outdir / f"{name}.{fmt}")
    plt.close(fig)
    return outdir / f"{name}.png"


def knob_label(field: str) -> str:
    return knob(field).label


def _colors(n: int):
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _span(ax, lo: float, hi: float, pad: float, color, label: str | None) -> None:
    ax.axvspan(lo - pad, hi + pad, color=color, alpha=0.13, lw=0, label=label)


def _band(ax, x: np.ndarray, y: np.ndarray, lo: float, hi: float, color) -> None:
    """A range drawn as a thick translucent stroke along the curve (several curves on one axes)."""
    m = (x >= lo) & (x <= hi)
    ax.plot(x[m], y[m], "-o" if m.sum() == 1 else "-", lw=10, ms=14, alpha=0.25, color=color,
            solid_capstyle="round")


def _curve_label(c: Curve, many: bool) -> str:
    return f"batch {c.batch_size}" if many else f"{c.phase}"


def curves_figure(a: RunAnalysis, phase: str, outdir: Path, title_suffix: str = "",
                  formats: tuple[str, ...] = FORMATS) -> Path:
    """tokens/s and tokens/J against the setting (with intervals, fit, ranges shaded) and against
    measured power."""
    curves = [c for c in a.curves if c.phase == phase]
    many = len(curves) > 1
    fig, axs = plt.subplots(2, 2, figsize=(12, 8.2))
    (ax_s, ax_j), (ax_ps, ax_pj) = axs
    lo_x = min(a.part.power_limit_min_w if knob(a.knob) is POWER_LIMIT else c.settings.min() for c in curves)
    hi_x = max(a.part.power_limit_max_w if knob(a.knob) is POWER_LIMIT else c.settings.max() for c in curves)
    width = max(hi_x - lo_x, 1.0)
    steps = [np.diff(c.settings).min() for c in curves if len(c.settings) > 1]
    pad = min(steps) / 4 if steps else width * 0.01
    for c, color in zip(curves, _colors(len(curves))):
        x = c.settings
        tps = np.array([s.tokens_per_s.mean for s in c.stats])
        tps_e = np.array([np.nan_to_num(s.tokens_per_s.half_width) for s in c.stats])
        tpj = np.array([s.tokens_per_j.mean for s in c.stats])
        tpj_e = np.array([np.nan_to_num(s.tokens_per_j.half_width) for s in c.stats])
        pw = np.array([s.power_mean_w for s in c.stats])
        lab = _curve_label(c, many)
        if many:
            _band(ax_s, x, tps, c.max_p.lo, c.max_p.hi, color)
            _band(ax_j, x, tpj, c.max_q.lo, c.max_q.hi, color)
        else:
            _span(ax_s, c.max_p.lo, c.max_p.hi, pad, color, "Max-P range (cannot be told from best)")
            _span(ax_j, c.max_q.lo, c.max_q.hi, pad, color, "Max-Q range (cannot be told from best)")
        ax_s.errorbar(x, tps, yerr=tps_e, fmt="o", ms=4, color=color, capsize=3, label=f"{lab} (mean, 95% CI)")
        xf = np.linspace(c.fit_tokens_per_s.lo, c.fit_tokens_per_s.hi, 200)
        ax_s.plot(xf, c.fit_tokens_per_s(xf), "-", color=color, lw=1.2, alpha=0.8,
                  label=None if many else "monotone fit")
        ax_j.errorbar(x, tpj, yerr=tpj_e, fmt="o-", ms=4, lw=1, color=color, capsize=3, label=f"{lab} (mean, 95% CI)")
        ax_s.plot([c.max_p.best], [c.max_p.value], marker="*", ms=14, color=color, mec="k", ls="none",
                  label=None if many else f"Max-P {c.max_p.best:.0f} {a.unit}")
        ax_j.plot([c.max_q.best], [c.max_q.value], marker="*", ms=14, color=color, mec="k", ls="none",
                  label=None if many else f"Max-Q {c.max_q.best:.0f} {a.unit}")
        ax_ps.errorbar(pw, tps, yerr=tps_e, fmt="o-", ms=4, lw=1, color=color, capsize=3, label=lab)
        ax_pj.errorbar(pw, tpj, yerr=tpj_e, fmt="o-", ms=4, lw=1, color=color, capsize=3, label=lab)
        if c.flat.flat and c.flat.above is not None and not c.flat.binds:
            never = c.flat.above <= x.min()
            text = (f"cap never binds (draws ~{c.flat.draw_w:.0f} W)" if never
                    else f"cap does not bind above {c.flat.above:.0f} {a.unit}")
            if not never:
                ax_s.axvline(c.flat.above, color=color, ls=":", lw=1)
            ax_s.annotate(text, (c.flat.above, float(np.max(tps))), textcoords="offset points", xytext=(6, 6),
                          fontsize=8, color=color)
    fl = a.flagged[a.flagged["phase"] == phase] if len(a.flagged) else a.flagged
    if len(fl) and not a.include_flagged:
        for ax, col in ((ax_s, "tokens_per_s"), (ax_j, "tokens_per_j")):
            ax.plot(fl["setting"], fl[col], "x", color="crimson", ms=8, mew=2, label="flagged (left out)")
        ax_ps.plot(fl["power_mean_w"], fl["tokens_per_s"], "x", color="crimson", ms=8, mew=2)
        ax_pj.plot(fl["power_mean_w"], fl["tokens_per_j"], "x", color="crimson", ms=8, mew=2)
    xl = knob_label(a.knob)
    ax_s.set(xlabel=xl, ylabel="tokens/s per GPU", title="Throughput against the setting")
    ax_j.set(xlabel=xl, ylabel="tokens/J per GPU", title="Energy efficiency against the setting")
    ax_ps.set(xlabel="measured mean power (W)", ylabel="tokens/s per GPU", title="Throughput against measured power")
    ax_pj.set(xlabel="measured mean power (W)", ylabel="tokens/J per GPU", title="Efficiency against measured power")
    for ax in (ax_s, ax_j):
        ax.set_xlim(lo_x - 0.03 * width, hi_x + 0.03 * width)
    if many:
        ax_s.plot([], [], "-", lw=10, alpha=0.25, color="0.4", label="Max-P range (cannot be told from best)")
        ax_j.plot([], [], "-", lw=10, alpha=0.25, color="0.4", label="Max-Q range (cannot be told from best)")
        ax_s.plot([], [], "*", ms=12, color="0.6", mec="k", ls="none", label="Max-P")
        ax_j.plot([], [], "*", ms=12, color="0.6", mec="k", ls="none", label="Max-Q (best)")
    for ax in axs.flat:
        ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * (1.12 if ax in (ax_s, ax_j) else 1.0))
        ax.legend(loc="best")
    fig.suptitle(f"{a.part.name} · {a.run.workload.get('name', '')} · phase {phase}{title_suffix}", fontsize=12)
    return save(fig, outdir, f"curves-{phase}", formats)


def pareto_figure(a: RunAnalysis, outdir: Path, formats: tuple[str, ...] = FORMATS) -> Path:
    """tokens/s against tokens/J for every (phase, batch), frontier joined, settings labelled."""
    fig, axes = plt.subplots(1, len(a.phases), figsize=(max(7.5, 6.2 * len(a.phases)), 5.0), squeeze=False)
    for ax, phase in zip(axes[0], a.phases):
        curves = [c for c in a.curves if c.phase == phase]
        for c, color in zip(curves, _colors(len(curves))):
            tpj = np.array([s.tokens_per_j.mean for s in c.stats])
            tps = np.array([s.tokens_per_s.mean for s in c.stats])
            ax.plot(tpj, tps, "o", color=color, alpha=0.35, ms=5)
            front = [s for s in c.stats if s.setting in c.pareto]
            front.sort(key=lambda s: s.tokens_per_j.mean)
            ax.plot([s.tokens_per_j.mean for s in front], [s.tokens_per_s.mean for s in front], "o-", color=color,
                    ms=5, label=f"batch {c.batch_size} frontier")
            ends = {0, len(front) - 1} | {i for i, s in enumerate(front) if s.setting == c.max_q.best}
            for i in sorted(ends):
                s = front[i]
                ax.annotate(f"{s.setting:.0f} {a.unit}", (s.tokens_per_j.mean, s.tokens_per_s.mean),
                            textcoords="offset points", xytext=(4, 4 if i == 0 else -10), fontsize=7, color=color)
        ax.set(xlabel="tokens/J per GPU", ylabel="tokens/s per GPU", title=f"Pareto frontier · {phase}")
        ax.set_ylim(bottom=0)
        ax.legend(loc="lower left")
    fig.suptitle(f"{a.part.name}\nfrontier: settings that no other setting beats on both tokens/s and tokens/J",
                 fontsize=10)
    return save(fig, outdir, "frontier", formats)


def tokenomics_figure(a: RunAnalysis, outdir: Path, formats: tuple[str, ...] = FORMATS) -> Path | None:
    """Per setting, tokens/s per GPU (left) and tokens/J (right) against tokens/s per user; the
    latency target and its Max-Q marked."""
    tk = a.tokenomics
    if tk is None:
        return None
    by = tk.by_setting()
    cmap = plt.get_cmap("viridis")
    settings = sorted(by)
    norm = plt.Normalize(min(settings), max(settings) if len(settings) > 1 else min(settings) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12.5, 5))
    for s in settings:
        pts = by[s]
        xs = [p.tokens_per_s_per_user for p in pts]
        ax1.plot(xs, [p.tokens_per_s for p in pts], "o-", color=cmap(norm(s)), ms=4, lw=1.2)
        ax2.plot(xs, [p.tokens_per_j for p in pts], "o-", color=cmap(norm(s)), ms=4, lw=1.2)
        if s == settings[-1]:
            for p in pts:
                ax1.annotate(f"batch {p.batch_size}", (p.tokens_per_s_per_user, p.tokens_per_s), fontsize=7,
                             textcoords="offset points", xytext=(5, 3), color="0.25")
    front = tk.frontier()
    ax1.plot([p.tokens_per_s_per_user for p in front], [p.tokens_per_s for p in front], "--", color="k", lw=1,
             label="frontier over all settings")
    lat = tk.latency
    if lat is not None:
        x_target = 1000.0 / lat.tpot_ms_target
        for ax in (ax1, ax2):
            ax.axvspan(0, x_target, color="0.5", alpha=0.12, lw=0, label="misses the TPOT target")
            ax.axvline(x_target, color="crimson", ls=":", lw=1.3,
                       label=f"TPOT target {lat.tpot_ms_target:g} ms (= {x_target:.0f} tokens/s per user)")
        if lat.max_q is not None:
            q = lat.max_q
            ax1.plot([q.tokens_per_s_per_user], [q.tokens_per_s], "*", ms=15, color="gold", mec="k",
                     label=f"Max-Q within target: {q.setting:.0f} {a.unit}, batch {q.batch_size}")
            ax2.plot([q.tokens_per_s_per_user], [q.tokens_per_j], "*", ms=15, color="gold", mec="k")
            mp = lat.max_p
            ax1.plot([mp.tokens_per_s_per_user], [mp.tokens_per_s], "P", ms=11, color="tomato", mec="k",
                     label=f"Max-P within target: {mp.setting:.0f} {a.unit}, batch {mp.batch_size}")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax2, label=knob_label(a.knob), pad=0.01)
    ax1.set(xlabel="tokens/s per user (interactivity)", ylabel="tokens/s per GPU",
            title=f"Speed per GPU against speed per user ({tk.phase})")
    ax2.set(xlabel="tokens/s per user (interactivity)", ylabel="tokens/J per GPU",
            title="Efficiency against speed per user")
    for ax in (ax1, ax2):
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
    ax1.legend(loc="upper right")
    fig.suptitle(f"{a.part.name}: tokenomics frontier, one line per setting over batch sizes", fontsize=11)
    return save(fig, outdir, "tokenomics", formats)


def _break_gaps(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaN where samples stop (between windows), so a line does not bridge a warm-up."""
    if len(t) < 3:
        return t, y
    dt = np.diff(t)
    gap = np.flatnonzero(dt > max(10 * float(np.median(dt)), 0.5)) + 1
    return np.insert(t, gap, np.nan), np.insert(y, gap, np.nan)


def _envelope(t: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin time, mean, min and max of time-sorted samples (bins without samples are NaN, so
    gaps stay gaps); short traces come back as they are, with their gaps broken."""
    ok = np.isfinite(y) & np.isfinite(t)
    t, y = t[ok], y[ok]
    if len(t) <= 2 * bins:
        t, y = _break_gaps(t, y)
        return t, y, y, y
    edges = np.linspace(t[0], t[-1], bins + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, bins - 1)
    starts = np.searchsorted(idx, np.arange(bins))
    cnt = np.diff(np.append(starts, len(idx)))
    full = cnt > 0
    mean = np.full(bins, np.nan)
    mn = np.full(bins, np.nan)
    mx = np.full(bins, np.nan)
    mean[full] = np.add.reduceat(y, starts[full]) / cnt[full]
    mn[full] = np.minimum.reduceat(y, starts[full])
    mx[full] = np.maximum.reduceat(y, starts[full])
    return (edges[:-1] + edges[1:]) / 2, mean, mn, mx


def _trace(ax, t: np.ndarray, y: np.ndarray, bins: int, color, label: str | None) -> None:
    order = np.argsort(t, kind="stable")
    tm, m, lo, hi = _envelope(t[order], y[order], bins)
    ax.fill_between(tm, lo, hi, color=color, alpha=0.25, lw=0)
    ax.plot(tm, m, color=color, lw=0.8, label=label)


def timeline_figure(a: RunAnalysis, outdir: Path, formats: tuple[str, ...] = FORMATS) -> Path | None:
    """Power (the driver's 50 Hz history where recorded, else the instant field) and SM clock over
    the run, with each window's power limit."""
    tel = a.run.all_telemetry(("t_s", "power_instant_w", "power_average_w", "sm_clock_mhz", "gpu_index"))
    gpu_of = dict(zip(a.run.points["point_index"], a.run.points["gpu_index"]))
    polls, hist = [], []
    for t in tel:
        g = int(gpu_of.get(t.point_index, 0))
        if len(t.samples) and "t_s" in t.samples:
            polls.append(t.samples.assign(gpu_index=t.samples.get("gpu_index", g)))
        if t.history is not None and len(t.history):
            hist.append(t.history.assign(gpu_index=t.history.get("gpu_index", g)))
    if not polls and not hist:
        return None
    df = pd.concat(polls, ignore_index=True) if polls else pd.DataFrame({"t_s": [], "gpu_index": []})
    hf = pd.concat(hist, ignore_index=True) if hist else None
    if a.gpu is not None:
        df = df[df["gpu_index"] == a.gpu]
        hf = hf[hf["gpu_index"] == a.gpu] if hf is not None else None
    t0 = float(min(df["t_s"].min() if len(df) else np.inf, hf["t_s"].min() if hf is not None else np.inf))
    fig, (axp, axc) = plt.subplots(2, 1, figsize=(13, 6.5), sharex=True)
    gpus = sorted(set(df["gpu_index"]) | (set(hf["gpu_index"]) if hf is not None else set()))
    bins = TIMELINE_BINS // max(1, min(len(gpus), 4))
    if hf is not None and len(hf):
        psrc, pcol, which = hf, "power_w", "driver power history, 50 Hz"
    elif "power_instant_w" in df and df["power_instant_w"].notna().any():
        psrc, pcol, which = df, "power_instant_w", "instant field"
    else:
        psrc, pcol, which = df, "power_average_w", "1 s average field"
    for g, color in zip(gpus, _colors(len(gpus))):
        lab = f"GPU {g}" if len(gpus) > 1 else None
        p = psrc[psrc["gpu_index"] == g]
        if pcol in p and p[pcol].notna().any():
            _trace(axp, p["t_s"].to_numpy(float) - t0, p[pcol].to_numpy(float), bins, color, lab)
        c = df[df["gpu_index"] == g]
        if "sm_clock_mhz" in c and c["sm_clock_mhz"].notna().any():
            _trace(axc, c["t_s"].to_numpy(float) - t0, c["sm_clock_mhz"].to_numpy(float), bins, color, lab)
    if knob(a.knob) is POWER_LIMIT and "window_start_s" in a.run.points:
        p = a.run.points.drop_duplicates(["window_start_s", "setting"])
        axp.hlines(p["setting"], p["window_start_s"] - t0, p["window_end_s"] - t0, color="k", lw=1.5,
                   label="power limit of the window")
    axp.set(ylabel="power (W)", title=f"Power ({which}; line: mean, shaded: min-max per time bin)")
    axc.set(ylabel="SM clock (MHz)", xlabel="run time (s, device clock; blank between windows: warm-up, settling)",
            title="SM clock")
    axp.set_ylim(bottom=0)
    axc.set_ylim(bottom=0)
    if axp.get_legend_handles_labels()[0]:
        axp.legend(loc="upper right")
    if len(gpus) > 1:
        axc.legend(loc="lower right")
    return save(fig, outdir, "timeline", formats)


def clock_events_figure(a: RunAnalysis, outdir: Path, formats: tuple[str, ...] = FORMATS) -> Path | None:
    """Share of window time each clock-event (throttle) reason was active, per setting."""
    rows = []
    for c in a.curves:
        for s in c.stats:
            for k, v in s.clock_events.items():
                rows.append({"phase": c.phase, "setting": s.setting, "reason": k, "share": v})
    if not rows:
        return None
    df = pd.DataFrame(rows).groupby(["phase", "setting", "reason"])["share"].mean().reset_index()
    reasons = sorted(df["reason"].unique())
    phases = list(dict.fromkeys(df["phase"]))
    fig, axes = plt.subplots(1, len(phases), figsize=(max(6.5, 5.5 * len(phases)), 4), squeeze=False)
    colors = dict(zip(reasons, _colors(len(reasons))))
    for ax, phase in zip(axes[0], phases):
        d = df[df["phase"] == phase].pivot(index="setting", columns="reason", values="share").fillna(0.0)
        x = np.arange(len(d.index))
        bottom = np.zeros(len(d.index))
        for r in d.columns:
            ax.bar(x, 100 * d[r].to_numpy(), bottom=bottom, color=colors[r], label=r, width=0.8)
            bottom += 100 * d[r].to_numpy()
        step = max(1, len(x) // 12)
        ax.set_xticks(x[::step], [f"{v:.0f}" for v in d.index[::step]])
        ax.set(xlabel=knob_label(a.knob), ylabel="share of window time (%)", title=f"Clock-event reasons · {phase}")
        ax.set_ylim(0, max(100.0, float(bottom.max()) * 1.05))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="reason")
    return save(fig, outdir, "clock-events", formats)
