"""The `tokbench` command line: thin commands, one library call each, output through rich.

Heavy libraries (torch, transformers, matplotlib, pypsa) are imported inside the commands that
need them, so `tokbench --help` and `tokbench devices` start fast.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from harness.errors import TokbenchError

app = typer.Typer(
    name="tokbench",
    help="Measure tokens per second and per joule of real GPU work across power limits and clocks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


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
