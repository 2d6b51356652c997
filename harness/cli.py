"""The `tokbench` command line: thin commands, one library call each, output through rich.

Heavy libraries (torch, transformers, matplotlib, pypsa) are imported inside the commands that
need them, so `tokbench --help` and `tokbench devices` start fast.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

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
# piped output (CI logs, files) gets a wide console rather than rich's 80-column default
console = Console() if sys.stdout.isatty() else Console(width=200)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)


BackendOpt = Annotated[str, typer.Option("--backend", help="auto (NVML if a GPU answers, else simulated), nvml or sim")]
SimGpuOpt = Annotated[str, typer.Option("--sim-gpu", help="simulated part (profiles/gpus/<id>.toml)")]
SimCountOpt = Annotated[int, typer.Option("--sim-count", min=1, help="number of simulated GPUs in the node")]
SimSeedOpt = Annotated[int, typer.Option("--sim-seed", help="seed of the simulated node (board variation, noise)")]
SimOverrideOpt = Annotated[
    list[str] | None,
    typer.Option("--sim-override", help="per-board override INDEX:key=value,... (e.g. 1:leakage=1.4)"),
]


def open_node(backend: str, sim_gpu: str, sim_count: int, sim_seed: int, sim_override: list[str] | None):
    """Open the node's devices and print the backend notice, if any."""
    from harness.devices import open_devices

    ds = open_devices(backend, sim_gpu=sim_gpu, sim_count=sim_count, sim_seed=sim_seed, sim_overrides=sim_override)
    if ds.notice:
        err_console.print(f"[yellow]note:[/] {ds.notice}", highlight=False)
    return ds


@app.command()
def devices(
    backend: BackendOpt = "auto",
    sim_gpu: SimGpuOpt = "h100-sxm",
    sim_count: SimCountOpt = 1,
    sim_seed: SimSeedOpt = 0,
    sim_override: SimOverrideOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for machines")] = False,
) -> None:
    """List every GPU: limits, clocks, power now, capabilities, and what could spoil a measurement."""
    from harness.devices import describe

    ds = open_node(backend, sim_gpu, sim_count, sim_seed, sim_override)
    try:
        rows = [describe(d) for d in ds.devices]
    finally:
        ds.close()
    if as_json:
        print(json.dumps({"backend": ds.backend, "devices": rows}, indent=2))
        return
    from harness.render import devices_table

    console.print(devices_table(ds.backend, rows))


@app.callback()
def _root() -> None:
    """tokbench: tokens per second and per joule across power limits and clocks."""


def main() -> None:
    """Console-script entry point: every TokbenchError becomes one line and a non-zero exit.

    Typer/click handle their own usage errors (unknown option, bad type) in standalone mode.
    """
    try:
        app()
    except TokbenchError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
