"""The vLLM adapter against a fake ``vllm`` module that follows vLLM's public offline API."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.errors import UsageError
from workloads.vllm_inference import INSTALL_HINT, VllmInference, VllmOptions

BLOCK = 16  # vLLM caches whole KV blocks of 16 tokens


@dataclass
class SamplingParams:
    max_tokens: int = 16
    ignore_eos: bool = False
    temperature: float = 1.0


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    num_cached_tokens: int = 0
    metrics: object = None


@dataclass
class Metrics:
    arrival_time: float
    first_scheduled_time: float
    first_token_time: float
    last_token_time: float


@dataclass
class LLM:
    """Generates token ``7`` (this fake's EOS) early unless ``ignore_eos`` is set, and caches
    whole blocks of prompts it has seen, as vLLM's prefix cache does."""

    kwargs: dict = field(default_factory=dict)
    seen: set = field(default_factory=set)
    instances = []

    def __init__(self, **kwargs):
        self.kwargs, self.seen = kwargs, set()
        config = json.loads((Path(kwargs["model"]) / "config.json").read_text())
        self.vocab = config["vocab_size"]
        LLM.instances.append(self)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        outs = []
        for i, p in enumerate(prompts):
            ids = p["prompt_token_ids"]
            key = tuple(ids)
            cached = ((len(ids) - 1) // BLOCK) * BLOCK if key in self.seen else 0
            self.seen.add(key)
            limit = sampling_params.max_tokens
            n = limit if sampling_params.ignore_eos else min(3, limit)
            tokens = [(sum(ids) + j) % self.vocab for j in range(n)]
            t0 = 100.0 + i
            metrics = Metrics(t0, t0, t0 + 0.5, t0 + 0.5 + 0.01 * (n - 1))
            outs.append(RequestOutput(str(i), list(ids), [CompletionOutput(0, tokens)], cached, metrics))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    LLM.instances.clear()
    return module


def test_missing_vllm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    w = VllmInference(VllmOptions(model="tiny"))
    with pytest.raises(UsageError) as info:
        w.prepare(None)
    assert str(info.value) == INSTALL_HINT and "pip install 'tokbench[vllm]'" in str(info.value)


def test_counts_come_from_outputs(fake_vllm):
    w = VllmInference(VllmOptions(model="tiny", batch_size=4, input_len=40, output_len=9,
                                  phases=("prefill", "decode", "serve"), engine_args={"enforce_eager": True}))
    w.prepare(None)
    llm = LLM.instances[-1]
    assert llm.kwargs["load_format"] == "dummy" and llm.kwargs["skip_tokenizer_init"] is True
    assert llm.kwargs["enforce_eager"] is True and llm.kwargs["dtype"] == "bfloat16"
    assert llm.vocab == 512  # the preset's config.json was written for the dummy loader

    r = w.step("prefill")
    assert (r.input_tokens, r.output_tokens, r.sequences) == (4 * 40, 4, 4)

    r = w.step("decode")  # the same prompts again: vLLM serves whole blocks from its prefix cache
    assert r.output_tokens == 4 * 9 == sum(len(o.outputs[0].token_ids) for o in w.last_outputs)
    assert r.input_tokens == 4 * (40 - 32)

    r = w.step("serve")
    assert (r.input_tokens, r.output_tokens) == (4 * 40, 4 * 9)
    assert r.ttft_s == pytest.approx(0.5) and r.tpot_s == pytest.approx(0.01)
    assert w.spec.params == 156_480 and w.spec.engine == "vllm"
    w.close()


def test_eos_is_ignored(fake_vllm):
    w = VllmInference(VllmOptions(model="tiny", batch_size=2, input_len=8, output_len=20, phases=("serve",)))
    w.prepare(None)
    assert all(len(o.outputs[0].token_ids) == 20 for o in w.last_outputs)
    assert w.step("serve").output_tokens == 40
