"""End to end on the simulated H100: sweeps give the curve shapes CALIBRATION.md describes."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from harness.devices.catalog import GPU_PROFILE_DIR
from harness.sweep.run import SweepOptions, run_sweep

FAST = dict(repeats=1, window_s=4.0, warmup_min_s=2.0, warmup_max_s=20.0, backend="sim")


def _node_means(result) -> pd.DataFrame:
    df = pd.DataFrame([p.__dict__ for p in result.points])
    return df.groupby(["setting", "phase", "batch_size"]).agg(
        tps=("tokens_per_s", "mean"), tokens=("tokens", "sum"), joules=("joules", "sum"),
        true_joules=("true_joules", "sum"), power=("power_mean_w", "mean"), clock=("sm_clock_mean_mhz", "mean"),
    ).assign(tpj=lambda d: d.tokens / d.joules, true_tpj=lambda d: d.tokens / d.true_joules).reset_index()


@pytest.fixture
def quiet_h100(tmp_path) -> str:
    """The H100 part without step jitter: the simulator's noise-free truth."""
    text = (GPU_PROFILE_DIR / "h100-sxm.toml").read_text()
    text = re.sub(r"(?m)^step_jitter_sigma = [0-9.eE+-]+$", "step_jitter_sigma = 0.0", text)
    text = text.replace('id = "h100-sxm"', 'id = "h100-quiet"')
    path = tmp_path / "h100-quiet.toml"
    path.write_text(text)
    return str(path)


def test_compute_bound_max_q_is_below_max_and_near_the_true_optimum(tmp_path, quiet_h100):
    truth = _node_means(run_sweep(SweepOptions(profile="train-llama-1b", step=25, out=str(tmp_path / "t"),
                                               sim_gpu=quiet_h100, **FAST)))
    true_best = truth.loc[truth.true_tpj.idxmax(), "setting"]
    noisy = run_sweep(SweepOptions(profile="train-llama-1b", step=50, out=str(tmp_path / "n"), repeats=2,
                                   **{k: v for k, v in FAST.items() if k != "repeats"}))
    assert noisy.status == "complete"
    df = _node_means(noisy)
    max_q = df.loc[df.tpj.idxmax(), "setting"]
    assert max_q < 700
    assert abs(max_q - true_best) <= 50  # within one step of the noise-free optimum
    top = df.loc[df.setting == 700, "tps"].item()
    kept_60 = df.loc[df.setting == 400, "tps"].item() / top  # 400 W is the grid point nearest 60% (420 W)
    assert 0.78 <= kept_60 <= 0.90
    assert df.loc[df.setting == 700, "clock"].item() == pytest.approx(1650, abs=150)


def test_decode_curve_is_flat_while_the_cap_is_above_its_draw(tmp_path):
    result = run_sweep(SweepOptions(profile="decode-llama-1b", values=(700, 500, 300, 200), out=str(tmp_path),
                                    batch_sizes=(1,), **FAST))
    df = _node_means(result)
    decode = df[df.phase == "decode"].set_index("setting")
    draw = decode.loc[700, "power"]
    assert draw < 350  # decode draws far below the 700 W cap
    above = decode[decode.index > draw + 30]
    assert (above.tps / decode.loc[700, "tps"]).between(0.98, 1.02).all()


def test_locking_the_sm_clock_lowers_decode_energy_per_token_for_little_speed(tmp_path):
    result = run_sweep(SweepOptions(profile="decode-llama-1b", knob="sm-clock", values=(1980, 1410),
                                    out=str(tmp_path), batch_sizes=(1,), **FAST))
    decode = _node_means(result).query("phase == 'decode'").set_index("setting")
    assert decode.loc[1410, "tpj"] > decode.loc[1980, "tpj"] * 1.05
    assert decode.loc[1410, "tps"] > decode.loc[1980, "tps"] * 0.85


def test_observe_changes_nothing_and_records_the_current_setting(tmp_path):
    result = run_sweep(SweepOptions(profile="train-llama-1b", observe=True, out=str(tmp_path), **FAST))
    assert {p.knob for p in result.points} == {"observe"}
    assert {p.setting for p in result.points} == {700.0}
    assert not (Path(str(tmp_path)).parent / "journal").exists()
