"""``tokbench compare``: several runs side by side (parts, generations, drivers).

Runs are comparable when their workload's comparison metadata agree (``WorkloadSpec
.comparison_key``: kind, model, precision, batch, sequence lengths) and they turned the same knob.
Otherwise the comparison is refused, unless ``allow_mismatch``, and then every output says so.
The table and the overlay plots (absolute settings, and settings as a share of each part's max)
cover the (phase, batch) curves the runs have in common.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from harness.errors import UsageError
from harness.knobs import SM_CLOCK, knob
from harness.readers.analysis import Curve, RunAnalysis, analyse
from harness.records.runview import load_run

MISMATCH_MARK = "MISMATCHED COMPARISON (--allow-mismatch): runs differ in workload metadata"


@dataclass(frozen=True)
class CompareRow:
    run_id: str
    part: str
    phase: str
    batch_size: int
    max_p_setting: float
    max_p_tokens_per_s: float
    max_q_lo: float
    max_q_hi: float
    max_q_best: float
    max_q_tokens_per_j: float
    tokens_per_j_default: float | None
    throughput_kept: float | None
    tokens_per_s_per_kw: float  # Max-P tokens/s per kW of the power measured there
    ratio_max_p: float  # Max-P tokens/s against the first run's


@dataclass(frozen=True)
class Comparison:
    analyses: tuple[RunAnalysis, ...]
    rows: tuple[CompareRow, ...]
    mismatched: bool
    differences: tuple[str, ...]
    keys: tuple[tuple[str, int], ...] = ()  # (phase, batch) compared; batch -1: each run's largest
    outdir: Path | None = None
    plots: tuple[Path, ...] = ()
    markdown: Path | None = None


def differences(analyses: list[RunAnalysis]) -> list[str]:
    """What differs in the comparison metadata, one phrase per field."""
    out = []
    first = analyses[0].run
    for a in analyses[1:]:
        for k, v in first.comparison_key.items():
            w = a.run.comparison_key.get(k)
            if v != w:
                out.append(f"{k}: {v!r} ({first.run_id}) vs {w!r} ({a.run.run_id})")
        if a.knob != analyses[0].knob:
            out.append(f"knob: {analyses[0].knob} ({first.run_id}) vs {a.knob} ({a.run.run_id})")
    return out


def _max_setting(a: RunAnalysis) -> float:
    if knob(a.knob) is SM_CLOCK:
        return float(a.part.max_sm_clock_mhz or max(c.settings.max() for c in a.curves))
    return float(a.part.power_limit_max_w)


def _row(a: RunAnalysis, c: Curve, ref: float | None) -> CompareRow:
    p = c.at(c.max_p.best)
    d = c.vs_default
    return CompareRow(
        run_id=a.run.run_id, part=a.part.name, phase=c.phase, batch_size=c.batch_size, max_p_setting=c.max_p.best,
        max_p_tokens_per_s=c.max_p.value, max_q_lo=c.max_q.lo, max_q_hi=c.max_q.hi, max_q_best=c.max_q.best,
        max_q_tokens_per_j=c.max_q.value, tokens_per_j_default=d.tokens_per_j_default if d else None,
        throughput_kept=d.throughput_kept if d else None,
        tokens_per_s_per_kw=p.tokens_per_s.mean / (p.power_mean_w / 1000.0) if p.power_mean_w > 0 else float("nan"),
        ratio_max_p=c.max_p.value / ref if ref else 1.0,
    )


def _common_curves(analyses: list[RunAnalysis]) -> list[tuple[str, int]]:
    keys = [{(c.phase, c.batch_size) for c in a.curves} for a in analyses]
    common = set.intersection(*keys)
    if common:
        return sorted(common)
    phases = set.intersection(*[{c.phase for c in a.curves} for a in analyses])
    return sorted((ph, -1) for ph in phases)  # -1: each run's largest batch of that phase


def _pick(a: RunAnalysis, phase: str, batch: int) -> Curve:
    if batch >= 0:
        return a.curve(phase, batch)
    return max((c for c in a.curves if c.phase == phase), key=lambda c: c.batch_size)


def compare_runs(paths: list[str | Path], allow_mismatch: bool = False, include_flagged: bool = False) -> Comparison:
    """Analyse and line up the runs; refuse mismatched metadata unless ``allow_mismatch``."""
    if len(paths) < 2:
        raise UsageError("compare needs at least two run directories")
    analyses = [analyse(load_run(p), include_flagged=include_flagged) for p in paths]
    diffs = differences(analyses)
    if diffs and not allow_mismatch:
        raise UsageError("runs differ in comparison metadata (" + "; ".join(diffs)
                         + "): pass --allow-mismatch to compare anyway, marked as such")
    keys = _common_curves(analyses)
    if not keys:
        raise UsageError("the runs have no phase in common: nothing to compare")
    rows = []
    for phase, batch in keys:
        ref = None
        for a in analyses:
            c = _pick(a, phase, batch)
            r = _row(a, c, ref)
            ref = ref or r.max_p_tokens_per_s
            rows.append(r)
    return Comparison(tuple(analyses), tuple(rows), bool(diffs), tuple(diffs), tuple(keys))


def overlay_figure(cmp: Comparison, phase: str, batch: int, outdir: Path) -> Path:
    from harness.readers import plots

    plt = plots.plt
    fig, axs = plt.subplots(2, 2, figsize=(12, 8.2))
    colors = plots._colors(len(cmp.analyses))
    for a, color in zip(cmp.analyses, colors):
        c = _pick(a, phase, batch)
        x = c.settings
        xn = x / _max_setting(a)
        tps = np.array([s.tokens_per_s.mean for s in c.stats])
        tpj = np.array([s.tokens_per_j.mean for s in c.stats])
        es = np.array([np.nan_to_num(s.tokens_per_s.half_width) for s in c.stats])
        ej = np.array([np.nan_to_num(s.tokens_per_j.half_width) for s in c.stats])
        lab = f"{a.part.name} ({a.run.run_id})"
        for ax, xx, y, e in ((axs[0, 0], x, tps, es), (axs[0, 1], x, tpj, ej), (axs[1, 0], xn, tps, es),
                             (axs[1, 1], xn, tpj, ej)):
            ax.errorbar(xx, y, yerr=e, fmt="o-", ms=4, lw=1.2, capsize=2, color=color, label=lab)
        i = list(x).index(c.max_q.best)
        axs[0, 1].plot([x[i]], [tpj[i]], "*", ms=14, color=color, mec="k")
        axs[1, 1].plot([xn[i]], [tpj[i]], "*", ms=14, color=color, mec="k")
    a0 = cmp.analyses[0]
    xl = plots.knob_label(a0.knob)
    axs[0, 0].set(xlabel=xl, ylabel="tokens/s per GPU", title="Throughput (absolute setting)")
    axs[0, 1].set(xlabel=xl, ylabel="tokens/J per GPU", title="Efficiency (absolute setting; star: Max-Q)")
    axs[1, 0].set(xlabel="setting as share of the part's max", ylabel="tokens/s per GPU",
                  title="Throughput (normalised setting)")
    axs[1, 1].set(xlabel="setting as share of the part's max", ylabel="tokens/J per GPU",
                  title="Efficiency (normalised setting)")
    for ax in axs.flat:
        ax.set_ylim(bottom=0)
        ax.legend(loc="best")
    title = f"Comparison · phase {phase}" + (f", batch {batch}" if batch >= 0 else "")
    if cmp.mismatched:
        title = f"{MISMATCH_MARK}\n{title}"
    fig.suptitle(title, fontsize=12, color="crimson" if cmp.mismatched else "black")
    return plots.save(fig, outdir, f"compare-{phase}" + (f"-b{batch}" if batch >= 0 else ""))


def write_comparison(cmp: Comparison, outdir: str | Path | None = None) -> Comparison:
    """Write the overlay plots, ``compare.md`` and ``compare.json``; every output is marked when
    the metadata differ."""
    ids = [a.run.run_id for a in cmp.analyses]
    out = Path(outdir) if outdir else cmp.analyses[0].run.path.parent / ("compare-" + "-vs-".join(ids))
    out.mkdir(parents=True, exist_ok=True)
    made = [overlay_figure(cmp, ph, b, out / "plots") for ph, b in cmp.keys]
    md = ["# tokbench comparison: " + " vs ".join(ids), ""]
    if cmp.mismatched:
        md += [f"> **{MISMATCH_MARK}**: " + "; ".join(cmp.differences), ""]
    unit = cmp.analyses[0].unit
    md += [f"| run | part | phase | batch | Max-P ({unit}) | Max-P tokens/s | Max-Q ({unit}) | Max-Q tokens/J | "
           "tokens/J at default | throughput kept at Max-Q | tokens/s per kW | Max-P vs first |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in cmp.rows:
        q = f"{r.max_q_lo:.0f}" if r.max_q_lo == r.max_q_hi else f"{r.max_q_lo:.0f}-{r.max_q_hi:.0f}"
        md.append(f"| {r.run_id} | {r.part} | {r.phase} | {r.batch_size} | {r.max_p_setting:.0f} | "
                  f"{r.max_p_tokens_per_s:,.0f} | {q} (best {r.max_q_best:.0f}) | {r.max_q_tokens_per_j:.4g} | "
                  f"{'-' if r.tokens_per_j_default is None else f'{r.tokens_per_j_default:.4g}'} | "
                  f"{'-' if r.throughput_kept is None else f'{100 * r.throughput_kept:.1f}%'} | "
                  f"{r.tokens_per_s_per_kw:,.0f} | {r.ratio_max_p:.2f}x |")
    md.append("")
    for p in made:
        md += [f"![{p.stem}](plots/{p.name})", ""]
    md += ["Normalised plots put each part's setting as a share of its own maximum (power limit or SM clock), "
           "so parts of different size can be read on one axis. tokens/s per kW uses the mean power measured at "
           "Max-P, not the limit.", ""]
    path = out / "compare.md"
    path.write_text("\n".join(md))
    (out / "compare.json").write_text(json.dumps({
        "mismatched": cmp.mismatched, "differences": list(cmp.differences),
        "runs": [str(a.run.path) for a in cmp.analyses], "rows": [asdict(r) for r in cmp.rows]}, indent=2))
    return Comparison(cmp.analyses, cmp.rows, cmp.mismatched, cmp.differences, cmp.keys, out, tuple(made), path)
