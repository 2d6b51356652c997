"""rich renderables of `tokbench fleet status|collect` (tables and lines, no logic)."""

from __future__ import annotations

from rich.table import Table

from harness.fleet.campaign import TaskStatus
from harness.fleet.collect import METRICS, Z_THRESHOLD, Collected


def fleet_status_table(campaign_id: str, statuses: list[TaskStatus]) -> Table:
    table = Table(title=f"campaign {campaign_id}", title_justify="left")
    for col in ("task", "job", "Slurm", "host", "run", "points", "exit"):
        table.add_column(col)
    for s in statuses:
        run_style = "green" if s.done else ("red" if s.run_status in ("failed", "interrupted") else "")
        table.add_row(
            str(s.task),
            s.job or "-",
            s.slurm_state,
            s.host or "-",
            f"[{run_style}]{s.run_status}[/]" if run_style else (s.run_status or "-"),
            str(s.points_done),
            "-" if s.exit_code is None else str(s.exit_code),
        )
    return table


def fleet_gpu_table(r: Collected) -> Table:
    flagged = {(o.gpu_uuid, o.metric): o for o in r.outliers.itertuples()} if not r.outliers.empty else {}
    table = Table(title="per GPU (Max-Q = best tokens/J, Max-P = best tokens/s)", title_justify="left")
    for col in (
        "task",
        "host",
        "gpu",
        "uuid",
        "part",
        "phase",
        "batch",
        "Max-Q tok/J",
        "at",
        "Max-P tok/s",
        "at",
        "outlier",
    ):
        table.add_column(col)
    for g in r.gpus.itertuples():
        marks = [
            f"[red]{'Max-Q' if m.startswith('max_q') else 'Max-P'} {o.direction} {o.deviation_pct:+.1f}%[/]"
            for m in METRICS
            if (o := flagged.get((g.gpu_uuid, m)))
        ]
        table.add_row(
            str(g.task),
            g.host,
            str(g.gpu_index),
            g.gpu_uuid,
            g.part,
            g.phase,
            str(g.batch_size),
            f"{g.max_q_tokens_per_j:.4g}",
            f"{g.max_q_setting:g}",
            f"{g.max_p_tokens_per_s:.4g}",
            f"{g.max_p_setting:g}",
            "; ".join(marks) or "-",
        )
    return table


def fleet_collect_lines(r: Collected) -> list[str]:
    lines = [
        f"spread {s.part} {s.phase} batch {s.batch_size} {s.metric}: n={s.n}, median {s.median:.4g}, "
        f"range {s.spread_pct:.2f}% of median, robust CV {s.robust_cv_pct:.2f}%"
        for s in r.spread.itertuples()
    ]
    boards = [] if r.outliers.empty else sorted(set(zip(r.outliers["task"], r.outliers["gpu_index"], strict=True)))
    named = ", ".join(f"task {t} gpu {g}" for t, g in boards)
    lines.append(
        f"outlier GPUs (|robust z| > {Z_THRESHOLD} among identical parts): {len(boards)}"
        + (f" ({named})" if named else "")
    )
    lines += [
        f"[yellow]incomplete[/] task {s.task} ({s.job or 'never submitted'}): Slurm {s.slurm_state}, "
        f"run {s.run_status or 'not started'}, {s.points_done} points, exit {s.exit_code}"
        for s in r.incomplete
    ]
    lines.append(f"wrote {r.out_dir} (gpus.csv, spread.csv, outliers.csv, fleet-curve*.json, report.md)")
    return lines
