"""The `tokbench` command line: thin commands, one library call each, output through rich.

Heavy libraries (torch, transformers, matplotlib, pypsa) are imported inside the commands that
need them, so `tokbench --help` and `tokbench devices` start fast.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from harness.errors import EXIT_DEVICE, EXIT_USAGE, TokbenchError, UsageError
from harness.sweep.guard import Terminated

app = typer.Typer(
    name="tokbench",
    help="Measure tokens per second and per joule of real GPU work across power limits and clocks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# piped output (CI logs, files) gets a wide console rather than rich's 80-column default, unless COLUMNS says
_PIPED_WIDTH = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else 200
console = Console() if sys.stdout.isatty() else Console(width=_PIPED_WIDTH)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=_PIPED_WIDTH)


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
        err_console.print(f"[yellow]note:[/] {ds.notice}", highlight=False, soft_wrap=True)
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
    from harness.render.devices import devices_table

    console.print(devices_table(ds.backend, rows, console.width))


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise UsageError(f"{what}: expected comma-separated numbers, got '{text}'") from err


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    vals = _floats(text, what)
    if vals is None:
        return None
    if any(v != int(v) or v < 1 for v in vals):
        raise UsageError(f"{what}: expected comma-separated positive integers, got '{text}'")
    return tuple(int(v) for v in vals)


@app.command()
def sweep(
    profile: Annotated[str, typer.Option(help="profile name (profiles/<name>.toml) or file")] = "train-llama-1b",
    gpus: Annotated[str | None, typer.Option(help="GPUs to change: 0,1 / all / UUIDs")] = None,
    knob: Annotated[str | None, typer.Option(help="power-limit or sm-clock (default: the profile's)")] = None,
    points: Annotated[int | None, typer.Option(help="number of settings spread over the range")] = None,
    step: Annotated[float | None, typer.Option(help="spacing of settings (W or MHz) from the max down")] = None,
    values: Annotated[str | None, typer.Option(help="explicit settings, e.g. 300,450,700")] = None,
    percent: Annotated[str | None, typer.Option(help="settings as percent of max, e.g. 40,60,80,100")] = None,
    search: Annotated[str | None, typer.Option(help="max-q: adaptive search for the most tokens/J")] = None,
    margin_pct: Annotated[float | None, typer.Option(help="max-q search: stop once the choice is within this % of the "
                                                          "best tokens/J with 95% probability (default 1)")] = None,
    search_budget: Annotated[float | None, typer.Option(help="max-q search: device-time budget per batch size, as a "
                                                             "share of a 1-repeat grid over the knob's range (21 "
                                                             "settings; 25 W steps on a power range under 500 W) "
                                                             "(default 0.33)")] = None,
    batch_sizes: Annotated[str | None, typer.Option(help="inference batch sizes, e.g. 1,8,64")] = None,
    repeats: Annotated[int | None, typer.Option(min=1)] = None,
    order: Annotated[str | None, typer.Option(help="descending, ascending or interleaved")] = None,
    window: Annotated[float | None, typer.Option(help="measurement window per phase, device seconds")] = None,
    warmup_min: Annotated[float | None, typer.Option(help="minimum warm-up per point, seconds")] = None,
    warmup_max: Annotated[float | None, typer.Option(help="warm-up timeout per point, seconds")] = None,
    observe: Annotated[bool, typer.Option(help="measure at the current setting only; change nothing")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="allow changing every GPU of the node")] = False,
    allow_busy: Annotated[bool, typer.Option(help="measure GPUs where other processes compute (flagged)")] = False,
    dry_run: Annotated[bool, typer.Option(help="print the plan and its device time; touch nothing")] = False,
    max_time: Annotated[float | None, typer.Option(help="end the run cleanly after this many device seconds")]
    = None,
    out: Annotated[str, typer.Option(help="results root; the run goes to OUT/<run-id>/")] = "results",
    resume: Annotated[str | None, typer.Option(help="continue an interrupted or budget-stopped run directory")] = None,
    reset_foreign_clock_lock: Annotated[bool, typer.Option(help="sm-clock: sweep a GPU whose clock someone else "
                                                                "locked (the lock is reset, not restored)")] = False,
    run_id: Annotated[str | None, typer.Option(help="name of the run directory (default: generated)")] = None,
    backend: BackendOpt = "auto",
    sim_gpu: SimGpuOpt = "h100-sxm",
    sim_count: SimCountOpt = 1,
    sim_seed: SimSeedOpt = 0,
    sim_override: SimOverrideOpt = None,
) -> None:
    """Sweep the power limit (or locked SM clock) and measure tokens/s and tokens/J at each setting."""
    from harness.sweep.run import SweepOptions

    opts = SweepOptions(
        profile=profile, gpus=gpus, knob=knob, points=points, step=step, values=_floats(values, "--values"),
        percent=_floats(percent, "--percent"), search=search, search_margin_pct=margin_pct,
        search_budget=search_budget,
        batch_sizes=_ints(batch_sizes, "--batch-sizes"), repeats=repeats, order=order, window_s=window,
        warmup_min_s=warmup_min, warmup_max_s=warmup_max, observe=observe, yes=yes, allow_busy=allow_busy,
        dry_run=dry_run, max_time_s=max_time, out=out, resume=resume, run_id=run_id, backend=backend,
        sim_gpu=sim_gpu, sim_count=sim_count, sim_seed=sim_seed, sim_overrides=tuple(sim_override or ()),
        reset_foreign_clock_lock=reset_foreign_clock_lock, command=" ".join(sys.argv),
    )
    _run(opts)


@app.command("run")
def run_point(
    profile: Annotated[str, typer.Option(help="profile name or file")] = "train-llama-1b",
    value: Annotated[float | None, typer.Option(help="setting to measure at (W or MHz); default: current")] = None,
    knob: Annotated[str | None, typer.Option(help="power-limit or sm-clock")] = None,
    gpus: Annotated[str | None, typer.Option(help="GPUs to change: 0,1 / all")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    repeats: Annotated[int, typer.Option(min=1)] = 1,
    window: Annotated[float | None, typer.Option(help="measurement window, device seconds")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="allow changing every GPU of the node")] = False,
    out: Annotated[str, typer.Option(help="results root")] = "results",
    backend: BackendOpt = "auto",
    sim_gpu: SimGpuOpt = "h100-sxm",
    sim_count: SimCountOpt = 1,
    sim_seed: SimSeedOpt = 0,
    sim_override: SimOverrideOpt = None,
) -> None:
    """Measure a single point: at --value, or at the current setting (observe)."""
    from harness.sweep.run import SweepOptions

    opts = SweepOptions(
        profile=profile, gpus=gpus, knob=knob, values=None if value is None else (value,),
        observe=value is None, yes=yes, batch_sizes=None if batch_size is None else (batch_size,),
        repeats=repeats, window_s=window, out=out, backend=backend, sim_gpu=sim_gpu, sim_count=sim_count,
        sim_seed=sim_seed, sim_overrides=tuple(sim_override or ()), command=" ".join(sys.argv),
    )
    _run(opts)


def _run(opts) -> None:
    """Run a sweep with a live display; print messages, the summary and where it was written."""
    from harness.render.sweep import live_sweep, plan_text, summary_table
    from harness.sweep.loop import LiveStatus
    from harness.sweep.run import run_sweep

    status = LiveStatus()
    with live_sweep(console, status) as live:
        result = run_sweep(opts, status=status, on_point=live.on_point)
    for m in result.messages:
        err_console.print(f"[yellow]note:[/] {m}", highlight=False, soft_wrap=True)
    if result.status == "dry-run":
        console.print(plan_text(result.plan, result.estimate_s, result.sim_wall_s))
        return
    console.print(summary_table(result.points, _analysis_or_none(result.run_dir.path), console.width))
    for search in result.searches:
        console.print(search.sentence(result.plan.lever.unit), highlight=False, soft_wrap=True)
    if result.status == "stopped":
        console.print(f"run stopped by --max-time: {result.remaining} planned measurement(s) remain; continue with "
                      f"tokbench sweep --resume {result.run_dir.path}", highlight=False, soft_wrap=True)
    else:
        console.print(f"run {result.status}: {result.run_dir.path}", highlight=False, soft_wrap=True)
    if result.points:
        console.print(f"next: tokbench report {result.run_dir.path}   (report.md, plots)\n"
                      f"      tokbench export {result.run_dir.path}   (curve.json for planners)", highlight=False,
                      soft_wrap=True)


def _analysis_or_none(run_path):
    """The run's analysis for marking Max-Q/Max-P, or None where it has no curve (observe, one point)."""
    from harness.readers.analysis import analyse

    try:
        return analyse(str(run_path))
    except TokbenchError:
        return None


@app.command()
def restore() -> None:
    """Put back settings left behind by a run that was killed (from its journal)."""
    from harness.sweep.guard import recover

    r = recover()
    for line in r.restored:
        console.print(f"restored {line}", highlight=False)
    for line in r.problems:
        err_console.print(f"[yellow]not restored:[/] {line}", highlight=False, soft_wrap=True)
    if not r.restored and not r.problems:
        console.print("nothing to restore")
    if r.problems:
        raise typer.Exit(EXIT_DEVICE)


RunArg = Annotated[str, typer.Argument(help="run directory (results/<run-id>)")]
TpotOpt = Annotated[float | None, typer.Option("--tpot-ms", min=0.0,
                                                help="latency target: time per output token, ms (inference runs)")]
TtftOpt = Annotated[float | None, typer.Option("--ttft-ms", min=0.0,
                                                help="latency target: time to first token, ms (with --tpot-ms)")]
FlaggedOpt = Annotated[bool, typer.Option("--include-flagged", help="use flagged points in the statistics too")]
GpuOpt = Annotated[int | None, typer.Option("--gpu", help="analyse one GPU (default: a node's GPUs pooled)")]


@app.command()
def report(
    run: RunArg,
    out: Annotated[str | None, typer.Option(help="folder for report.md and plots/ (default: the run directory)")]
    = None,
    tpot_ms: TpotOpt = None,
    ttft_ms: TtftOpt = None,
    include_flagged: FlaggedOpt = False,
    gpu: GpuOpt = None,
) -> None:
    """Analyse a run: Max-P/Max-Q ranges, curves, frontier, timelines; writes report.md and plots/.
    Given a `tokbench govern` decision log (CSV), plots it and says how well the target was held."""
    from harness.govern.log import is_decision_log, plot_log, read_log, summary
    from harness.readers.analysis import analyse
    from harness.readers.report import write_report
    from harness.render.readers import analysis_table

    if is_decision_log(run):
        log = read_log(run)
        png = Path(out) / f"{Path(run).stem}.png" if out else Path(run).with_suffix(".png")
        for line in summary(log):
            console.print(line, highlight=False)
        console.print(f"wrote {plot_log(log, png, title=f'tokbench govern: {Path(run).name}')}", highlight=False)
        return

    a = analyse(run, include_flagged=include_flagged, gpu=gpu, tpot_ms=tpot_ms, ttft_ms=ttft_ms)
    rep = write_report(a, out)
    console.print(analysis_table(a, console.width))
    for c in a.curves:
        console.print(f"{c.phase} b{c.batch_size}: {c.flat.sentence}", highlight=False)
    if a.tokenomics is not None and a.tokenomics.latency is not None:
        console.print(a.tokenomics.latency.sentence, highlight=False)
    for p in a.problems:
        err_console.print(f"[yellow]note:[/] {p}", highlight=False, soft_wrap=True)
    console.print(f"wrote {rep.markdown} and {len(rep.plots)} plots (PNG+SVG) in {rep.markdown.parent / 'plots'}")


@app.command()
def export(
    run: RunArg,
    fmt: Annotated[str, typer.Option("--format", help="json (the curve file planners read) or csv (points)")]
    = "json",
    out: Annotated[str | None, typer.Option(help="file to write, '-' for stdout (default: RUN/curve.<format>)")]
    = None,
    tpot_ms: TpotOpt = None,
    ttft_ms: TtftOpt = None,
    include_flagged: FlaggedOpt = False,
    gpu: GpuOpt = None,
) -> None:
    """Write the run's calibrated curve (versioned schema, docs/curve-schema.md) for planners."""
    from harness.readers.analysis import analyse
    from harness.readers.export import export_run

    a = analyse(run, include_flagged=include_flagged, gpu=gpu, tpot_ms=tpot_ms, ttft_ms=ttft_ms)
    _, where = export_run(a, fmt, out, tpot_ms, ttft_ms)
    if out == "-":
        print(where)
    else:
        err_console.print(f"wrote {where}", highlight=False)


@app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(help="two or more run directories")],
    allow_mismatch: Annotated[bool, typer.Option("--allow-mismatch",
                                                 help="compare runs whose workload metadata differ (marked)")]
    = False,
    out: Annotated[str | None, typer.Option(help="folder for compare.md, compare.json and plots/")] = None,
    include_flagged: FlaggedOpt = False,
) -> None:
    """Compare runs across parts or generations: table and overlay plots (absolute and normalised)."""
    from harness.readers.compare import compare_runs, write_comparison
    from harness.render.readers import compare_table

    cmp = write_comparison(compare_runs(runs, allow_mismatch, include_flagged), out)
    console.print(compare_table(cmp))
    if cmp.mismatched:
        err_console.print("[bold red]mismatched comparison:[/] " + "; ".join(cmp.differences), highlight=False)
    console.print(f"wrote {cmp.markdown} and {len(cmp.plots)} plots")


#: commands that change GPU settings: they restore what a killed run left first (in the library)
_CHANGING = ("sweep", "run", "restore", "govern")


@app.callback()
def _root(ctx: typer.Context) -> None:
    """tokbench: tokens per second and per joule across power limits and clocks."""
    if ctx.invoked_subcommand not in _CHANGING:
        from harness.sweep.guard import pending_note

        note = pending_note()
        if note:
            err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


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
    from harness.planner.outputs import default_out_dir, load_plotting, write_outputs
    from harness.planner.tables import render

    if export_network is not None and export_network.suffix != ".nc":
        raise UsageError(f"--export-network writes NetCDF: name the file *.nc, not '{export_network.name}'")
    if token_target is not None and not (math.isfinite(token_target) and token_target > 0):
        raise UsageError(f"--token-target must be a positive number of Gtok, got {token_target:g}")
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--out {out}: cannot create the folder ({e.strerror})") from e
    r = run_plan(site, grid, objective=objective, token_target_gtok=token_target, compare=compare,
                 background=load_plotting if plots else None)  # fmt: skip
    for item in render(r):
        console.print(item)
    for p in write_outputs(r, out or default_out_dir(r.site.name), plots=plots):
        console.print(f"wrote {p}")
    if export_network is not None:
        write_network(r, export_network)
        console.print(f"wrote {export_network}")


# ---- tokbench govern: hold the node's GPU power at a grid signal's target (harness/govern/) ----


@app.command()
def govern(
    curve: Annotated[str, typer.Option("--curve", help="the node's curve file (tokbench export)")],
    gpus: Annotated[str | None, typer.Option(help="GPUs to govern: 0,1 / UUIDs (required on real GPUs)")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="govern every GPU of the node")] = False,
    target_w: Annotated[float | None, typer.Option("--target-w", help="signal: fixed node GPU power target, W")]
    = None,
    schedule: Annotated[str | None, typer.Option(help="signal: a `tokbench plan` schedule.csv, followed in time")]
    = None,
    feed: Annotated[str | None, typer.Option(help="signal: CSV file followed as it grows, or http(s) JSON URL")]
    = None,
    openadr: Annotated[str | None, typer.Option(help="signal: OpenADR 2.0b VTN URL (needs the govern extra)")]
    = None,
    ven_name: Annotated[str, typer.Option(help="VEN name registered with the VTN")] = "tokbench-ven",
    config: Annotated[str | None, typer.Option(help="governor config TOML (profiles/govern/default.toml)")] = None,
    phase: Annotated[str | None, typer.Option(help="curve fit's phase, where the file has several")] = None,
    batch_size: Annotated[int | None, typer.Option(help="curve fit's batch, where the file has several")] = None,
    duration: Annotated[float | None, typer.Option(help="stop after this many device seconds (default: never; "
                                                        "a schedule: its end)")] = None,
    start: Annotated[str | None, typer.Option(help="signal time at start, e.g. 2026-01-14T16:00 (replays)")] = None,
    speedup: Annotated[float, typer.Option(help="signal time runs this many times faster than the device clock")]
    = 1.0,
    realtime: Annotated[bool, typer.Option(help="simulated parts: keep the device clock in step with the wall")]
    = False,
    dry_run: Annotated[bool, typer.Option(help="decide and log, change nothing")] = False,
    log: Annotated[str, typer.Option(help="decision log (CSV)")] = "govern-log.csv",
    plot: Annotated[str | None, typer.Option(help="also plot the decision log to this PNG")] = None,
    job: Annotated[str | None, typer.Option(help="simulated parts: profile of the job to run ('none': idle GPUs)")]
    = None,
    backend: BackendOpt = "auto",
    sim_gpu: SimGpuOpt = "h100-sxm",
    sim_count: SimCountOpt = 1,
    sim_seed: SimSeedOpt = 0,
    sim_override: SimOverrideOpt = None,
) -> None:
    """Hold the named GPUs' power at a target from a grid signal, choosing settings from the curve."""
    from harness.govern.log import plot_log, read_log
    from harness.govern.run import GovernOptions, run_governor

    opts = GovernOptions(
        curve=curve, gpus=gpus, yes=yes, target_w=target_w, schedule=schedule, feed=feed, openadr=openadr,
        ven_name=ven_name, config=config, phase=phase, batch_size=batch_size, duration_s=duration, start=start,
        speedup=speedup, realtime=realtime, dry_run=dry_run, log=log, job=job, backend=backend, sim_gpu=sim_gpu,
        sim_count=sim_count, sim_seed=sim_seed, sim_overrides=tuple(sim_override or ()),
    )

    def show(d) -> None:
        m = "-" if d.measured_w is None else f"{d.measured_w:.0f}"
        t = "-" if d.target_w is None else f"{d.target_w:.0f}"
        console.print(f"{d.time_utc} target {t} W measured {m} W setting {d.settings} [{d.zone}] {d.reason}",
                      highlight=False, soft_wrap=True, markup=False)

    r = run_governor(opts, on_decision=show)
    for m in [*(f"restored {x}" for x in r.restored), *r.messages]:
        err_console.print(f"[yellow]note:[/] {m}", highlight=False)
    if r.planned_tokens:
        lost = r.planned_tokens - r.tokens
        console.print(f"tokens {r.tokens:.4g}, planned {r.planned_tokens:.4g}, lost {lost:.4g} "
                      f"({100 * lost / r.planned_tokens:.2f}%)", highlight=False)
    else:
        console.print(f"tokens {r.tokens:.4g}", highlight=False)
    console.print(f"wrote {r.log_path}")
    if plot and r.log_path is not None:
        console.print(f"wrote {plot_log(read_log(r.log_path), plot)}")


# ---- tokbench fleet: Slurm campaigns (harness/fleet/) -------------

fleet_app = typer.Typer(
    help="Sweep many GPU nodes through Slurm, then collect and find the outliers.", no_args_is_help=True
)
app.add_typer(fleet_app, name="fleet")

CampaignArg = Annotated[str, typer.Argument(help="campaign directory, or its id under --results-root")]
ResultsRootOpt = Annotated[Path, typer.Option("--results-root", help="shared directory that holds the campaigns")]


@fleet_app.command("submit")
def fleet_submit(
    profile: Annotated[str | None, typer.Option("--profile", help="profile (file or name) every node sweeps")] = None,
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="nodes to sweep (one array task each)")] = 1,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", min=1, help="GPUs each task gets")] = 1,
    partition: Annotated[str | None, typer.Option("--partition")] = None,
    account: Annotated[str | None, typer.Option("--account")] = None,
    time: Annotated[str | None, typer.Option("--time", help="time limit per task, e.g. 2:00:00")] = None,
    results_root: ResultsRootOpt = Path("results/fleet"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the batch script; submit nothing")] = False,
    resume: Annotated[
        str | None, typer.Option("--resume", help="campaign (dir or id): re-submit only its unfinished tasks")
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help="nvml (real GPUs) or sim")] = "nvml",
    sim_gpu: Annotated[str | None, typer.Option("--sim-gpu", help="simulated part (implies --backend sim)")] = None,
    sim_seed: Annotated[int, typer.Option("--sim-seed", help="seed of task 0's node; task N gets seed+N")] = 0,
    sim_override: Annotated[
        list[str] | None,
        typer.Option("--sim-override", help="TASK:GPU:key=value,... per-board override, e.g. 1:0:leakage=1.4"),
    ] = None,
    points: Annotated[int | None, typer.Option("--points", help="passed to every sweep")] = None,
    values: Annotated[str | None, typer.Option("--values", help="passed to every sweep")] = None,
    repeats: Annotated[int | None, typer.Option("--repeats", help="passed to every sweep")] = None,
    exclusive: Annotated[bool, typer.Option("--exclusive", help="ask Slurm for whole nodes")] = False,
    cpus_per_task: Annotated[
        int | None, typer.Option("--cpus-per-task", min=1, help="CPUs per task (one sweep per GPU runs at once)")
    ] = None,
    gres: Annotated[
        bool, typer.Option("--gres/--no-gres", help="request gpu GRES (--no-gres: simulated fleets on CPU nodes)")
    ] = True,
    node_sweep: Annotated[
        bool,
        typer.Option("--node-sweep", help="one sweep over all of a node's GPUs (lockstep) instead of one per GPU"),
    ] = False,
) -> None:
    """Create a campaign and submit one `tokbench sweep` per node as a Slurm job array."""
    from harness.fleet import campaign as fleet

    if resume:
        result = fleet.resume_campaign(fleet.resolve_campaign(resume, results_root), dry_run=dry_run)
        if not result.tasks:
            console.print(f"campaign {result.campaign_dir.name}: nothing to re-submit", highlight=False)
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
            sim_overrides=tuple(sim_override or ()),
            points=points,
            values=values,
            repeats=repeats,
            partition=partition,
            account=account,
            time=time,
            exclusive=exclusive,
            cpus_per_task=cpus_per_task,
            request_gres=gres,
            per_gpu=not node_sweep,
        )
        result = fleet.submit_campaign(req, results_root, dry_run=dry_run)
    if dry_run:
        print(result.sbatch)
        print(result.script, end="")
        if any("GPU-slurm" in cmd for _, cmd in result.task_commands):
            print("# GPU-slurmN below stands for the UUID of the N-th GPU Slurm allocates to the task")
        for t, cmd in result.task_commands:
            print(f"# task {t} runs: {cmd}")
        return
    console.print(
        f"campaign {result.campaign_dir.name}: job {result.job_id}, tasks {','.join(map(str, result.tasks))}\n"
        f"  dir {result.campaign_dir}",
        highlight=False,
        soft_wrap=True,
    )


@fleet_app.command("status")
def fleet_status(campaign: CampaignArg, results_root: ResultsRootOpt = Path("results/fleet")) -> None:
    """Per task: Slurm state, the run's own status, points done."""
    from harness.fleet import campaign as fleet
    from harness.render.fleet import fleet_status_table

    cdir = fleet.resolve_campaign(campaign, results_root)
    console.print(fleet_status_table(cdir.name, fleet.campaign_status(cdir)))


@fleet_app.command("collect")
def fleet_collect(campaign: CampaignArg, results_root: ResultsRootOpt = Path("results/fleet")) -> None:
    """Merge the runs: per-GPU Max-Q/Max-P, spread, outliers, fleet curve (into <campaign>/collect/)."""
    from harness.fleet import campaign as fleet
    from harness.fleet import collect as fleet_collect
    from harness.render.fleet import fleet_collect_lines, fleet_gpu_table

    r = fleet_collect.collect(fleet.resolve_campaign(campaign, results_root))
    console.print(fleet_gpu_table(r))
    for line in fleet_collect_lines(r):
        console.print(line, highlight=False, soft_wrap=True)


@fleet_app.command("task", hidden=True)
def fleet_task(campaign_dir: Path, task: int) -> None:
    """One array task (the batch script runs it; not for hand use)."""
    from harness.fleet import campaign as fleet

    raise typer.Exit(fleet.run_task(campaign_dir, task))


@fleet_app.command("govern-start")
def fleet_govern_start(
    curve: Annotated[str, typer.Option("--curve", help="the nodes' curve file")],
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="nodes to govern (one array task each)")] = 1,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", min=1)] = 1,
    target_w: Annotated[float | None, typer.Option("--target-w", help="fleet GPU power target, W (split evenly)")]
    = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="a `tokbench plan` schedule.csv")] = None,
    feed: Annotated[str | None, typer.Option("--feed", help="CSV feed or http(s) JSON URL")] = None,
    openadr: Annotated[str | None, typer.Option("--openadr", help="OpenADR 2.0b VTN URL")] = None,
    config: Annotated[str | None, typer.Option("--config", help="governor config TOML")] = None,
    partition: Annotated[str | None, typer.Option("--partition")] = None,
    account: Annotated[str | None, typer.Option("--account")] = None,
    time: Annotated[str | None, typer.Option("--time", help="time limit (default: the partition's)")] = None,
    sim_gpu: Annotated[str | None, typer.Option("--sim-gpu", help="simulated nodes of this part")] = None,
    gres: Annotated[bool, typer.Option("--gres/--no-gres", help="request gpu GRES")] = True,
    results_root: ResultsRootOpt = Path("results/fleet"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the batch script; submit nothing")] = False,
) -> None:
    """Start one `tokbench govern` per node as a long-running Slurm job step."""
    from harness.fleet import campaign as fleet

    g = fleet.new_governors(curve=curve, nodes=nodes, gpus_per_node=gpus_per_node, target_w=target_w,
                            schedule=schedule, feed=feed, openadr=openadr, config=config, sim_gpu=sim_gpu,
                            partition=partition, account=account, time=time, request_gres=gres)
    r = fleet.start_governors(g, results_root, dry_run=dry_run)
    if dry_run:
        print(r.sbatch)
        print(r.script, end="")
        for t, cmd in r.task_commands:
            print(f"# task {t} runs: {cmd}")
        return
    console.print(f"governors {r.campaign_dir.name}: job {r.job_id}, {len(r.tasks)} nodes\n  dir {r.campaign_dir}",
                  highlight=False, soft_wrap=True)


@fleet_app.command("govern-stop")
def fleet_govern_stop(governors: Annotated[Path, typer.Argument(help="the governor fleet's directory")]) -> None:
    """Stop a fleet's governors: SIGTERM to each, which restores its GPUs and exits."""
    from harness.fleet import campaign as fleet

    console.print(f"sent SIGTERM to the governors of job {fleet.stop_governors(governors)}", highlight=False)


@fleet_app.command("govern-task", hidden=True)
def fleet_govern_task(governors: Path, task: int) -> None:
    """One governor task (the batch script runs it; not for hand use)."""
    from harness.fleet import campaign as fleet

    fleet.run_governor_task(governors, task)


def _run_interrupted() -> type[BaseException] | tuple[()]:
    """The sweep's interruption, only where a sweep ran: importing its module costs every other
    command (`tokbench plan` among them) a fifth of a second; evaluated only as an exception passes."""
    run = sys.modules.get("harness.sweep.run")
    return run.RunInterrupted if run is not None else ()


def main() -> None:
    """Console-script entry point: every TokbenchError becomes one line and its exit code; an
    interrupted run says where it is and how to resume it (see README.md, exit codes)."""
    try:
        rc = app(standalone_mode=False)
    except TokbenchError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.Abort:  # Ctrl-C outside a run: click turns KeyboardInterrupt into Abort
        err_console.print("[bold red]interrupted:[/] nothing was being recorded", highlight=False)
        sys.exit(130)
    except typer.TyperException as e:  # usage errors: unknown option, bad type (typer's own click)
        e.show()  # type: ignore[attr-defined]
        sys.exit(getattr(e, "exit_code", EXIT_USAGE))
    except _run_interrupted() as e:
        err_console.print(f"[bold red]interrupted by {e.signal_name}:[/] settings restored; {e.points} finished "
                          f"point(s) kept in {e.run_dir}\n  resume with: tokbench sweep --resume {e.run_dir}",
                          highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted:[/] settings restored; nothing was being recorded", highlight=False)
        sys.exit(130)
    except Terminated as e:
        err_console.print(f"[bold red]interrupted by {e.signal_name}:[/] settings restored", highlight=False)
        sys.exit(e.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
