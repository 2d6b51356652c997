"""Every figure of the schedule in summary.json, re-derived from the CSVs the command wrote.

Only the site file's prices and the curve's per-setting figures (the steady rows of summary.json)
go in besides the CSVs, so a reader can audit the plan with a spreadsheet.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.cli import app

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "profiles/sites/example-site.toml"


def _totals(f: pd.DataFrame, per_setting: dict, site: dict, gpus: int, dt: float) -> dict[str, float]:
    counts = {float(c.split("@")[1]): f[c] for c in f if c.startswith("gpus@")}
    # the columns agree with the whole GPU counts beside them
    assert (sum(counts.values()) == f["gpus_running"]).all() and (f["gpus_running"] + f["gpus_off"] == gpus).all()
    tok = sum(n * per_setting[s]["tokens_per_s_per_gpu"] * 3600e-9 * dt for s, n in counts.items())
    mw = sum(n * per_setting[s]["site_kw_per_gpu"] * 1e-3 for s, n in counts.items())
    mean_w = {s: r["tokens_per_s_per_gpu"] * 3600 / r["mtok_per_mwh"] for s, r in per_setting.items()}
    mean_mw = sum(n * mean_w[s] * 1e-6 for s, n in counts.items())
    assert f["tokens_gtok"].to_numpy() == pytest.approx(tok.to_numpy(), rel=1e-5)
    assert f["gpu_mw"].to_numpy() == pytest.approx(mw.to_numpy(), rel=1e-5)
    assert f["gpu_mean_mw"].to_numpy() == pytest.approx(mean_mw.to_numpy(), rel=1e-5)
    # power balance in every interval
    supply = f["grid_import_mw"] + f["generation_mw"] + f["battery_dispatch_mw"]
    demand = f["gpu_mw"] + f["battery_store_mw"] + f["export_mw"] + f["unused_mw"]
    assert supply.to_numpy() == pytest.approx(demand.to_numpy(), abs=1e-6)
    assert f["unused_mw"].max() < 2e-3  # at most a fraction of one GPU's site power
    net = f["grid_import_mw"] - f["export_mw"]
    cost = float((net * f["price_per_mwh"]).sum() * dt)  # solar costs nothing and emits nothing
    carbon = float((net * f["carbon_kg_per_mwh"]).sum() * dt)
    capex = site["capex"]["per_gpu"] / (site["capex"]["amortisation_years"] * 8760) * gpus * len(f) * dt
    t, lp = float(f["tokens_gtok"].sum()), float(f["lp_tokens_gtok"].sum())
    return {
        "tokens_gtok": t,
        "lp_tokens_gtok": lp,
        "relaxation_gap": 1 - t / lp,
        "gpu_energy_mwh": f["gpu_mw"].sum() * dt,
        "gpu_energy_mean_mwh": f["gpu_mean_mw"].sum() * dt,
        "grid_import_mwh": f["grid_import_mw"].sum() * dt,
        "export_mwh": f["export_mw"].sum() * dt,
        "generation_mwh": f["generation_mw"].sum() * dt,
        "energy_cost_usd": cost,
        "carbon_kg": carbon,
        "usd_per_mtok": cost / (t * 1e3),
        "usd_per_mtok_with_capex": (cost + capex) / (t * 1e3),
        "g_co2_per_mtok": carbon / t,
    }


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    out, start = [], None
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


@pytest.mark.parametrize("args", [[], ["--objective", "cost", "--token-target", "97600"]])
def test_every_schedule_figure_in_the_summary_follows_from_the_csvs(tmp_path, args):
    res = CliRunner().invoke(app, ["plan", str(SITE), "--out", str(tmp_path), "--no-plots", *args])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "summary.json").read_text())
    site = tomllib.loads(SITE.read_text())
    dt, gpus = s["step_h"], s["fleet"]["gpus"]
    per_setting = {r["setting"]: r for r in s["steady"] if not any(t.startswith("tpot") for t in r["tags"])}
    frames = {k: pd.read_csv(tmp_path / ("schedule.csv" if k == "plan" else f"schedule-{k}.csv"),
                             index_col="timestamp", parse_dates=True) for k in s["totals"]}  # fmt: skip
    assert set(frames) == {"plan", "max_p", "max_q", "default", "no_surplus"}
    for k, f in frames.items():
        derived = _totals(f, per_setting, site, gpus, dt)
        for name, value in derived.items():
            assert s["totals"][k][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (k, name)
    f = frames["plan"]
    assert s["intervals"] == len(f)
    # the solver's objective: tokens (less a tie-break of money), or money (less a hair of tokens)
    lp_tok = s["totals"]["plan"]["lp_tokens_gtok"]
    if s["objective"] == "tokens":
        assert s["objective_value"] == pytest.approx(-lp_tok, rel=1e-6)
    else:
        assert lp_tok == pytest.approx(s["token_target_gtok"], rel=1e-9)
        assert s["objective_value"] == pytest.approx(s["totals"]["plan"]["energy_cost_usd"], rel=1e-3)

    # curtailments: runs of intervals offering less than the reference draw
    ref = s["fleet"]["reference_draw_mw"]
    w = s["fleet"]["workloads"][0]
    d = per_setting[w["default_setting"]]
    rate = gpus * d["tokens_per_s_per_gpu"] * 3600e-9 * dt * ref / (gpus * d["site_kw_per_gpu"] * 1e-3)
    short = np.clip(ref - (f["import_available_mw"] + f["generation_available_mw"]).to_numpy(), 0, None)
    events = _runs(short > 1e-6 * ref)
    assert len(events) == len(s["curtailments"])
    batt = np.clip((f["battery_dispatch_mw"] - f["battery_store_mw"]).to_numpy(), 0, None)
    settings = np.clip(ref - f["gpu_mw"].to_numpy(), 0, None)
    tokens, base = f["tokens_gtok"].to_numpy(), frames["default"]["tokens_gtok"].to_numpy()
    for (a, b), e in zip(events, s["curtailments"], strict=True):
        assert pd.Timestamp(e["start"]) == f.index[a] and e["hours"] == pytest.approx((b - a) * dt)
        assert e["shortfall_mwh"] == pytest.approx(short[a:b].sum() * dt, rel=1e-5)
        assert e["battery_mwh"] == pytest.approx(batt[a:b].sum() * dt, rel=1e-5, abs=1e-6)
        assert e["settings_mwh"] == pytest.approx(settings[a:b].sum() * dt, rel=1e-5, abs=1e-6)
        assert e["tokens_lost_gtok"] == pytest.approx(rate * (b - a) - tokens[a:b].sum(), rel=1e-5, abs=1e-3)
        assert e["tokens_lost_default_gtok"] == pytest.approx(rate * (b - a) - base[a:b].sum(), rel=1e-5, abs=1e-3)

    # surplus: offered beyond the reference draw; the GPUs' extra draw and the charging it paid for
    x = s["surplus"]
    surplus = np.clip((f["import_available_mw"] + f["generation_available_mw"]).to_numpy() - ref, 0, None)
    extra = np.minimum(np.clip(f["gpu_mw"].to_numpy() - ref, 0, None), surplus)
    stored = np.minimum(f["battery_store_mw"].to_numpy(), surplus - extra)
    assert x["intervals"] == int((surplus > 1e-6 * ref).sum())
    assert x["surplus_mwh"] == pytest.approx(surplus.sum() * dt, rel=1e-5)
    assert x["extra_gpu_mwh"] == pytest.approx(extra.sum() * dt, rel=1e-5, abs=1e-6)
    assert x["stored_mwh"] == pytest.approx(stored.sum() * dt, rel=1e-5)
    assert x["stored_mwh"] + x["extra_gpu_mwh"] <= x["surplus_mwh"]
    without = s["totals"]["no_surplus"]
    if x["worth"] is not None:  # tokens: what the plan makes beyond the plan without the surplus
        assert x["worth"] == pytest.approx(s["totals"]["plan"]["tokens_gtok"] - without["tokens_gtok"], rel=1e-6)
    else:  # the target needs the surplus: the what-if falls short by what it lacks
        assert x["shortfall_without_gtok"] == pytest.approx(
            s["token_target_gtok"] - without["lp_tokens_gtok"], rel=1e-6
        )
