"""Read a fleet campaign's runs back: one row per GPU, the spread across identical parts, the
outliers among them, and a fleet curve (median and band) in the planners' curve schema.

Outliers are judged against siblings (same part, phase, batch and knob) with the robust z-score
``z = 0.6745 * (x - median) / MAD`` of Iglewicz and Hoaglin, flagged when ``|z| > 3.5``. The MAD is
floored at ``MAD_FLOOR_REL`` of the median so that near-identical boards do not turn a 0.1%
difference into an outlier: with the floor, nothing closer than ~2.6% to the median is flagged.
At least ``MIN_SIBLINGS`` boards are needed to judge.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import RunDirError, TokbenchError
from harness.fleet import campaign as fleet
from harness.knobs import POWER_LIMIT, SM_CLOCK
from harness.readers.analysis import ranges_of, search_answers
from harness.readers.export import setting_range
from harness.records.curves import (
    CurveFile,
    CurveFit,
    CurvePoint,
    PartIdentity,
    Provenance,
    SettingRange,
    WorkloadIdentity,
    save_curve,
)
from harness.records.rundir import RunDir

Z_THRESHOLD = 3.5
MAD_FLOOR_REL = 0.005
MIN_SIBLINGS = 3
BAND_PCT = (5.0, 95.0)
GROUP = ["part", "knob", "phase", "batch_size"]


class FleetCollectError(TokbenchError):
    """A campaign with nothing to collect."""


@dataclass(frozen=True)
class Collected:
    gpus: pd.DataFrame  # one row per (task, GPU, phase, batch): Max-Q tokens/J, Max-P tokens/s
    spread: pd.DataFrame  # per sibling group and metric: n, median, min, max, spread %, robust CV
    outliers: pd.DataFrame  # one row per flagged (GPU, metric)
    incomplete: list[fleet.TaskStatus]  # tasks not (or not fully) collected, with why
    curves: list[CurveFile]
    out_dir: Path


def robust_z(values: pd.Series) -> pd.Series:
    """Iglewicz–Hoaglin modified z-score with the MAD floored at ``MAD_FLOOR_REL`` of the median."""
    med = float(values.median())
    mad = float((values - med).abs().median())
    scale = max(mad, MAD_FLOOR_REL * abs(med), 1e-12)
    return 0.6745 * (values - med) / scale


def _devices(manifest: dict) -> dict[str, dict]:
    """uuid -> device record from the manifest (tolerant of its exact shape)."""
    out: dict[str, dict] = {}
    for d in manifest.get("devices", []) or []:
        if isinstance(d, dict) and d.get("uuid"):
            out[str(d["uuid"])] = d
    return out


#: per-point figures a curve file carries when the runs have them (median across GPUs)
OPTIONAL_COLUMNS = ("power_p99_w", "power_max_1s_w", "sm_clock_mean_mhz", "ttft_ms", "tpot_ms", "tokens_per_s_per_user")


def _per_setting(points: pd.DataFrame) -> pd.DataFrame:
    """Valid points averaged over repeats, one row per (GPU, knob, phase, batch, setting)."""
    pts = points[points["flags"] == ""] if "flags" in points else points
    keys = ["gpu_index", "gpu_uuid", "knob", "phase", "batch_size", "setting"]
    extra = {c: (c, "mean") for c in OPTIONAL_COLUMNS if c in pts}
    return pts.groupby(keys, as_index=False).agg(
        tokens_per_s=("tokens_per_s", "mean"),
        tokens_per_j=("tokens_per_j", "mean"),
        power_mean_w=("power_mean_w", "mean"),
        repeats=("tokens_per_s", "size"),
        **extra,
    )


def _median_or_none(s: pd.DataFrame, col: str) -> float | None:
    if col not in s:
        return None
    v = pd.to_numeric(s[col], errors="coerce").dropna()
    return float(v.median()) if len(v) else None


def gpu_table(statuses: list[fleet.TaskStatus]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict], pd.DataFrame]:
    """(per-GPU Max-Q/Max-P rows, per-setting rows of every GPU, uuid -> device record, every point
    row), from every finished run (the finished runs of an unfinished task count too; the task is
    still listed). Max-Q and Max-P are the analysis's ranges (``readers.analysis.ranges_of``)."""
    rows: list[dict] = []
    settings: list[pd.DataFrame] = []
    raw: list[pd.DataFrame] = []
    devices: dict[str, dict] = {}
    finished = [(st, d) for st in statuses for d in st.run_dirs if fleet.run_progress(d)[0] in fleet.DONE_STATUSES]
    for st, run_dir in finished:
        try:
            rd = RunDir.open(run_dir)
            manifest, points = rd.manifest, rd.points()
        except (RunDirError, ValueError, KeyError):
            continue  # run_progress already called it damaged; the task is listed
        devs = _devices(manifest)
        for d in devs.values():
            d["_workload"] = manifest.get("workload") if isinstance(manifest.get("workload"), dict) else {}
        devices.update(devs)
        per = _per_setting(points)
        if per.empty:
            continue
        per["task"], per["host"] = st.task, st.host
        per["part"] = [
            str(devs.get(u, {}).get("name") or devs.get(u, {}).get("part") or "unknown") for u in per["gpu_uuid"]
        ]
        settings.append(per)
        raw.append(points.assign(task=st.task, host=st.host,
                                 part=[str(devs.get(u, {}).get("name") or devs.get(u, {}).get("part") or "unknown")
                                       for u in points["gpu_uuid"]]))
        searched = search_answers(manifest, points)
        for (gpu_index, uuid, part, knob), g in per.groupby(["gpu_index", "gpu_uuid", "part", "knob"]):
            for (phase, batch), (q, p) in ranges_of(points[points["gpu_uuid"] == uuid], searched=searched).items():
                rows.append(dict(task=st.task, host=st.host, gpu_index=int(gpu_index), gpu_uuid=uuid, part=part,
                                 knob=knob, phase=phase, batch_size=batch,
                                 max_q_tokens_per_j=q.value, max_q_setting=q.best, max_q_lo=q.lo, max_q_hi=q.hi,
                                 max_p_tokens_per_s=p.value, max_p_setting=p.best,
                                 settings=int(((g["phase"] == phase) & (g["batch_size"] == batch)).sum())))
    return (
        pd.DataFrame(rows),
        (pd.concat(settings, ignore_index=True) if settings else pd.DataFrame()),
        devices,
        (pd.concat(raw, ignore_index=True) if raw else pd.DataFrame()),
    )


METRICS = ("max_q_tokens_per_j", "max_p_tokens_per_s")


def spread_and_outliers(gpus: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(gpus with z-score columns, spread per group and metric, outlier rows)."""
    gpus = gpus.copy()
    spread_rows: list[dict] = []
    out_rows: list[dict] = []
    for m in METRICS:
        gpus[f"{m}_z"] = np.nan
    for key, g in gpus.groupby(GROUP):
        for m in METRICS:
            v = g[m]
            med = float(v.median())
            mad = float((v - med).abs().median())
            spread_rows.append(
                dict(
                    zip(GROUP, key, strict=True),
                    metric=m,
                    n=len(v),
                    median=med,
                    min=float(v.min()),
                    max=float(v.max()),
                    spread_pct=100.0 * (float(v.max()) - float(v.min())) / med if med else np.nan,
                    robust_cv_pct=100.0 * 1.4826 * mad / med if med else np.nan,
                )
            )
            if len(v) < MIN_SIBLINGS:
                continue
            z = robust_z(v)
            gpus.loc[g.index, f"{m}_z"] = z
            for idx in z.index[z.abs() > Z_THRESHOLD]:
                r = gpus.loc[idx]
                out_rows.append(
                    dict(
                        task=int(r["task"]),
                        host=r["host"],
                        gpu_index=int(r["gpu_index"]),
                        gpu_uuid=r["gpu_uuid"],
                        part=r["part"],
                        phase=r["phase"],
                        batch_size=int(r["batch_size"]),
                        metric=m,
                        value=float(r[m]),
                        median=med,
                        deviation_pct=100.0 * (float(r[m]) / med - 1.0),
                        z=float(z[idx]),
                        direction="low" if z[idx] < 0 else "high",
                    )
                )
    return gpus, pd.DataFrame(spread_rows), pd.DataFrame(out_rows)


def _band(values: np.ndarray) -> tuple[float, float, float]:
    lo, hi = np.percentile(values, BAND_PCT)
    return float(np.median(values)), float(lo), float(hi)


def fleet_curves(
    per_setting: pd.DataFrame,
    gpus: pd.DataFrame,
    devices: dict[str, dict],
    campaign: fleet.Campaign,
    exclude: set[str],
    raw: pd.DataFrame,
) -> list[CurveFile]:
    """One CurveFile per (part, knob): median across healthy GPUs at each setting; the ``*_ci``
    fields hold the half-width of the fleet band (5th–95th percentile across GPUs)."""
    curves: list[CurveFile] = []
    if per_setting.empty:
        return curves
    healthy = per_setting[~per_setting["gpu_uuid"].isin(exclude)]
    for (part, knob), pg in healthy.groupby(["part", "knob"]):
        if knob not in (POWER_LIMIT.field, SM_CLOCK.field):  # observe-only runs make no curve
            continue
        points: list[CurvePoint] = []
        fits: list[CurveFit] = []
        max_q: list[SettingRange] = []
        max_p: list[SettingRange] = []
        for (phase, batch), g in pg.groupby(["phase", "batch_size"]):
            ss, tps, tpj, pw = [], [], [], []
            p99: list[float | None] = []
            max1: list[float | None] = []
            for setting, s in g.groupby("setting"):
                t_med, t_lo, t_hi = _band(s["tokens_per_s"].to_numpy())
                j_med, j_lo, j_hi = _band(s["tokens_per_j"].to_numpy())
                p_med = float(s["power_mean_w"].median())
                opt = {c: _median_or_none(s, c) for c in OPTIONAL_COLUMNS}
                points.append(
                    CurvePoint(
                        setting=float(setting),
                        phase=str(phase),
                        batch_size=int(batch),
                        repeats=len(s),  # GPUs at this setting
                        tokens_per_s=t_med,
                        tokens_per_s_ci=(t_hi - t_lo) / 2,
                        tokens_per_j=j_med,
                        tokens_per_j_ci=(j_hi - j_lo) / 2,
                        power_mean_w=p_med,
                        **opt,
                    )
                )
                ss.append(float(setting))
                tps.append(t_med)
                tpj.append(j_med)
                pw.append(p_med)
                p99.append(opt["power_p99_w"])
                max1.append(opt["power_max_1s_w"])
            fits.append(
                CurveFit(
                    phase=str(phase),
                    batch_size=int(batch),
                    method="fleet-median",
                    settings=ss,
                    tokens_per_s=tps,
                    power_mean_w=pw,
                    power_p99_w=None if None in p99 else p99,
                    power_max_1s_w=None if None in max1 else max1,
                )
            )
            healthy_pts = raw[(raw["part"] == part) & (raw["knob"] == knob) & ~raw["gpu_uuid"].isin(exclude)]
            pooled = ranges_of(healthy_pts[(healthy_pts["phase"] == phase) & (healthy_pts["batch_size"] == batch)])
            if (str(phase), int(batch)) in pooled:  # every GPU's repeats pooled: the analysis's own ranges
                q, p = pooled[(str(phase), int(batch))]
                median = dict(zip(ss, zip(tps, tpj, strict=True), strict=True))  # the curve's own values at the picks
                max_q.append(setting_range(str(phase), int(batch), replace(q, value=median[q.best][1])))
                max_p.append(setting_range(str(phase), int(batch), replace(p, value=median[p.best][0])))
        uuids = sorted(pg["gpu_uuid"].unique())
        dev = next((devices[u] for u in uuids if u in devices), {})
        first_phase = pg.iloc[0]
        curves.append(
            CurveFile(
                knob=knob,
                part=_part_identity(str(part), dev, uuids),
                workload=_workload_identity(campaign, dev, int(first_phase["batch_size"])),
                points=points,
                fits=fits,
                max_q=max_q,
                max_p=max_p,
                provenance=Provenance(
                    tool_version=campaign.tool_version,
                    run_ids=[
                        f"{campaign.id}/{h}/task-{t}"
                        for t, h in sorted(set(zip(gpus["task"], gpus["host"], strict=True)))
                    ],
                    created=fleet._now(),
                    host="fleet",
                    command=f"tokbench fleet collect {campaign.id}",
                ),
            )
        )
    return curves


def _num(d: dict, *keys: str, default: float = 0.0) -> float:
    for k in keys:
        cur = d
        for part in k.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if isinstance(cur, (int, float)):
            return float(cur)
    return default


def _part_identity(part: str, dev: dict, uuids: list[str]) -> PartIdentity:
    return PartIdentity(
        name=part,
        architecture=str(dev.get("architecture", "")),
        backend="fleet",
        driver=str(dev.get("driver", "")),
        uuids=uuids,
        power_limit_min_w=_num(dev, "power_limits.min_w", "limits.min_w"),
        power_limit_max_w=_num(dev, "power_limits.max_w", "limits.max_w"),
        power_limit_default_w=_num(dev, "power_limits.default_w", "limits.default_w"),
        max_sm_clock_mhz=int(_num(dev, "max_sm_clock_mhz")),
    )


def _workload_identity(c: fleet.Campaign, dev: dict, batch_size: int) -> WorkloadIdentity:
    """The workload as the runs' manifests describe it (the profile's name where they do not)."""
    w = dev.get("_workload") or {}
    fields = {k: w[k] for k in WorkloadIdentity.model_fields if k in w and w[k] is not None}
    fields.setdefault("name", Path(c.profile).stem)
    for k in ("kind", "engine", "model", "precision"):
        fields[k] = str(fields.get(k, ""))
    fields["batch_size"] = batch_size
    try:
        return WorkloadIdentity(**fields)
    except ValueError:
        return WorkloadIdentity(
            name=Path(c.profile).stem, kind="", engine="", model="", precision="", batch_size=batch_size
        )


def collect(cdir: Path) -> Collected:
    """Merge a campaign's finished runs; write ``collect/`` (CSV tables, fleet curve files,
    report.md) into the campaign directory and return the tables."""
    c = fleet.load_campaign(cdir)
    statuses = fleet.campaign_status(cdir, c)
    gpus, per_setting, devices, raw = gpu_table(statuses)
    incomplete = [s for s in statuses if not s.done]
    if gpus.empty:
        raise FleetCollectError(
            f"campaign {c.id}: no finished run with valid points yet ({len(incomplete)} of {c.nodes} tasks unfinished)"
        )
    gpus, spread, outliers = spread_and_outliers(gpus)
    exclude = set(outliers["gpu_uuid"]) if not outliers.empty else set()
    curves = fleet_curves(per_setting, gpus, devices, c, exclude, raw)
    out = cdir / "collect"
    out.mkdir(exist_ok=True)
    gpus.to_csv(out / "gpus.csv", index=False)
    spread.to_csv(out / "spread.csv", index=False)
    outliers.to_csv(out / "outliers.csv", index=False)
    for cf in curves:
        suffix = "" if len(curves) == 1 else f"-{cf.part.name}-{cf.knob}".replace(" ", "_")
        save_curve(cf, out / f"fleet-curve{suffix}.json")
    result = Collected(gpus, spread, outliers, incomplete, curves, out)
    (out / "report.md").write_text(report_markdown(c, result))
    return result


def _md_table(df: pd.DataFrame) -> str:
    """A Markdown table (pandas' to_markdown needs tabulate, which tokbench does not depend on)."""
    if df.empty:
        return "none"

    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def report_markdown(c: fleet.Campaign, r: Collected) -> str:
    sim = f" ({c.sim_gpu})" if c.sim_gpu else ""
    lines = [
        f"# Fleet campaign {c.id}",
        "",
        f"Profile `{c.profile}`, {c.nodes} tasks x {c.gpus_per_node} GPUs, backend {c.backend}{sim}.",
        "",
        "## GPUs",
        "",
        _md_table(r.gpus),
        "",
        "## Spread across identical parts",
        "",
        _md_table(r.spread),
        "",
        f"## Outliers (|robust z| > {Z_THRESHOLD}, MAD floored at {MAD_FLOOR_REL:.1%} of the median)",
        "",
        _md_table(r.outliers),
        "",
        "## Incomplete tasks",
        "",
    ]
    lines += [
        f"- task {s.task} ({s.job or 'never submitted'}): Slurm {s.slurm_state}, run "
        f"{s.run_status or 'not started'}, {s.points_done} points, exit {s.exit_code}"
        for s in r.incomplete
    ] or ["none"]
    return "\n".join(lines) + "\n"
