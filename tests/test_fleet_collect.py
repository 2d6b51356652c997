"""Collecting a campaign from run directories written here (no Slurm, no sweep): the per-GPU
table, the spread, the robust outliers, the fleet curve, and the incomplete tasks."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.fleet import campaign as fleet
from harness.fleet import collect as fleet_collect
from harness.records.curves import load_curve
from harness.records.rundir import POINT_COLUMNS, SCHEMA_VERSION, Point

LIMITS_W = [200.0, 300.0, 400.0, 500.0, 600.0, 700.0]


def _points(gpu: int, uuid: str, eff: float, speed: float, repeats: int = 2) -> list[dict]:
    """A compute-bound shape: throughput saturates with the limit, tokens/J peaks mid-range."""
    rows = []
    for i, lim in enumerate(LIMITS_W):
        for r in range(repeats):
            tps = speed * 10000.0 * (1 - np.exp(-lim / 250.0)) * (1 + 0.001 * r)
            power = lim * 0.97 / eff
            p = Point(
                point_index=len(rows),
                gpu_index=gpu,
                gpu_uuid=uuid,
                knob="power_limit_w",
                setting=lim,
                enforced=lim,
                batch_size=8,
                phase="train",
                repeat=r,
                window_start_s=0.0,
                window_end_s=10.0,
                seconds=10.0,
                steps=10,
                input_tokens=0,
                output_tokens=0,
                tokens=int(tps * 10),
                joules=power * 10,
                joules_integrated=None,
                true_joules=None,
                energy_source="counter",
                power_mean_w=power,
                power_p99_w=power * 1.1,
                power_max_1s_w=None,
                sm_clock_mean_mhz=None,
                mem_clock_mean_mhz=None,
                temp_start_c=None,
                temp_end_c=None,
                warmup_s=1.0,
                tokens_per_s=tps,
                tokens_per_j=tps / power,
                j_per_token=power / tps,
                flags="temp_drift" if (i == 0 and r == 1) else "",
            )
            rows.append({k: v for k, v in asdict(p).items() if k in POINT_COLUMNS})
    return rows


def _campaign(tmp_path: Path, boards: dict[tuple[int, int], tuple[float, float]], unfinished: dict[int, str]):
    tasks = sorted({t for t, _ in boards} | set(unfinished))
    c = fleet.new_campaign(
        fleet.FleetRequest(profile="smoke", nodes=len(tasks), gpus_per_node=2, sim_gpu="h100-sxm"),
        launcher=["tokbench"],
    )
    cdir = tmp_path / c.id
    cdir.mkdir()
    fleet.save_campaign(c, cdir)
    workload = {
        "name": "training",
        "kind": "training",
        "engine": "sim",
        "model": "llama-1b",
        "precision": "bf16",
        "batch_size": 8,
        "seq_len": 2048,
        "params": 1104218112,
        "extra": {"simulated": True},
    }
    for t in tasks:
        for g, (eff, speed) in [(g, e) for (tt, g), e in boards.items() if tt == t] or [(0, (1.0, 1.0))]:
            out = cdir / f"node{t}" / f"task-{t}" / f"gpu-{g}"  # one run per GPU, as fleet tasks write them
            out.mkdir(parents=True)
            rows = _points(g, f"GPU-{t}-{g}", eff, speed)
            pd.DataFrame(rows, columns=list(POINT_COLUMNS)).to_csv(out / "points.csv", index=False)
            device = {
                "uuid": f"GPU-{t}-{g}",
                "name": "H100 SXM",
                "architecture": "hopper",
                "power_limits": {"min_w": 200.0, "max_w": 700.0, "default_w": 700.0},
            }
            manifest = {
                "tool": "tokbench",
                "schema_version": SCHEMA_VERSION,
                "status": unfinished.get(t, "complete"),
                "devices": [device],
                "workload": workload,
            }
            (out / "manifest.json").write_text(json.dumps(manifest))
    return c, cdir


def test_robust_z_threshold_and_floor() -> None:
    z = fleet_collect.robust_z(pd.Series([1.00, 1.01, 0.99, 1.005, 0.90]))
    assert abs(z.iloc[4]) > fleet_collect.Z_THRESHOLD
    assert (z.iloc[:4].abs() < fleet_collect.Z_THRESHOLD).all()
    # identical boards: the MAD floor keeps a 1% difference from being called an outlier
    z = fleet_collect.robust_z(pd.Series([1.0, 1.0, 1.0, 1.01]))
    assert abs(z.iloc[3]) == pytest.approx(0.6745 * 0.01 / 0.005)
    assert abs(z.iloc[3]) < fleet_collect.Z_THRESHOLD


def test_collect_flags_the_planted_board_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    boards = {(t, g): (1.0 + rng.normal(0, 0.01), 1.0 + rng.normal(0, 0.005)) for t in range(3) for g in range(2)}
    boards[(1, 0)] = (0.88, boards[(1, 0)][1])  # 12% less efficient: the planted outlier
    c, cdir = _campaign(tmp_path, boards, unfinished={3: "interrupted"})
    r = fleet_collect.collect(cdir)

    assert len(r.gpus) == 6 and set(r.gpus["part"]) == {"H100 SXM"}
    assert list(r.gpus["host"]) == ["node0", "node0", "node1", "node1", "node2", "node2"]
    row = r.gpus[(r.gpus.task == 2) & (r.gpus.gpu_index == 1)].iloc[0]
    eff, speed = boards[(2, 1)]
    # 200 W's repeat 1 is flagged, so its mean is repeat 0 alone; elsewhere the mean of both repeats
    means = {lim: speed * 10000 * (1 - np.exp(-lim / 250)) * (1.0 if lim == 200 else 1.0005) for lim in LIMITS_W}
    best_tpj = max(tps / (lim * 0.97 / eff) for lim, tps in means.items())
    assert row.max_q_tokens_per_j == pytest.approx(best_tpj, rel=1e-9)
    assert row.max_p_setting == 700.0

    out = r.outliers
    assert list(zip(out.task, out.gpu_index, out.metric, out.direction, strict=True)) == [
        (1, 0, "max_q_tokens_per_j", "low")
    ]
    assert out.iloc[0].deviation_pct == pytest.approx(-12.0, abs=2.0)

    sp = r.spread.set_index("metric")
    assert sp.loc["max_q_tokens_per_j", "n"] == 6 and sp.loc["max_q_tokens_per_j", "spread_pct"] > 10
    assert sp.loc["max_p_tokens_per_s", "spread_pct"] < 3

    assert [(s.task, s.run_status) for s in r.incomplete] == [(3, "interrupted")]

    curve = load_curve(r.out_dir / "fleet-curve.json")
    assert curve.part.backend == "fleet" and curve.part.power_limit_max_w == 700.0
    assert (curve.workload.model, curve.workload.params, curve.workload.batch_size) == ("llama-1b", 1104218112, 8)
    assert "GPU-1-0" not in curve.part.uuids and len(curve.part.uuids) == 5  # outlier left out of the curve
    assert [p.setting for p in curve.points] == LIMITS_W
    healthy = r.gpus[~((r.gpus.task == 1) & (r.gpus.gpu_index == 0))]
    med = np.median([b for k, b in boards.items() if k != (1, 0)], axis=0)
    p700 = curve.points[-1]
    assert p700.tokens_per_s == pytest.approx(med[1] * 10000 * (1 - np.exp(-700 / 250)) * 1.0005, rel=1e-9)
    assert p700.tokens_per_j_ci > 0
    healthy_p99 = [lim * 0.97 / b[0] * 1.1 for k, b in boards.items() if k != (1, 0) for lim in [700.0]]
    assert p700.power_p99_w == pytest.approx(np.median(healthy_p99), rel=1e-9)
    assert curve.fit_for("train", 8).power_p99_w[-1] == pytest.approx(p700.power_p99_w)
    assert curve.fit_for("train", 8).power_max_1s_w is None  # the runs have no 1 s maxima
    assert curve.max_q[0].value == pytest.approx(max(p.tokens_per_j for p in curve.points))
    assert curve.max_q[0].lo <= curve.max_q[0].best <= curve.max_q[0].hi
    assert len(healthy) == 5
    report = (r.out_dir / "report.md").read_text()
    assert "task 3" in report and "interrupted" in report and "| 1 |" in report
    for name in ("gpus.csv", "spread.csv", "outliers.csv"):
        assert (r.out_dir / name).is_file()


def test_healthy_fleet_has_no_outlier(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    boards = {(t, g): (1.0 + rng.normal(0, 0.01), 1.0 + rng.normal(0, 0.005)) for t in range(4) for g in range(2)}
    _, cdir = _campaign(tmp_path, boards, unfinished={})
    r = fleet_collect.collect(cdir)
    assert r.outliers.empty and r.incomplete == []


def test_too_few_siblings_are_not_judged(tmp_path: Path) -> None:
    _, cdir = _campaign(tmp_path, {(0, 0): (1.0, 1.0), (0, 1): (0.5, 1.0)}, unfinished={})
    r = fleet_collect.collect(cdir)
    assert r.outliers.empty and r.gpus["max_q_tokens_per_j_z"].isna().all()


def test_nothing_finished_is_an_error(tmp_path: Path) -> None:
    _, cdir = _campaign(tmp_path, {(0, 0): (1.0, 1.0)}, unfinished={0: "running"})
    with pytest.raises(fleet_collect.FleetCollectError, match="no finished run"):
        fleet_collect.collect(cdir)
