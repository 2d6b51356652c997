"""What `tokbench plan` writes: schedule.csv, summary.json and plan.png in one output folder."""

from __future__ import annotations

import json
import math
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

from harness.planner.plan import NO_SURPLUS, PlanResult
from harness.planner.schedule import per_kind
from harness.planner.steady import rows_as_dicts


def _clean(x):
    """JSON-safe: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "isoformat"):
        return x.isoformat()
    return x


def _records(items: list) -> list[dict]:
    """Flat dataclasses as dicts (``asdict`` deep-copies every field: a tenth of a second for a
    year's curtailments)."""
    names = [f.name for f in fields(items[0])] if items else []
    return [{n: getattr(c, n) for n in names} for c in items]


def summary(result: PlanResult) -> dict:
    site, fleet = result.site, result.fleet
    out: dict = {
        "site": site.name,
        "provision": site.provision,
        "fleet": {
            "gpus": fleet.gpus,
            "budget_mw": fleet.budget_mw,
            "reference_draw_mw": result.reference_mw or None,
            "workloads": [
                {
                    "label": w.label,
                    "curve": w.curve_path,
                    "gpus": w.gpus,
                    "max_p_setting": w.settings[w.max_p_index],
                    "max_q_setting": w.settings[w.max_q_index],
                    "default_setting": w.settings[w.default_index],
                    "hull_settings": [w.settings[i] for i in w.hull()],
                    "hull_gap": w.hull_gap(),
                }
                for w in fleet.workloads
            ],
        },
        "steady": rows_as_dicts(result.steady),
        "best": result.best,
    }
    if result.schedule is not None:
        out |= {
            "objective": result.objective,
            "objective_value": result.schedule.objective_value,
            "token_target_gtok": result.target_gtok,
            "intervals": len(result.schedule.frame),
            "step_h": result.horizon.step_h,
            "totals": {"plan": result.schedule.totals}
            | {k: v.totals for k, v in result.baselines.items()}
            | ({NO_SURPLUS: result.whatif.totals} if result.whatif else {}),
            "per_kind": per_kind(result.fleet, result.schedule.frame, result.horizon.step_h),
            "curtailments": _records(result.curtailments),
            "surplus": result.surplus,
        }
    return _clean(out)


def _step(ax, index, values, **kw) -> None:
    """A post-step line that also spans the last interval."""
    x = index.append(index[-1:] + (index[-1] - index[-2] if len(index) > 1 else pd.Timedelta(hours=1)))
    y = np.append(np.asarray(values, dtype=float), np.asarray(values, dtype=float)[-1])
    ax.step(x, y, **kw)


#: horizons longer than this are plotted as daily bands and duration curves, not interval steps
LONG_DAYS = 14


def is_long(result: PlanResult) -> bool:
    return len(result.schedule.frame) * result.horizon.step_h > LONG_DAYS * 24


def load_plotting():
    """matplotlib on its file backend: half a second to import, so `tokbench plan` has it imported
    on the comparison thread while the plan solves (``plan(background=load_plotting)``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(result: PlanResult, path: Path) -> None:
    """Interval steps for a short horizon; daily bands and duration curves for a long one."""
    if is_long(result):
        plot_long(result, path)
        return
    plt = load_plotting()
    f = result.schedule.frame
    h = result.horizon
    has_batt = "soc_mwh" in f
    fig, axes = plt.subplots(3 if has_batt else 2, 1, figsize=(11, 8.5), sharex=True)
    ax = axes[0]
    _step(
        ax,
        f.index,
        f["import_available_mw"] + h.generation_mw,
        color="0.4",
        label="grid + generation offered",
    )
    _step(ax, f.index, f["gpu_mw"], color="C0", label="GPU power, plan")
    if "default" in result.baselines:
        _step(
            ax,
            f.index,
            result.baselines["default"].frame["gpu_mw"],
            color="C1",
            ls="--",
            label="GPU power, default setting",
        )
    ax.axhline(result.reference_mw, color="0.7", lw=0.8, ls=":")
    ax.set_ylabel("MW")
    ax.legend(loc="lower left", fontsize=8)
    ax2 = ax.twinx()
    setting_col = "setting_mean" if "setting_mean" in f else "w0_setting_mean"
    _step(ax2, f.index, f[setting_col], color="C2", alpha=0.7)
    ax2.set_ylabel(f"mean setting ({result.fleet.workloads[0].knob})", color="C2")
    ax.set_title(f"{result.site.name}: plan ({result.objective})")
    if has_batt:
        b = result.site.battery
        ends = f.index + pd.Timedelta(hours=h.step_h)  # state of charge at the end of each interval
        axes[1].plot(ends, f["soc_mwh"], color="C3")
        for lim in (b.soc_min, b.soc_max):
            axes[1].axhline(lim * b.energy_mwh, color="0.7", ls=":")
        axes[1].set_ylabel("battery MWh")
    ax = axes[-1]
    _step(ax, f.index, f["tokens_gtok"], color="C0", label="plan")
    for k, r in result.baselines.items():
        _step(ax, f.index, r.frame["tokens_gtok"], ls="--", lw=0.9, label=k)
    ax.set_ylabel("Gtok per interval")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _band(ax, series: pd.Series, color: str, label: str) -> None:
    """Daily min–max as a shaded band, the daily mean as a line."""
    d = series.resample("D").agg(["min", "mean", "max"])
    ax.fill_between(d.index, d["min"], d["max"], color=color, alpha=0.25, lw=0)
    ax.plot(d.index, d["mean"], color=color, lw=1, label=label)


def plot_long(result: PlanResult, path: Path) -> None:
    """A long horizon: GPU power and what was offered as daily bands, tokens per day per policy,
    the battery's daily range, and duration curves (each power sorted, highest first)."""
    plt = load_plotting()
    f = result.schedule.frame
    h = result.horizon
    has_batt = "soc_mwh" in f
    fig, axes = plt.subplots(4 if has_batt else 3, 1, figsize=(11, 11))
    ax = axes[0]
    _band(ax, f["import_available_mw"] + h.generation_mw, "0.4", "grid + generation offered (daily range, mean)")
    _band(ax, f["gpu_mw"], "C0", "GPU power, plan")
    ax.axhline(result.reference_mw, color="0.7", lw=0.8, ls=":")
    ax.set_ylabel("MW")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"{result.site.name}: plan ({result.objective}), {len(f):,} intervals of {h.step_h:g} h")
    ax = axes[1]
    ax.plot(f["tokens_gtok"].resample("D").sum(), color="C0", lw=1, label="plan")
    for k, r in result.baselines.items():
        ax.plot(r.frame["tokens_gtok"].resample("D").sum(), lw=0.8, ls="--", label=k)
    ax.set_ylabel("Gtok per day")
    ax.legend(loc="lower left", fontsize=8)
    if has_batt:
        _band(axes[2], f["soc_mwh"], "C3", "battery state of charge")
        axes[2].set_ylabel("battery MWh")
    ax = axes[-1]
    pick = np.unique(np.linspace(0, len(f) - 1, min(len(f), 1000)).astype(int))  # a curve needs no more

    def duration(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (pick + 0.5) / len(f) * 100, np.sort(values)[::-1][pick]

    ax.plot(*duration(f["gpu_mw"].to_numpy()), color="C0", label="GPU power, plan")
    if "default" in result.baselines:
        base = result.baselines["default"].frame["gpu_mw"].to_numpy()
        ax.plot(*duration(base), color="C1", ls="--", label="GPU power, default setting")
    ax.plot(*duration((f["import_available_mw"] + h.generation_mw).to_numpy()), color="0.4", label="offered")
    ax.set_xlabel("% of intervals at or above")
    ax.set_ylabel("MW (duration curve)")
    ax.legend(loc="lower left", fontsize=8)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.96, bottom=0.05, hspace=0.3)  # tight_layout costs a draw
    fig.savefig(path, dpi=100, pil_kwargs={"compress_level": 1})  # a fifth of the default's encoding time
    plt.close(fig)


def default_out_dir(site_name: str) -> Path:
    """results/plan-<site name>, the name made safe for a path."""
    return Path("results") / ("plan-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", site_name).strip("-.") or "site"))


ISO = "%Y-%m-%dT%H:%M:%S"


def write_csv(frame: pd.DataFrame, path: Path, times: pd.Index | None = None) -> None:
    """A table as CSV through Arrow (a year of intervals in tens of ms, not a second), every float
    at full round-trip precision so the totals can be re-derived from it; times as ISO 8601
    (``times``: the frame's index already formatted, as the schedules of one horizon share it)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if isinstance(frame.index, pd.DatetimeIndex):
        out = frame.reset_index()
        out[out.columns[0]] = frame.index.strftime(ISO) if times is None else times
    else:
        out = frame.copy()
    for c in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[c]):
            out[c] = out[c].dt.strftime(ISO)
    with open(path, "wb") as fh:
        fh.write((",".join(map(str, out.columns)) + "\n").encode())
        opts = pacsv.WriteOptions(include_header=False, quoting_style="none")
        pacsv.write_csv(pa.Table.from_pandas(out, preserve_index=False), fh, opts)


def write_outputs(result: PlanResult, out_dir: Path, plots: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    p = out_dir / "summary.json"
    p.write_text(json.dumps(summary(result), indent=2) + "\n")
    written.append(p)
    if result.schedule is not None:
        times = result.schedule.frame.index.strftime(ISO)
        p = out_dir / "schedule.csv"
        write_csv(result.schedule.frame, p, times)
        written.append(p)
        others = dict(result.baselines) | ({NO_SURPLUS: result.whatif} if result.whatif else {})
        for k, r in others.items():  # each fixed policy's schedule and the what-if, to check their figures by
            p = out_dir / f"schedule-{k}.csv"
            write_csv(r.frame, p, times)
            written.append(p)
        if result.curtailments:
            p = out_dir / "curtailments.csv"
            write_csv(pd.DataFrame(_records(result.curtailments)), p)
            written.append(p)
        if plots:
            p = out_dir / "plan.png"
            plot(result, p)
            written.append(p)
    return written
