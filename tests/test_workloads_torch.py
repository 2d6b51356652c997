"""Real torch on the CPU, tiny model: token counts, training, latencies, engine correctness."""

from __future__ import annotations

import statistics
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import GenerationConfig  # noqa: E402

from workloads import models  # noqa: E402
from workloads.hf_inference import ENGINES, HFInference, InferenceOptions  # noqa: E402
from workloads.training import TrainingOptions, TrainingWorkload  # noqa: E402

B, L_IN, N_OUT = 2, 24, 12


def test_presets_match_calibration_shape():
    one_b = models.preset("1b")
    assert (one_b.hidden, one_b.layers, one_b.heads, one_b.kv_heads, one_b.ffn, one_b.vocab) == (
        2048, 16, 32, 8, 8192, 32000,
    )
    assert one_b.params == 1_104_218_112  # CALIBRATION.md: 1.104 B
    assert models.preset("llama-8b").params == 8_030_261_248
    net = models.build_model("tiny", dtype=torch.float32, device="cpu")
    assert models.count_params(net) == models.preset("tiny").params
    assert models.training_flops_per_token(one_b.params) == pytest.approx(6.625e9, rel=1e-3)


def test_training_counts_tokens_and_loss_falls():
    w = TrainingWorkload(TrainingOptions(batch_size=4, seq_len=32, warmup_steps=0, lr=3e-3))
    w.prepare(None)
    losses = []
    for _ in range(8):
        r = w.step("train")
        assert (r.input_tokens, r.output_tokens, r.sequences) == (4 * 32, 0, 4)
        # the logits the model actually produced cover exactly the counted tokens
        assert w.last_logits_shape[0] * w.last_logits_shape[1] == r.tokens
        losses.append(float(w.last_loss))
    w.synchronize()
    assert losses[-1] < 0.85 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert w.spec.precision == "fp32" and w.spec.params == models.preset("tiny").params
    assert w.flops_per_token("train") == 6 * w.spec.params
    w.close()


def _reference(n_out: int) -> torch.Tensor:
    net = models.build_model("tiny", dtype=torch.float32, device="cpu")
    prompts = torch.randint(1, net.config.vocab_size, (B, L_IN), generator=torch.Generator().manual_seed(0))
    cfg = GenerationConfig(max_new_tokens=n_out, do_sample=False, eos_token_id=None, pad_token_id=0)
    return net.generate(input_ids=prompts, generation_config=cfg)[:, L_IN:]


@pytest.fixture(scope="module")
def reference():
    return _reference(N_OUT)


@pytest.fixture(scope="module", params=ENGINES)
def engine(request):
    w = HFInference(
        InferenceOptions(engine=request.param, batch_size=B, input_len=L_IN, output_len=N_OUT,
                         phases=("prefill", "decode", "serve"))
    )
    w.prepare(None)
    yield w
    w.close()


def test_exact_token_counts_match_outputs(engine, reference):
    r = engine.step("prefill")
    assert (r.input_tokens, r.output_tokens, r.sequences) == (B * L_IN, B, B)
    assert engine.last_output_ids.numel() == r.output_tokens
    assert torch.equal(engine.last_output_ids.reshape(B, -1)[:, 0], reference[:, 0])

    r = engine.step("serve")
    assert (r.input_tokens, r.output_tokens) == (B * L_IN, B * N_OUT)
    assert tuple(engine.last_output_ids.shape) == (B, N_OUT)
    # greedy output equals transformers' own generate: exactly N_OUT tokens, EOS never stops it
    assert torch.equal(engine.last_output_ids, reference)

    r = engine.step("decode")
    assert (r.input_tokens, r.output_tokens) == (0, B * N_OUT)
    assert tuple(engine.last_output_ids.shape) == (B, N_OUT)
    first = engine.last_output_ids.clone()
    engine.step("decode")  # the cache is rewound: the same context gives the same tokens
    assert torch.equal(engine.last_output_ids, first)


def test_latencies_are_consistent(engine):
    whole, predicted, tpots, decode_tpots = [], [], [], []
    for _ in range(5):
        t0 = time.monotonic()
        r = engine.step("serve")
        engine.synchronize()
        whole.append(time.monotonic() - t0)
        predicted.append(r.ttft_s + (N_OUT - 1) * r.tpot_s)
        tpots.append(r.tpot_s)
        t0 = time.monotonic()
        engine.step("decode")
        engine.synchronize()
        decode_tpots.append((time.monotonic() - t0) / N_OUT)
    for w_s, p_s in zip(whole, predicted, strict=True):
        assert p_s == pytest.approx(w_s, rel=0.05)
    assert statistics.median(tpots) == pytest.approx(statistics.median(decode_tpots), rel=0.15)
    assert 0 < r.ttft_s < whole[-1]
