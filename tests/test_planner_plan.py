"""`tokbench plan` end to end on the shipped example site, grid and reference curve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import ProfileError, UsageError
from harness.planner import plan
from harness.planner.network import PYPSA_OPTIONS

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "profiles/sites/example-site.toml"


def _invoke(args: list[str]):
    # with `plan` as the app's only command Typer makes it the root; with more it is a subcommand
    prefix = ["plan"] if len(app.registered_commands) > 1 else []
    return CliRunner().invoke(app, prefix + args, env={"COLUMNS": "160"})


@pytest.mark.slow  # ~6 s: one solve of five policies, a plot and a NetCDF export
def test_plan_command_runs_out_of_the_box_and_writes_its_outputs(tmp_path):
    out = tmp_path / "out"
    nc = tmp_path / "site.nc"
    res = _invoke([str(SITE), "--out", str(out), "--export-network", str(nc)])
    assert res.exit_code == 0, res.output
    assert "max-q" in res.output and "curtailments" in res.output and "surplus" in res.output
    summary = json.loads((out / "summary.json").read_text())
    sched = pd.read_csv(out / "schedule.csv", index_col="timestamp", parse_dates=True)
    assert (out / "plan.png").stat().st_size > 10_000
    assert len(sched) == 48 and summary["fleet"]["gpus"] == 8800
    totals = summary["totals"]
    assert totals["plan"]["tokens_gtok"] == pytest.approx(sched["tokens_gtok"].sum(), rel=1e-5)
    # the optimised schedule makes at least what every fixed policy makes on the same battery
    for k in ("max_p", "max_q", "default"):
        assert totals["plan"]["tokens_gtok"] >= totals[k]["tokens_gtok"] * (1 - 1e-9)
    assert totals["plan"]["tokens_gtok"] > totals["default"]["tokens_gtok"] * 1.01
    # never above what the grid and the panels offer, nor the facility budget
    offered = sched["import_available_mw"] + sched["generation_mw"] + sched["battery_dispatch_mw"]
    assert (sched["gpu_mw"] <= offered + 1e-6).all() and (sched["gpu_mw"] <= 12.0 + 1e-6).all()
    # the evening peak and the stress event are curtailments; the battery carries part of each
    events = summary["curtailments"]
    assert [e["start"][:13] for e in events] == ["2026-01-14T17", "2026-01-15T17"]
    for e in events:
        assert e["battery_mwh"] > 0 and e["battery_mwh"] + e["settings_mwh"] >= e["shortfall_mwh"] - 1e-6
        assert e["tokens_lost_gtok"] < e["tokens_lost_default_gtok"]
    assert summary["surplus"]["worth"] > 0 and summary["surplus"]["stored_mwh"] > 0
    # the exported network is the plan's alone and loads back into PyPSA
    import warnings

    import pypsa

    with pypsa.option_context(*PYPSA_OPTIONS), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pandas notices inside PyPSA's reader
        warnings.simplefilter("ignore", DeprecationWarning)
        n = pypsa.Network(str(nc))
    assert len(n.snapshots) == 48 and all(x.startswith("plan|") for x in n.links.index)
    assert "plan|battery" in n.storage_units.index
    # ... and carries the plan's objective (the PyPSA model solved alone), not all policies' together
    assert n.objective == pytest.approx(summary["objective_value"], rel=1e-6)
    assert n.objective == pytest.approx(-totals["plan"]["lp_tokens_gtok"], rel=1e-5)


def test_least_cost_for_a_target_the_surplus_what_if_cannot_reach_still_plans():
    # without the windy night's surplus 97,600 Gtok is out of reach: the what-if says so, the plan stands
    r = plan(SITE, objective="cost", token_target_gtok=97_600)
    assert r.schedule.totals["lp_tokens_gtok"] == pytest.approx(97_600, rel=1e-9)
    assert r.schedule.totals["energy_cost_usd"] == pytest.approx(27_606, abs=1.0)
    x = r.surplus
    assert x["worth"] is None and x["shortfall_without_gtok"] > 0
    # stored counts only charging from the surplus, beside what the GPUs drew above the reference
    assert x["stored_mwh"] > 0 and x["stored_mwh"] + x["extra_gpu_mwh"] <= x["surplus_mwh"] + 1e-9
    assert set(r.baselines) == {"max_p", "max_q", "default"}


@pytest.mark.slow  # ~5 s: two solves (the default policy sets the target)
def test_least_cost_plan_makes_the_default_tokens_for_less_and_exports_only_in_stress():
    r = plan(SITE, objective="cost")
    default = r.baselines["default"].totals
    f = r.schedule.frame
    assert r.target_gtok == pytest.approx(default["tokens_gtok"], rel=1e-6)
    # the LP meets the target; whole GPUs (a fraction of one rounded down per interval) within its gap
    assert r.schedule.totals["lp_tokens_gtok"] >= r.target_gtok * (1 - 1e-9)
    assert f["tokens_gtok"].sum() >= r.target_gtok * (1 - r.schedule.totals["relaxation_gap"] - 1e-12)
    assert r.schedule.totals["relaxation_gap"] < 1e-5
    assert r.schedule.totals["energy_cost_usd"] < 0.8 * default["energy_cost_usd"]
    assert f["export_mw"].sum() > 0 and (f["export_mw"][f["stress"] == 0] < 1e-9).all()
    # at 950 $/MWh the stress hours run little and sell stored energy back
    stress = f[f["stress"] == 1]
    assert (stress["grid_import_mw"] < 1e-6).all() and np.isclose(stress["export_mw"].max(), 4.0, atol=0.6)


def test_without_a_grid_signal_only_the_steady_questions_are_answered(tmp_path):
    p = tmp_path / "site.toml"
    p.write_text(
        f'name = "steady"\npower_budget_mw = 12.0\npue = 1.2\nprice_per_mwh = 60.0\n'
        f'[[units]]\nname = "node"\ncount = 1100\ngpus_per_unit = 8\noverhead_w_per_unit = 2400.0\n'
        f'[[workloads]]\ncurve = "{ROOT}/profiles/curves/h100-train-llama-1b.json"\n'
    )
    r = plan(p)
    assert r.schedule is None and r.model is None
    best = r.best["train-llama-1b train b8"]
    assert best["installed_setting"] == 700  # 8,800 GPUs fit the 12 MW budget at Max-P
    # GPUs may be added under the same power: 15,140 at 350 W make 35% more than 9,794 at 700 W
    assert (best["sized_setting"], best["sized_gpus"]) == (350.0, 15_140)
    assert best["sized_tokens_per_s"] / (9_794 * 66_000) == pytest.approx(1.213, abs=1e-3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--objective", "speed"], "unknown objective 'speed'"),
        (["--export-network", "site.csv"], "name the file \\*.nc"),
        (["--grid", "/nonexistent/grid.csv"], "no such grid file"),
    ],
)
def test_plan_command_errors_are_one_line(args, message):
    res = _invoke([str(SITE), "--no-plots", *args])
    assert isinstance(res.exception, UsageError | ProfileError)
    assert re.search(message, str(res.exception)) and "\n" not in str(res.exception)


def test_the_default_output_folder_is_a_safe_name():
    from harness.planner.outputs import default_out_dir

    assert default_out_dir("example-site") == Path("results/plan-example-site")
    assert default_out_dir("My Site / A") == Path("results/plan-My-Site-A")
    assert default_out_dir("../..") == Path("results/plan-site")


def _small_site(folder: Path) -> Path:
    """A toy site whose three fixed policies differ (default between Max-Q and Max-P), with a battery,
    solar and export in stress, on a day of hourly prices with a surplus night and a stress hour."""
    from planner_fixtures import make_curve, make_grid

    from harness.records.curves import save_curve

    save_curve(make_curve([100, 200, 300], [60, 100, 120], [100, 200, 300], default=200), folder / "toy.json")
    rng = np.random.default_rng(7)
    hours = np.arange(24)
    grid = make_grid(
        np.where(hours < 6, 40.0, 22.0) + rng.uniform(-6, 6, 24),
        price_per_mwh=np.where(hours < 6, -10.0, 50.0) + rng.uniform(0, 40, 24),
        event=(hours == 19).astype(float),
        solar_mw=np.clip(8 * np.sin(np.pi * (hours - 6) / 12), 0, None),
    )
    grid.frame.to_csv(folder / "grid.csv", date_format="%Y-%m-%dT%H:%M:%S")
    (folder / "site.toml").write_text(
        'name = "toy"\ngpus = 100000\npue = 1.0\nprovision = "mean"\ntoken_value_per_mtok = 0.01\n'
        '[[workloads]]\ncurve = "toy.json"\n[grid]\nfile = "grid.csv"\nexport_mw = 5.0\n'
        "[battery]\nenergy_mwh = 40.0\ncharge_mw = 10.0\ndischarge_mw = 10.0\nround_trip_efficiency = 0.9\n"
        '[[generation]]\nname = "solar"\ncolumn = "solar_mw"\n'
    )
    return folder / "site.toml"


@pytest.mark.parametrize(
    "case, objective, target",
    [
        ("example", "tokens", None), ("example", "cost", 97_600.0), ("example", "carbon", None),
        ("small", "tokens", None), ("small", "cost", None), ("small", "carbon", None),
    ],  # fmt: skip
)
def test_fixed_policies_solved_from_the_plans_basis_equal_each_policy_solved_alone(tmp_path, case, objective, target):
    # plan() re-solves Max-P from the plan's basis and the rest in a model without the hull's columns;
    # each must be what a fresh model of the whole problem, solved for that policy alone, gives
    from harness.planner.horizon import Scenario
    from harness.planner.lp import ScheduleModel
    from harness.planner.schedule import scenario_result

    r = plan(SITE if case == "example" else _small_site(tmp_path), objective=objective, token_target_gtok=target)
    wf = r.fleet.workloads[0]
    assert len({wf.index(k) for k in ("max_p", "max_q", "default")}) == (2 if case == "example" else 3)
    for k in ("max_p", "max_q", "default"):
        m = ScheduleModel(r.site, r.fleet, r.horizon)
        sc = Scenario(k, "tokens", only=k)
        alone = scenario_result(m, sc, m.solve(sc))
        got = r.baselines[k]
        assert got.objective_value == pytest.approx(alone.objective_value, rel=1e-9, abs=1e-9)
        a, g = alone.totals, got.totals
        assert g["lp_tokens_gtok"] == pytest.approx(a["lp_tokens_gtok"], rel=1e-9)
        assert g["export_mwh"] == pytest.approx(a["export_mwh"], rel=1e-9, abs=1e-9)
        # whole GPUs: each LP's fraction of a GPU per interval is rounded down, within its relaxation gap
        gap = g["relaxation_gap"] + a["relaxation_gap"] + 1e-9
        assert g["tokens_gtok"] == pytest.approx(a["tokens_gtok"], rel=gap), k
        assert g["gpu_energy_mwh"] == pytest.approx(a["gpu_energy_mwh"], rel=gap), k
        assert g["grid_import_mwh"] == pytest.approx(a["grid_import_mwh"], abs=gap * a["gpu_energy_mwh"]), k
        # money is a tie-break under the tokens objective, negative prices clipped: where several
        # schedules make the same tokens the cost may differ, never by more than the tie-break allows
        assert g["energy_cost_usd"] == pytest.approx(a["energy_cost_usd"], rel=1e-3, abs=1.0)


def test_max_p_starts_from_the_plans_basis_and_a_policy_at_the_same_settings_is_solved_once():
    import sys

    from harness.planner.capacity import build_fleet
    from harness.planner.site import load_site

    split = sys.modules["harness.planner.plan"]._split_policies
    fleet = build_fleet(load_site(SITE))  # its default setting is Max-P
    assert split(fleet, {}, False) == (["max_p"], ["max_q"], {"default": "max_p"})
    assert split(fleet, {}, True) == ([], ["max_p", "max_q"], {"default": "max_p"})  # a MIP: no basis
    # the default solved first (it sets a cost or carbon target): Max-P is that solve
    assert split(fleet, {"default": None}, False) == ([], ["max_q"], {"max_p": "default"})
