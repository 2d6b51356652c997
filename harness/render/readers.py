"""rich tables of the readers (report, compare): presentation only, numbers come from analysis."""

from __future__ import annotations

from rich.table import Table

from harness.render.fit import Column, fitted_table


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _rng(lo: float, hi: float) -> str:
    return f"{lo:.0f}" if lo == hi else f"{lo:.0f}-{hi:.0f}"


def analysis_table(a, width: int = 200) -> Table:
    """One row per (phase, batch): Max-P, Max-Q range, savings against the default, the cap's verdict."""
    u = a.unit
    rows = []
    for c in a.curves:
        d = c.vs_default
        q = _rng(c.max_q.lo, c.max_q.hi) + ("" if c.max_q.wide else f" ({c.max_q.best:.0f})")
        rows.append([c.phase, str(c.batch_size), f"{c.max_p.best:.0f}", f"{c.max_p.value:,.0f}", q,
                     f"{c.max_q.value:.4g}", "-" if d is None else f"{d.tokens_per_j_default:.4g}",
                     _pct(d.throughput_kept if d else None), _pct(d.energy_saved if d else None), c.flat.short])
    columns = [Column("phase", justify="left"), Column("batch"), Column(f"Max-P {u}"), Column("tokens/s", 3),
               Column(f"Max-Q {u} (best)"), Column("tokens/J"), Column("tokens/J default", 5), Column("kept", 2),
               Column("saved", 1), Column("cap", 4, justify="left", wraps=True)]
    return fitted_table(columns, rows, width, title=f"{a.run.run_id}: {a.part.name} · {a.run.workload.get('name', '')}",
                        title_justify="left")


def compare_table(cmp) -> Table:
    """One row per run of a comparison."""
    title = "comparison" + (" [bold red](MISMATCHED: --allow-mismatch)[/]" if cmp.mismatched else "")
    t = Table(title=title, title_justify="left")
    for col in ("run", "part", "phase", "batch", "Max-P tokens/s", "Max-Q tokens/J", "tokens/J default",
                "kept at Max-Q", "tokens/s per kW", "vs first (Max-P)"):
        t.add_column(col, justify="left" if col in ("run", "part", "phase") else "right")
    for r in cmp.rows:
        t.add_row(r.run_id, r.part, r.phase, str(r.batch_size), f"{r.max_p_tokens_per_s:,.0f}",
                  f"{r.max_q_tokens_per_j:.4g}", f"{r.tokens_per_j_default:.4g}", _pct(r.throughput_kept),
                  f"{r.tokens_per_s_per_kw:,.0f}", f"{r.ratio_max_p:.2f}x")
    return t
