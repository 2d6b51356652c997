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


@app.command()
def plan(
    site: Path = typer.Argument(..., help="Site file (TOML), e.g. profiles/sites/example-site.toml."),
    grid: Path | None = typer.Option(None, "--grid", help="Grid signal CSV (overrides the site file's)."),
    objective: str = typer.Option(
        "tokens", "--objective", help="tokens (max), cost or carbon (min, at a token target)."
    ),
    token_target: float | None = typer.Option(
        None,
        "--token-target",
        help="Gtok to make over the horizon (cost/carbon; default: what the default setting makes).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default results/plan-<site name>)."),
    export_network: Path | None = typer.Option(
        None, "--export-network", help="Write the solved PyPSA network (NetCDF)."
    ),
    compare: bool = typer.Option(
        True, "--compare/--no-compare", help="Also solve fixed Max-P, Max-Q and default."
    ),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write plan.png."),
) -> None:
    """Plan an AI factory on its power: tokens per MW per setting, and a grid-interactive schedule."""
    from harness.planner import export_network as write_network
    from harness.planner import plan as run_plan
    from harness.planner.outputs import write_outputs
    from harness.planner.tables import render

    if export_network is not None and export_network.suffix != ".nc":
        raise UsageError(f"--export-network writes NetCDF: name the file *.nc, not '{export_network.name}'")
    r = run_plan(site, grid, objective=objective, token_target_gtok=token_target, compare=compare)
    for item in render(r):
        console.print(item)
    for p in write_outputs(r, out or Path("results") / f"plan-{r.site.name}", plots=plots):
        console.print(f"wrote {p}")
    if export_network is not None:
        write_network(r, export_network)
        console.print(f"wrote {export_network}")


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
