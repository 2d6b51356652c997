"""The curve file: validates, round-trips with identical numbers, refuses damaged or foreign files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import CurveFileError
from harness.readers.analysis import analyse
from harness.readers.export import build_curve, export_run
from harness.records.curves import CURVE_SCHEMA_VERSION, CurveFile, load_curve
from harness.testing.synthetic import DECODE, PREFILL, SynthRun, fabricate_run

TRAIN_RUN = SynthRun(settings=tuple(np.arange(200.0, 701.0, 50.0)), repeats=3, samples_per_point=0, seed=31,
                     flagged={4: "temp_drift"})
INF_RUN = SynthRun(phases=(PREFILL, DECODE), batches=(1, 16), kind="inference", settings=(300.0, 500.0, 700.0),
                   repeats=2, samples_per_point=0, seed=32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    return fabricate_run(root, TRAIN_RUN, "train"), fabricate_run(root, INF_RUN, "inf")


def test_json_round_trip_gives_the_same_numbers(runs, tmp_path):
    a = analyse(runs[0])
    curve, path = export_run(a, "json", tmp_path / "c.json")
    back = load_curve(path)
    assert back == curve  # every field, every float, bit for bit
    c = a.curve("train")
    fit = back.fit_for("train")
    assert fit.method == "isotonic+pchip" and fit.settings[0] == 200.0 and fit.settings[-1] == 700.0
    assert np.all(np.diff(fit.tokens_per_s) >= 0) and np.all(np.diff(fit.power_mean_w) >= 0)
    assert fit.residual_settings == list(c.settings)
    assert np.allclose(fit.residuals_tokens_per_s, c.fit_tokens_per_s.residuals)
    assert back.max_q[0].lo == c.max_q.lo and back.max_q[0].hi == c.max_q.hi and back.max_q[0].best == c.max_q.best
    assert back.max_p[0].best == c.max_p.best
    assert back.part.power_limit_max_w == 700.0 and back.idle_power_w == 72.5
    assert back.workload.kind == "training" and back.provenance.run_ids == ["train"]
    pts = {p.setting: p for p in back.points if p.valid}
    for s in c.stats:
        p = pts[s.setting]
        assert p.tokens_per_s == s.tokens_per_s.mean and p.tokens_per_j == s.tokens_per_j.mean
        assert p.power_p99_w == s.power_p99_w and p.power_max_1s_w == s.power_max_1s_w
        assert p.repeats == s.n
    # the flagged row's setting still has two clean repeats: a valid point with n=2
    assert pts[400.0].repeats == 2


def test_latency_points_exported_for_inference(runs, tmp_path):
    a = analyse(runs[1], tpot_ms=8.0)
    curve, path = export_run(a, "json", tmp_path / "i.json", tpot_ms=8.0)
    back = load_curve(path)
    assert len(back.latency_points) == 1
    lp = back.latency_points[0]
    q = a.tokenomics.latency.max_q
    assert (lp.setting, lp.batch_size, lp.tokens_per_j) == (q.setting, q.batch_size, q.tokens_per_j)
    assert lp.tpot_ms <= 8.0
    default_targets = build_curve(analyse(runs[1])).latency_points
    assert [p.tpot_ms_target for p in default_targets] == sorted(p.tpot_ms_target for p in default_targets)
    assert all(p.tpot_ms <= p.tpot_ms_target for p in default_targets)
    assert {f.phase for f in back.fits} == {"prefill", "decode"} and len(back.fits) == 4


def test_csv_export_reads_back(runs, tmp_path):
    a = analyse(runs[0])
    curve, path = export_run(a, "csv", tmp_path / "c.csv")
    df = pd.read_csv(path)
    valid = [p for p in curve.points if p.valid]
    assert len(df) == len(curve.points)
    assert np.array_equal(df["tokens_per_j"].to_numpy()[: len(valid)], [p.tokens_per_j for p in valid])
    assert df.loc[df.setting == a.curve("train").max_q.best, "in_max_q"].item()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda t: t[: len(t) // 2], "not a readable JSON curve file"),
    (lambda t: json.dumps({"schema": "someone.else", "schema_version": 1}), "not a tokbench curve file"),
    (lambda t: t.replace(f'"schema_version": {CURVE_SCHEMA_VERSION}', '"schema_version": 99'),
     "curve schema version 99 is not supported"),
    (lambda t: t.replace('"knob": "power_limit_w"', '"knob": "fan_speed"'), "invalid curve file at 'knob'"),
    (lambda t: t.replace('"power_limit_max_w": 700.0', '"power_limit_max_w": "lots"'),
     "invalid curve file at 'part.power_limit_max_w'"),
])
def test_damaged_or_foreign_files_are_refused_with_one_line(runs, tmp_path, mutate, message):
    _, path = export_run(analyse(runs[0]), "json", tmp_path / "c.json")
    path.write_text(mutate(path.read_text()))
    with pytest.raises(CurveFileError, match=message) as e:
        load_curve(path)
    assert "\n" not in str(e.value)


def test_fit_arrays_of_unequal_length_are_refused(runs):
    raw = build_curve(analyse(runs[0])).model_dump(mode="json", by_alias=True)
    raw["fits"][0]["residuals_tokens_per_s"] = raw["fits"][0]["residuals_tokens_per_s"][:-1]
    with pytest.raises(ValueError, match="one value per residual setting"):
        CurveFile.model_validate(raw)


def test_cli_export_and_errors(runs, tmp_path):
    r = CliRunner().invoke(app, ["export", str(runs[0]), "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 0, r.output
    assert load_curve(tmp_path / "x.json").workload.model == "llama-1b"
    r = CliRunner().invoke(app, ["export", str(runs[0]), "--format", "csv", "--out", "-"])
    assert r.exit_code == 0 and r.output.startswith("setting,")
    r = CliRunner().invoke(app, ["export", str(runs[0]), "--format", "xml"])
    assert r.exit_code != 0 and "unknown export format 'xml'" in str(r.exception)
