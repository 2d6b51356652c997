"""Simulated twins on the simulated H100: memory-bound decode, compute-bound training, the 1B
rows of docs/calibration.md at their exact shapes on a warm chip, exact token counts and
consistent latencies."""

from __future__ import annotations

import pytest

from harness.devices import open_devices
from harness.profiles import load_profile
from workloads import registry
from workloads.config import WorkloadConfig
from workloads.simulated import SimWorkload, measure_twin

DECODE = {"name": "inference", "model": "llama-1b", "phases": ["decode"], "input_len": 128, "output_len": 128}
TRAIN = {"name": "training", "model": "llama-1b", "batch_size": 8, "seq_len": 2048}


def _measure(limit_w=None, **workload):
    return measure_twin(WorkloadConfig(**workload), limit_w=limit_w, warm_s=3.0, window_s=6.0)


def test_decode_is_memory_bound():
    """Decode draws far below the cap; a cap above its draw does not slow it."""
    for engine in ("hf-static", "hf-generate"):
        full, draw = _measure(700, **DECODE, engine=engine, batch_size=64)
        assert draw < 0.65 * 700
        capped, _ = _measure(max(1.1 * draw, 200.0), **DECODE, engine=engine, batch_size=64)
        assert capped / full > 0.98, engine


def test_training_is_compute_bound():
    full, full_w = _measure(700, **TRAIN, compile=True)
    assert full_w > 650  # already on the cap at Max-P
    kept = {cap: _measure(cap, **TRAIN, compile=True)[0] / full for cap in (560, 400, 280)}
    assert 0.93 <= kept[560] <= 0.97  # docs/calibration.md: 80% cap keeps 93-97%
    assert 0.80 <= kept[400] <= 0.90  # ~60% cap keeps 80-90%
    assert 0.55 <= kept[280] <= 0.70  # 40% cap keeps 55-70%


# docs/calibration.md, H100 at 700 W: (workload, tokens/s, W)
ROWS = {
    "train eager": ({**TRAIN, "compile": False}, 56_900, 694),
    "train compile": ({**TRAIN, "compile": True}, 66_000, 688),
    "prefill 16x2048": ({"name": "inference", "model": "llama-1b", "phases": ["prefill"], "batch_size": 16,
                         "input_len": 2048, "output_len": 1}, 189_700, 697),
    "hf-generate bs1": ({**DECODE, "engine": "hf-generate", "batch_size": 1}, 61, 145),
    "hf-generate bs64": ({**DECODE, "engine": "hf-generate", "batch_size": 64}, 3_800, 174),
    "hf-static bs1": ({**DECODE, "engine": "hf-static", "batch_size": 1}, 297, 224),
    "hf-static bs64": ({**DECODE, "engine": "hf-static", "batch_size": 64}, 12_260, 415),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_twin_reproduces_the_h100_row_on_a_warm_chip(row):
    """Each row within 10% in tokens/s and watts, at its exact shape, after ~2 thermal time
    constants of warm-up (scripts/calibrate_twins.py fits after five)."""
    workload, tokens_per_s, watts = ROWS[row]
    tps, w = measure_twin(WorkloadConfig(**workload), warm_s=50.0, window_s=6.0)
    assert tps == pytest.approx(tokens_per_s, rel=0.10)
    assert w == pytest.approx(watts, rel=0.10)


@pytest.fixture
def sim_gpu():
    ds = open_devices("sim", sim_gpu="h100-sxm", sim_seed=3, sim_node="test-twins")
    yield ds.devices[0]


def test_registry_builds_twin_on_sim_and_torch_without(sim_gpu):
    config = load_profile("decode-llama-8b").workload
    assert isinstance(registry.get(config, sim_gpu), SimWorkload)
    tiny = load_profile("tiny").workload
    assert type(registry.get(tiny, None)).__name__ == "TrainingWorkload"


def test_twin_counts_and_latencies(sim_gpu):
    cfg = WorkloadConfig(name="inference", model="llama-8b", phases=["prefill", "decode", "serve"],
                         batch_size=16, input_len=512, output_len=64)
    w = registry.get(cfg, sim_gpu)
    w.prepare(sim_gpu)
    clock = sim_gpu.clock
    r = w.step("prefill")
    assert (r.input_tokens, r.output_tokens, r.sequences) == (16 * 512, 16, 16)
    w.synchronize()
    t0 = clock.now()
    r = w.step("decode")
    w.synchronize()
    decode_tpot = (clock.now() - t0) / 64
    assert (r.input_tokens, r.output_tokens) == (0, 16 * 64)
    t0 = clock.now()
    r = w.step("serve")
    w.synchronize()
    whole = clock.now() - t0
    assert (r.input_tokens, r.output_tokens) == (16 * 512, 16 * 64)
    assert r.ttft_s + 63 * r.tpot_s == pytest.approx(whole, rel=0.05)
    assert r.tpot_s == pytest.approx(decode_tpot, rel=0.05)
    assert w.flops_per_token("decode") == 2 * w.spec.params and w.spec.extra["simulated"]


def test_training_twin_counts_tokens(sim_gpu):
    w = registry.get(WorkloadConfig(**TRAIN), sim_gpu)
    w.prepare(sim_gpu)
    r = w.step("train")
    assert (r.input_tokens, r.output_tokens, r.sequences) == (8 * 2048, 0, 8)
    assert w.spec.engine == "torch-compile" and w.flops_per_token("train") == 6 * 1_104_218_112
