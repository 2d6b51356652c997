"""The `tokbench` command line: thin commands, one library call each, output through rich.

Heavy libraries (torch, transformers, matplotlib, pypsa) are imported inside the commands that
need them, so `tokbench --help` and `tokbench devices` start fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from harness.errors import TokbenchError, UsageError

app = typer.Typer(
    name="tokbench",
    help="Measure tokens per second and per joule of real GPU work across power limits and clocks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


# ---- tokbench fleet: Slurm campaigns (harness/fleet.py, harness/fleet_collect.py) -------------

fleet_app = typer.Typer(
    help="Sweep many GPU nodes through Slurm, then collect and find the outliers.", no_args_is_help=True
)
app.add_typer(fleet_app, name="fleet")


@fleet_app.command("submit")
def fleet_submit(
    profile: str = typer.Option(
        None, "--profile", help="Benchmark profile (file or name) every node sweeps."
    ),
    nodes: int = typer.Option(1, "--nodes", help="Number of nodes (array tasks)."),
    gpus_per_node: int = typer.Option(1, "--gpus-per-node", help="GPUs each task asks for and sweeps."),
    partition: str = typer.Option(None, "--partition"),
    account: str = typer.Option(None, "--account"),
    time: str = typer.Option(None, "--time", help="Slurm time limit per task, e.g. 2:00:00."),
    results_root: Path = typer.Option(
        Path("results/fleet"), "--results-root", help="Shared directory for campaigns."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the batch script; submit nothing."),
    resume: str = typer.Option(
        None, "--resume", help="Campaign (dir or id): re-submit only unfinished tasks."
    ),
    backend: str = typer.Option("nvml", "--backend", help="nvml (real GPUs) or sim."),
    sim_gpu: str = typer.Option(
        None, "--sim-gpu", help="Simulated part for every node (implies --backend sim)."
    ),
    sim_seed: int = typer.Option(
        0, "--sim-seed", help="Seed of task 0's simulated node; task N gets seed+N."
    ),
    sim_override: list[str] = typer.Option(
        [], "--sim-override", help="TASK:GPU:key=value per-board override, e.g. 1:0:leakage=1.4 (repeatable)."
    ),
    points: int = typer.Option(None, "--points"),
    values: str = typer.Option(None, "--values"),
    repeats: int = typer.Option(None, "--repeats"),
    exclusive: bool = typer.Option(False, "--exclusive", help="Ask Slurm for whole nodes."),
    gres: bool = typer.Option(
        True, "--gres/--no-gres", help="Request gpu GRES (--no-gres: simulated fleets on CPU nodes)."
    ),
) -> None:
    """Create a campaign and submit one `tokbench sweep` per node as a Slurm job array."""
    from harness import fleet

    if resume:
        result = fleet.resume_campaign(fleet.resolve_campaign(resume, results_root), dry_run=dry_run)
        if not result.tasks:
            console.print(f"campaign {result.campaign_dir.name}: nothing to re-submit")
            return
    else:
        if not profile:
            raise UsageError("--profile is required (or --resume CAMPAIGN)")
        req = fleet.FleetRequest(
            profile=profile,
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            backend=backend,
            sim_gpu=sim_gpu,
            sim_seed=sim_seed,
            sim_overrides=tuple(sim_override),
            points=points,
            values=values,
            repeats=repeats,
            partition=partition,
            account=account,
            time=time,
            exclusive=exclusive,
            request_gres=gres,
        )
        result = fleet.submit_campaign(req, results_root, dry_run=dry_run)
    if dry_run:
        console.print(result.sbatch, highlight=False, soft_wrap=True)
        console.print(result.script, highlight=False, soft_wrap=True, markup=False)
        for t, cmd in zip(result.tasks, result.task_commands, strict=True):
            console.print(f"# task {t} runs: {cmd}", highlight=False, soft_wrap=True, markup=False)
        return
    console.print(
        f"campaign {result.campaign_dir.name}: job {result.job_id}, "
        f"tasks {','.join(map(str, result.tasks))}\n"
        f"  dir {result.campaign_dir}",
        highlight=False,
        soft_wrap=True,
    )


@fleet_app.command("status")
def fleet_status(
    campaign: str = typer.Argument(..., help="Campaign directory or id."),
    results_root: Path = typer.Option(Path("results/fleet"), "--results-root"),
) -> None:
    """Per task: Slurm state, the run's own status, points done."""
    from rich.table import Table

    from harness import fleet

    cdir = fleet.resolve_campaign(campaign, results_root)
    table = Table(title=f"campaign {cdir.name}")
    for col in ("task", "job", "slurm", "host", "run", "points", "exit"):
        table.add_column(col)
    for s in fleet.campaign_status(cdir):
        table.add_row(
            str(s.task),
            s.job or "-",
            s.slurm_state,
            s.host or "-",
            s.run_status or "-",
            str(s.points_done),
            "-" if s.exit_code is None else str(s.exit_code),
        )
    console.print(table)


@fleet_app.command("collect")
def fleet_collect_cmd(
    campaign: str = typer.Argument(..., help="Campaign directory or id."),
    results_root: Path = typer.Option(Path("results/fleet"), "--results-root"),
) -> None:
    """Merge the runs: per-GPU Max-Q/Max-P, spread, outliers, fleet curve (written to <campaign>/collect/)."""
    from rich.table import Table

    from harness import fleet, fleet_collect

    r = fleet_collect.collect(fleet.resolve_campaign(campaign, results_root))
    flagged = {(o.gpu_uuid, o.metric): o for o in r.outliers.itertuples()} if not r.outliers.empty else {}
    table = Table(title="per GPU")
    for col in (
        "task",
        "host",
        "gpu",
        "part",
        "phase",
        "batch",
        "Max-Q tokens/J",
        "@",
        "Max-P tokens/s",
        "@",
        "outlier",
    ):
        table.add_column(col)
    for g in r.gpus.itertuples():
        marks = [
            f"{o.metric.split('_')[1]} {o.direction} ({o.deviation_pct:+.1f}%)"
            for m in fleet_collect.METRICS
            if (o := flagged.get((g.gpu_uuid, m)))
        ]
        table.add_row(
            str(g.task),
            g.host,
            str(g.gpu_index),
            g.part,
            g.phase,
            str(g.batch_size),
            f"{g.max_q_tokens_per_j:.4g}",
            f"{g.max_q_setting:g}",
            f"{g.max_p_tokens_per_s:.4g}",
            f"{g.max_p_setting:g}",
            "; ".join(marks) or "-",
        )
    console.print(table)
    for s in r.spread.itertuples():
        console.print(
            f"spread {s.part} {s.phase} b{s.batch_size} {s.metric}: n={s.n} median {s.median:.4g}, "
            f"range {s.spread_pct:.2f}%, robust CV {s.robust_cv_pct:.2f}%",
            highlight=False,
        )
    console.print(f"outliers (|robust z| > {fleet_collect.Z_THRESHOLD}): {len(r.outliers)}")
    for s in r.incomplete:
        console.print(
            f"[yellow]incomplete[/] task {s.task} ({s.job or 'never submitted'}): Slurm {s.slurm_state}, "
            f"run {s.run_status or 'not started'}, {s.points_done} points",
            highlight=False,
        )
    console.print(f"wrote {r.out_dir}", highlight=False, soft_wrap=True)


@fleet_app.command("task", hidden=True)
def fleet_task(campaign_dir: Path, task: int) -> None:
    """One array task (run by the batch script, not by hand)."""
    from harness import fleet

    raise typer.Exit(fleet.run_task(campaign_dir, task))


def main() -> None:
    """Console-script entry point: every TokbenchError becomes one line and a non-zero exit."""
    try:
        app(standalone_mode=False)
    except TokbenchError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click's own usage errors arrive here in standalone_mode=False
        import click

        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        if isinstance(e, click.ClickException):
            err_console.print(f"[bold red]error:[/] {e.format_message()}", highlight=False, soft_wrap=True)
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
