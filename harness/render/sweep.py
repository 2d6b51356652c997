"""The sweep on the terminal: the dry-run plan, the live line and the summary table."""

from __future__ import annotations

from rich.table import Table

from harness.render.fit import Column, fitted_table


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def plan_text(plan, estimate_s: float, sim_wall_s: float | None = None) -> str:
    """The plan of a dry run, in words: what it measures, the device time it will hold the GPUs and
    what that counts, and on simulated parts how long the simulation takes here."""
    unit = plan.lever.unit
    settings = "searched over the knob's range" if plan.search else ", ".join(f"{s:g}" for s in plan.settings)
    n = (f"adaptive, per batch size until the choice is within {plan.search_margin_pct:g}% of the best tokens/J "
         f"(95%) or {plan.search_budget:.2g} of a 1-repeat grid's device time is spent"
         if plan.search else str(len(plan.grid())))
    text = (f"knob: {plan.knob}  settings ({unit}): {settings}\n"
            f"batch sizes: {', '.join(map(str, plan.batch_sizes))}  "
            f"{'repeats: as the search needs' if plan.search else f'repeats: {plan.repeats}  order: {plan.order}'}\n"
            f"points: {n}  window: {plan.window_s:g} s  warm-up: {plan.warmup_min_s:g}-{plan.warmup_max_s:g} s\n"
            f"estimated device time: {_duration(estimate_s)} (warm-ups until power, clock and temperature settle, "
            "windows run to the end of a workload step, each batch size's first steps and compile"
            f"{'; a search counted at its whole budget' if plan.search else ''})")
    if sim_wall_s is not None:
        text += (f"\nsimulation: about {_duration(sim_wall_s)} on this machine "
                 "(simulated GPUs run faster than real time)")
    return text


def summary_table(points, analysis=None, width: int = 200) -> Table:
    """Per setting, batch and phase: node totals averaged over repeats. Max-Q and Max-P are
    marked from ``analysis`` (harness.readers.analysis): the settings that cannot be told from the best,
    as `tokbench report` says, never the argmax of noisy means; without it nothing is marked."""
    import pandas as pd

    if not points:
        return Table(title="no points measured")
    df = pd.DataFrame([p.__dict__ for p in points])
    node = df.groupby(["setting", "batch_size", "phase", "repeat"]).agg(
        enforced=("enforced", "mean"), power=("power_mean_w", "sum"), tps=("tokens_per_s", "sum"),
        joules=("joules", "sum"), tokens=("tokens", "sum"),
        flags=("flags", lambda f: ";".join(sorted({x for v in f for x in str(v).split(";") if x}))),
    ).reset_index()
    node["tpj"] = node["tokens"] / node["joules"]
    g = node.groupby(["batch_size", "phase", "setting"]).agg(
        enforced=("enforced", "mean"), power=("power", "mean"), tps=("tps", "mean"), tpj=("tpj", "mean"),
        n=("tps", "size"), flags=("flags", lambda f: ";".join(sorted({x for v in f for x in v.split(";") if x}))),
    ).reset_index()
    curves = {(c.phase, c.batch_size): c for c in analysis.curves} if analysis is not None else {}
    rows = []
    for (batch, phase), grp in g.groupby(["batch_size", "phase"]):
        curve = curves.get((phase, batch)) if len(grp) > 1 else None  # one setting: nothing to choose
        for _, r in grp.sort_values("setting", ascending=False).iterrows():
            marks = []
            if curve is not None and r.setting in curve.max_q.settings:
                star = r.setting == curve.max_q.best and not curve.max_q.wide
                marks.append("Max-Q*" if star else "Max-Q")
            if curve is not None and r.setting == curve.max_p.best:
                marks.append("Max-P")
            rows.append([str(r.batch_size), r.phase, f"{r.setting:g}", f"{r.enforced:g}", f"{r.power:.0f}",
                         f"{r.tps:,.0f}", f"{r.tpj:.2f}", str(r.n), f"[bold]{' '.join(marks)}[/]", r["flags"] or ""])
    caption = None
    if curves and g.groupby(["batch_size", "phase"]).size().max() > 1:
        caption = "Max-Q: cannot be told from the best tokens/J (* recommended); Max-P: lowest setting " \
                  "whose tokens/s cannot be told from the best"
        if any(c.max_q.wide for c in curves.values()):
            caption += "; no * where the Max-Q range is wide: too few repeats to single out one setting " \
                       "(more --repeats narrow it)"
    columns = [Column("batch"), Column("phase", justify="left"), Column("setting"), Column("enforced", 4),
               Column("W", 3), Column("tokens/s"), Column("tokens/J"), Column("n", 5), Column("", justify="left"),
               Column("flags", 2, justify="left", wraps=True)]
    return fitted_table(columns, rows, width, title="sweep summary (node totals, mean over repeats)",
                        title_justify="left", caption=caption)


class live_sweep:  # noqa: N801 (used as a context manager)
    """Progress of a sweep: on a terminal a rich live line (setting, power, clock, temperature,
    tokens/s, device time spent and left); anywhere else (CI logs, nohup, Slurm task logs) one plain
    line per recorded point, through ``on_point``."""

    def __init__(self, console, status) -> None:
        self.console, self.status, self.live = console, status, None

    def _time(self) -> str:
        s = self.status
        spent = f"{s.device_s / 60:.1f} min"
        if s.estimate_s:
            left = max(s.estimate_s - s.device_s, 0.0)
            return f"{spent} of device time, ~{left / 60:.1f} min left"
        return f"{spent} of device time"

    def _render(self) -> str:
        s = self.status
        total = f"/{s.total}" if s.total else ""

        def f(v, fmt):
            return "-" if v is None else format(v, fmt)

        return (f"point {s.point}{total}  setting {f(s.setting, 'g')}  batch {f(s.batch_size, 'd')}  "
                f"{s.phase} {s.state}  |  {f(s.power_w, '.0f')} W  {f(s.sm_clock_mhz, '.0f')} MHz  "
                f"{f(s.temperature_c, '.0f')} C  |  {f(s.tokens_per_s, ',.0f')} tokens/s  |  {self._time()}")

    def on_point(self, points) -> None:
        """One line per recorded point when no live line is shown (node totals over the GPUs)."""
        if self.live is not None or not points:
            return
        s, p = self.status, points[0]
        tps = sum(x.tokens_per_s for x in points)
        joules = sum(x.joules for x in points)
        tpj = sum(x.tokens for x in points) / joules if joules > 0 else 0.0
        flags = sorted({f for x in points for f in x.flags.split(";") if f})
        total = f"/{s.total}" if s.total else ""
        self.console.print(f"point {s.point}{total}  setting {p.setting:g}  batch {p.batch_size}  {p.phase}  "
                           f"{sum(x.power_mean_w for x in points):.0f} W  {tps:,.0f} tokens/s  {tpj:.3g} tokens/J"
                           f"{'  flags ' + ','.join(flags) if flags else ''}  |  {self._time()}",
                           highlight=False, soft_wrap=True)

    def __enter__(self):
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=4, transient=True,
                             get_renderable=self._render)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)
