"""The calibrated-curve file of a run (``tokbench export``): what planners consume.

Built from a ``RunAnalysis`` into ``harness.records.curves.CurveFile`` (validated by pydantic on the way
out, as it is on the way in), written as JSON, or as CSV of the per-setting points for
spreadsheets. Documented in docs/curve-schema.md.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import UsageError
from harness.knobs import POWER_LIMIT, SM_CLOCK
from harness.readers.analysis import Curve, RunAnalysis, SettingStats
from harness.readers.fit import METHOD, fit_grid
from harness.readers.ranges import Range
from harness.readers.stats import Interval
from harness.readers.tokenomics import serving_fields
from harness.records.curves import (
    CurveFile,
    CurveFit,
    CurvePoint,
    LatencyPoint,
    PartIdentity,
    Provenance,
    SettingRange,
    WorkloadIdentity,
    save_curve,
)
from harness.records.manifest import command_text, hostname

#: TPOT targets exported for a run with latencies when the user names none (ms)
DEFAULT_TPOT_TARGETS_MS = (10.0, 20.0, 50.0, 100.0, 200.0)
FORMATS = ("json", "csv")


def _num(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _point(s: SettingStats, valid: bool = True) -> CurvePoint:
    def ci(i: Interval) -> float:
        return float(i.half_width) if np.isfinite(i.half_width) else 0.0

    return CurvePoint(
        setting=s.setting, enforced=_num(s.enforced), phase=s.phase, batch_size=s.batch_size, repeats=s.n,
        tokens_per_s=s.tokens_per_s.mean, tokens_per_s_ci=ci(s.tokens_per_s), tokens_per_j=s.tokens_per_j.mean,
        tokens_per_j_ci=ci(s.tokens_per_j), power_mean_w=s.power_mean_w, power_p99_w=_num(s.power_p99_w),
        power_max_1s_w=_num(s.power_max_1s_w), sm_clock_mean_mhz=_num(s.sm_clock_mean_mhz), ttft_ms=_num(s.ttft_ms),
        tpot_ms=_num(s.tpot_ms), tokens_per_s_per_user=_num(s.tokens_per_s_per_user), flags=list(s.flags),
        valid=valid, **serving_fields(s),
    )


def _fit(c: Curve, unit: str) -> CurveFit:
    grid = fit_grid(c.fit_tokens_per_s.lo, c.fit_tokens_per_s.hi, c.settings, 5.0 if unit == "W" else 15.0)

    def tab(f) -> list[float] | None:
        return None if f is None else [float(v) for v in f(grid)]

    return CurveFit(
        phase=c.phase, batch_size=c.batch_size, method=METHOD, settings=[float(g) for g in grid],
        tokens_per_s=tab(c.fit_tokens_per_s), power_mean_w=tab(c.fit_power_w), power_p99_w=tab(c.fit_power_p99_w),
        power_max_1s_w=tab(c.fit_power_max_1s_w),
        residuals_tokens_per_s=[float(r) for r in c.fit_tokens_per_s.residuals],
        residual_settings=[float(s) for s in c.fit_tokens_per_s.settings],
        residuals_power_mean_w=[float(r) for r in c.fit_power_w.residuals],
    )


def setting_range(phase: str, batch_size: int, r: Range) -> SettingRange:
    """An analysis range as the curve file writes it (also for fleet curves)."""
    return SettingRange(phase=phase, batch_size=batch_size, lo=r.lo, hi=r.hi, best=r.best, value=r.value)


def _ranges(c: Curve) -> tuple[SettingRange, SettingRange]:
    return setting_range(c.phase, c.batch_size, c.max_q), setting_range(c.phase, c.batch_size, c.max_p)


def _latency_points(a: RunAnalysis, tpot_ms: float | None, ttft_ms: float | None) -> list[LatencyPoint]:
    tk = a.tokenomics
    if tk is None:
        return []
    targets = [(tpot_ms, ttft_ms)] if tpot_ms is not None else [(t, None) for t in DEFAULT_TPOT_TARGETS_MS]
    out = []
    for tpot, ttft in targets:
        ch = tk.choose(tpot, ttft)
        q = ch.max_q
        if q is None:
            continue
        out.append(LatencyPoint(tpot_ms_target=tpot, ttft_ms_target=ttft, setting=q.setting, batch_size=q.batch_size,
                                tokens_per_j=q.tokens_per_j, tokens_per_s=q.tokens_per_s, tpot_ms=q.tpot_ms,
                                ttft_ms=q.ttft_ms, tokens_per_s_per_user=q.tokens_per_s_per_user,
                                goodput_tokens_per_j=q.goodput_tokens_per_j))
    return out


def _flagged_points(a: RunAnalysis) -> list[CurvePoint]:
    """Groups measured only by flagged rows: exported as invalid points so a planner can see them."""
    if a.include_flagged or not len(a.flagged):
        return []
    from harness.readers.analysis import setting_stats

    have = {(s.phase, s.batch_size, s.setting) for c in a.curves for s in c.stats}
    return [_point(s, valid=False) for s in setting_stats(a.flagged, include_flagged=True)
            if (s.phase, s.batch_size, s.setting) not in have]


def build_curve(a: RunAnalysis, tpot_ms: float | None = None, ttft_ms: float | None = None) -> CurveFile:
    """The curve file of an analysed run (validated on construction)."""
    from harness import __version__

    run, part = a.run, a.part
    backend = part.backend if part.backend in ("nvml", "sim", "fleet") else "sim"
    w = run.workload
    knob = SM_CLOCK.field if a.knob == SM_CLOCK.field else POWER_LIMIT.field  # observe runs export as limits
    ranges = [_ranges(c) for c in a.curves]
    return CurveFile(
        knob=knob,
        part=PartIdentity(name=part.name, architecture=part.architecture, backend=backend, driver=part.driver,
                          uuids=list(part.uuids), power_limit_min_w=part.power_limit_min_w,
                          power_limit_max_w=part.power_limit_max_w, power_limit_default_w=part.power_limit_default_w,
                          max_sm_clock_mhz=part.max_sm_clock_mhz),
        workload=WorkloadIdentity(name=str(w.get("name", "unknown")), kind=str(w.get("kind", "")),
                                  engine=str(w.get("engine", "")), model=str(w.get("model", "")),
                                  precision=str(w.get("precision", "")), batch_size=int(w.get("batch_size") or 0),
                                  seq_len=int(w.get("seq_len") or 0), input_len=int(w.get("input_len") or 0),
                                  output_len=int(w.get("output_len") or 0), params=int(w.get("params") or 0)),
        idle_power_w=run.idle_power_w,
        points=[_point(s) for c in a.curves for s in c.stats] + _flagged_points(a),
        fits=[_fit(c, a.unit) for c in a.curves],
        max_q=[q for q, _ in ranges],
        max_p=[p for _, p in ranges],
        latency_points=_latency_points(a, tpot_ms, ttft_ms),
        provenance=Provenance(tool_version=__version__, run_ids=[run.run_id],
                              created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                              host=hostname(run.manifest), command=command_text(run.manifest)),
    )


def points_frame(curve: CurveFile) -> pd.DataFrame:
    """The curve file's points as one table (the CSV export), Max-Q/Max-P membership marked."""
    rows = []
    for p in curve.points:
        r = p.model_dump()
        r["flags"] = ";".join(p.flags)
        q = next((m for m in curve.max_q if m.phase == p.phase and m.batch_size == p.batch_size), None)
        mp = next((m for m in curve.max_p if m.phase == p.phase and m.batch_size == p.batch_size), None)
        r["in_max_q"] = bool(q and q.lo <= p.setting <= q.hi and p.valid)
        r["in_max_p"] = bool(mp and mp.lo <= p.setting <= mp.hi and p.valid)
        rows.append(r)
    return pd.DataFrame(rows)


def export_run(a: RunAnalysis, fmt: str = "json", out: str | Path | None = None, tpot_ms: float | None = None,
               ttft_ms: float | None = None) -> tuple[CurveFile, str | Path]:
    """Write the run's curve file; ``out`` "-" returns the text instead of writing a file.
    Returns the curve and the path written (or the text)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format '{fmt}' (choose json or csv)")
    curve = build_curve(a, tpot_ms, ttft_ms)
    if out == "-":
        if fmt == "csv":
            buf = io.StringIO()
            points_frame(curve).to_csv(buf, index=False)
            return curve, buf.getvalue()
        import json

        return curve, json.dumps(curve.model_dump(mode="json", by_alias=True), indent=2)
    path = Path(out) if out else a.run.path / f"curve.{fmt}"
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: folder {path.parent} does not exist")
    try:
        if fmt == "json":
            save_curve(curve, path)
        else:
            points_frame(curve).to_csv(path, index=False)
    except OSError as e:
        raise UsageError(f"--out {path}: cannot write ({e.strerror})") from e
    return curve, path
