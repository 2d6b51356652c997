"""``tokbench report``: the plots of a run and a ``report.md`` a reader takes in at a glance.

The headline (Max-P, Max-Q with what it keeps and saves, whether the cap binds, the knee) comes
first in words; tables and figures follow; method notes last. Everything is written under the run
directory (``report.md``, ``plots/*.png|svg``) unless another folder is named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.knobs import POWER_LIMIT, knob
from harness.readers.analysis import Curve, RunAnalysis
from harness.readers.stats import BOOTSTRAP_MIN


@dataclass(frozen=True)
class Report:
    markdown: Path
    plots: tuple[Path, ...]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _rng(lo: float, hi: float, unit: str) -> str:
    return f"{lo:.0f} {unit}" if lo == hi else f"{lo:.0f}-{hi:.0f} {unit}"


def _edge_note(c: Curve, a: RunAnalysis) -> str | None:
    """Max-Q at the end of the sweep while the part allows more: the peak may lie beyond it."""
    lo_part = a.part.power_limit_min_w if knob(a.knob) is POWER_LIMIT else None
    if c.max_q.lo == c.stats[0].setting and c.max_q.hi != c.stats[-1].setting and lo_part is not None \
            and c.stats[0].setting > lo_part + 1e-6:
        return (f"Max-Q sits at the lowest setting measured ({c.stats[0].setting:.0f} {a.unit}); the part allows "
                f"{lo_part:.0f} {a.unit}, so the peak may lie lower: sweep down to it to find out")
    return None


def headline(c: Curve, unit: str, a: RunAnalysis | None = None) -> list[str]:
    """The sentences a reader needs about one curve."""
    out = [f"**Max-P**: {c.max_p.best:.0f} {unit}, {c.max_p.value:,.0f} tokens/s (the lowest setting whose "
           f"tokens/s cannot be told from the best; range {_rng(c.max_p.lo, c.max_p.hi, unit)})"]
    q = f"**Max-Q**: {_rng(c.max_q.lo, c.max_q.hi, unit)}, best {c.max_q.best:.0f} {unit}: {c.max_q.value:.4g} tokens/J"
    if c.max_q.wide:
        q = (f"**Max-Q**: {_rng(c.max_q.lo, c.max_q.hi, unit)} (too few repeats to single out one setting; the best "
             f"mean measured is {c.max_q.value:.4g} tokens/J at {c.max_q.best:.0f} {unit}: more repeats narrow it)")
    whole = c.max_q.lo == c.stats[0].setting and c.max_q.hi == c.stats[-1].setting and len(c.stats) > 1
    if whole:
        q += " (tokens/J cannot be told apart anywhere in the range: the setting does not change efficiency)"
    elif c.vs_default is not None:
        d = c.vs_default
        ref = f"the default {d.default_setting:.0f} {unit}" if d.measured else \
            f"the highest measured {d.default_setting:.0f} {unit} (default not measured)"
        q += (f"; against {ref} it keeps {_pct(d.throughput_kept)} of throughput and saves "
              f"{_pct(d.energy_saved)} of energy per token")
    out.append(q)
    note = _edge_note(c, a) if a is not None else None
    if note:
        out.append(note)
    out.append(c.flat.sentence[0].upper() + c.flat.sentence[1:])
    if c.knee is not None:
        out.append(c.knee.sentence[0].upper() + c.knee.sentence[1:])
    return out


def curves_table_md(a: RunAnalysis) -> list[str]:
    u = a.unit
    lines = [f"| phase | batch | Max-P ({u}) | tokens/s at Max-P | Max-Q range ({u}) | tokens/J at Max-Q | "
             "tokens/J at default | throughput kept | energy saved | cap |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in a.curves:
        d = c.vs_default
        cap = c.flat.short
        lines.append(f"| {c.phase} | {c.batch_size} | {c.max_p.best:.0f} | {c.max_p.value:,.0f} | "
                     f"{_rng(c.max_q.lo, c.max_q.hi, '')}(best {c.max_q.best:.0f}) | {c.max_q.value:.4g} | "
                     f"{d.tokens_per_j_default:.4g} | {_pct(d.throughput_kept)} | {_pct(d.energy_saved)} | {cap} |"
                     if d else
                     f"| {c.phase} | {c.batch_size} | {c.max_p.best:.0f} | {c.max_p.value:,.0f} | "
                     f"{_rng(c.max_q.lo, c.max_q.hi, '')}(best {c.max_q.best:.0f}) | {c.max_q.value:.4g} | - | - | - | "
                     f"{cap} |")
    return lines


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def points_table_md(a: RunAnalysis, c: Curve) -> list[str]:
    u = a.unit
    lines = [f"| setting ({u}) | enforced | n | tokens/s ± 95% | tokens/J ± 95% | mJ/token | W mean | W p99 | "
             "W max 1 s | SM MHz | flags |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in c.stats:
        mark = (" **Q**" if s.setting == c.max_q.best else "") + (" **P**" if s.setting == c.max_p.best else "")
        lines.append(
            f"| {s.setting:.0f}{mark} | {s.enforced:.0f} | {s.n} | {s.tokens_per_s.mean:,.1f} ± "
            f"{s.tokens_per_s.half_width:,.1f} | {s.tokens_per_j.mean:.4g} ± {s.tokens_per_j.half_width:.2g} | "
            f"{1000 * s.j_per_token:.4g} | {s.power_mean_w:.0f} | {_fmt(s.power_p99_w, '.0f')} | "
            f"{_fmt(s.power_max_1s_w, '.0f')} | {_fmt(s.sm_clock_mean_mhz, '.0f')} | {', '.join(s.flags) or ''} |")
    return lines


def _identity(a: RunAnalysis) -> str:
    w = a.run.workload
    m = a.run.manifest
    n = len(a.run.points)
    nf = len(a.flagged)
    gpus = sorted(set(a.run.points["gpu_index"]))
    who = f"GPU {a.gpu}" if a.gpu is not None else (f"{len(gpus)} GPUs pooled" if len(gpus) > 1 else "1 GPU")
    return (f"{a.part.name} ({a.part.backend}, {who}) · workload **{w.get('name', '?')}** ({w.get('kind', '?')}, "
            f"{w.get('model', '?')}, {w.get('precision', '?')}) · knob **{a.knob}** · {n} points, {nf} flagged · "
            f"status {m.get('status', '?')} · started {m.get('started', '?')}")


def write_report(a: RunAnalysis, outdir: str | Path | None = None, formats: tuple[str, ...] | None = None) -> Report:
    """Write ``report.md`` and ``plots/`` (PNG and SVG unless ``formats`` says otherwise) for an
    analysed run; returns what was written."""
    from harness.readers import plots

    fm = formats or plots.FORMATS
    out = Path(outdir) if outdir else a.run.path
    pdir = out / "plots"
    made = []
    md = [f"# tokbench report: {a.run.run_id}", "", _identity(a), ""]
    if a.problems:
        md += ["> " + "; ".join(a.problems), ""]
    tk = a.tokenomics
    per_curve: list[str] = []
    for c in a.curves:
        if len(a.curves) > 1:
            per_curve += [f"**{c.phase}, batch {c.batch_size}**", ""]
        per_curve += [f"- {s}" for s in headline(c, a.unit, a)] + [""]
    latency = [f"- **Latency target**: {tk.latency.sentence}", ""] if tk is not None and tk.latency else []
    if len(a.curves) <= 2:  # the sentences are the glance
        md += ["## At a glance", "", *per_curve, *latency, "## Summary", "", *curves_table_md(a), ""]
    else:  # many curves: the table is the glance, the sentences follow
        md += ["## At a glance", "", *curves_table_md(a), "", *latency, "## Per curve", "", *per_curve]
    md += ["## Curves", ""]
    for phase in a.phases:
        p = plots.curves_figure(a, phase, pdir, formats=fm)
        made.append(p)
        md += [f"![tokens/s and tokens/J against the setting, {phase}](plots/{p.name})", ""]
    md += ["Shaded: the settings whose tokens/s (left, Max-P) or tokens/J (right, Max-Q) cannot be told from the "
           "best; stars: the recommended setting; bars: 95% intervals of the mean over repeats; line: the "
           "monotone fit exported for planners; red crosses: flagged points, left out.", ""]
    p = plots.pareto_figure(a, pdir, formats=fm)
    made.append(p)
    md += ["## Pareto frontier (tokens/s against tokens/J)", "", f"![Pareto frontier](plots/{p.name})", ""]
    for c in a.curves:
        md.append(f"- {c.phase}, batch {c.batch_size}: frontier settings "
                  + ", ".join(f"{s:.0f}" for s in c.pareto) + f" {a.unit}")
    md.append("")
    if tk is not None:
        p = plots.tokenomics_figure(a, pdir, formats=fm)
        if p:
            made.append(p)
            md += ["## Tokenomics frontier", "", f"![tokenomics frontier](plots/{p.name})", "",
                   "One line per setting over batch sizes: how much speed per user each power level can sell, "
                   "and at what tokens/J.", ""]
            if tk.latency is not None:
                md += [tk.latency.sentence, ""]
            else:
                md += ["Give `--tpot-ms` (and `--ttft-ms`) for Max-Q under a latency target.", ""]
    p = plots.timeline_figure(a, pdir, formats=fm)
    if p:
        made.append(p)
        md += ["## Power and SM clock over the run", "", f"![timeline](plots/{p.name})", ""]
    p = plots.clock_events_figure(a, pdir, formats=fm)
    if p:
        made.append(p)
        md += ["## Clock-event reasons", "", f"![clock-event reasons](plots/{p.name})", ""]
    md += ["## Points", ""]
    for c in a.curves:
        md += [f"### {c.phase}, batch {c.batch_size}", "", *points_table_md(a, c), ""]
    if len(a.flagged):
        md += ["## Flagged points" + ("" if a.include_flagged else " (left out of the statistics)"), "",
               "| point | GPU | setting | phase | batch | repeat | tokens/s | flags |",
               "|---:|---:|---:|---|---:|---:|---:|---|"]
        for _, r in a.flagged.iterrows():
            md.append(f"| {r['point_index']} | {r['gpu_index']} | {r['setting']:.0f} | {r['phase']} | "
                      f"{r['batch_size']} | {r['repeat']} | {r['tokens_per_s']:,.1f} | {r['flags']} |")
        md.append("")
    md += ["## Method", "",
           f"Intervals are 95% intervals of the mean over repeats: bootstrap at {BOOTSTRAP_MIN} repeats or more; "
           "below that Student t with the noise pooled over the curve's settings (a setting measured once borrows "
           "the noise of the others). A setting \"cannot be told from the best\" when the interval of its "
           "difference from the best reaches zero, at 95% over all the curve's settings together (Bonferroni), "
           "since the best was picked among them. Max-P compares with the top block of the monotone fit; Max-Q "
           "recommends the setting of the best measured tokens/J or, in a Max-Q search run, the search's answer "
           "where it lies in the range (its model weighs each window against its neighbours); a wide range "
           "thinly repeated is given without a pick. "
           "Ranges are the contiguous settings that pass. The fit is an isotonic regression of the per-setting "
           "means joined by a PCHIP interpolant: monotone, no overshoot, defined only between the lowest and "
           "highest measured settings. The knee is where the normalised fit stands furthest above its chord. "
           "Energy is the counter's (or integrated power where a part has no counter; see points.csv "
           "`energy_source`). GPUs of a node are pooled as repeats unless `--gpu` picks one.", ""]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.md"
    path.write_text("\n".join(md))
    return Report(path, tuple(made))
