"""The readers on real simulated sweeps: Max-Q against the simulator's noise-free truth, and the
flat decode curve with the setting above which the cap does not bind."""

from __future__ import annotations

import re

import pytest

from harness.devices.catalog import GPU_PROFILE_DIR
from harness.readers.analysis import analyse
from harness.readers.export import export_run
from harness.sweep.run import SweepOptions, run_sweep

FAST = dict(window_s=4.0, warmup_min_s=2.0, warmup_max_s=60.0, backend="sim")  # a cap change settles in <60 s


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    text = (GPU_PROFILE_DIR / "h100-sxm.toml").read_text()
    text = re.sub(r"(?m)^step_jitter_sigma = .*$", "step_jitter_sigma = 0.0", text, count=1)
    quiet = root / "h100-quiet.toml"
    quiet.write_text(text.replace('id = "h100-sxm"', 'id = "h100-quiet"'))
    mp = pytest.MonkeyPatch()
    mp.setenv("TOKBENCH_SIM_STATE_DIR", str(root / "sim-state"))
    try:
        return {
            "truth": run_sweep(SweepOptions(profile="train-llama-1b", step=50, repeats=1, out=str(root), run_id="truth",
                                            sim_gpu=str(quiet), **FAST)).run_dir.path,
            "noisy": run_sweep(SweepOptions(profile="train-llama-1b", step=50, repeats=3, out=str(root), run_id="noisy",
                                            sim_seed=7, **FAST)).run_dir.path,
            "decode": run_sweep(SweepOptions(profile="decode-llama-1b", values=(200, 300, 400, 550, 700),
                                             batch_sizes=(1,), repeats=2, out=str(root), run_id="decode",
                                             **FAST)).run_dir.path,
        }
    finally:
        mp.undo()


def test_max_q_of_a_noisy_sweep_against_the_noise_free_truth(sweeps, tmp_path):
    truth = {s.setting: s.tokens_per_j.mean for s in analyse(sweeps["truth"]).curve("train").stats}
    best_true = max(truth, key=truth.get)
    c = analyse(sweeps["noisy"]).curve("train")
    assert truth[c.max_q.best] >= 0.99 * truth[best_true]
    assert c.max_q.lo <= best_true <= c.max_q.hi
    assert c.max_q.hi < 700.0 and c.max_p.best >= 650.0
    assert c.flat.binds and not c.flat.single
    # what a planner gets back is what the analysis said
    curve, path = export_run(analyse(sweeps["noisy"]), "json", tmp_path / "c.json")
    assert curve.max_q[0].best == c.max_q.best and curve.part.name.startswith("NVIDIA H100")


def test_flat_decode_on_a_simulated_sweep(sweeps):
    c = analyse(sweeps["decode"]).curve("decode", 1)
    draw = c.at(700.0).power_mean_w
    assert draw < 300.0
    assert c.flat.flat and not c.flat.binds
    assert c.flat.above == 300.0  # the first setting above the decode's own draw
    assert f"the cap does not bind above 300 W: the work draws about {c.flat.draw_w:.0f} W" in c.flat.sentence
    assert c.max_p.best <= 300.0  # no throughput is bought above the draw
