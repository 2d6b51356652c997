"""Inference with vLLM's offline engine (optional extra: ``pip install 'tokbench[vllm]'``).

Written against vLLM's public offline API as documented for releases 0.6 to 0.11: ``LLM(model=...,
load_format="dummy", skip_tokenizer_init=True, ...)``, ``SamplingParams(max_tokens, ignore_eos,
temperature)``, ``LLM.generate(prompts, sampling_params, use_tqdm=False)`` with prompts given as
``{"prompt_token_ids": [...]}``, and ``RequestOutput`` fields ``prompt_token_ids``,
``outputs[i].token_ids`` and ``num_cached_tokens``. It is tested here against a fake module that
follows that API (no GPU, no vLLM); every count comes from the engine's outputs.

A preset becomes a model directory holding only its ``config.json``, loaded with random weights
(``load_format="dummy"``); a local model directory is loaded as it is. Phases:

* ``prefill`` — fresh random prompts each repeat, one new token each;
* ``decode`` — the same prompts every repeat with prefix caching on, so the prompt comes from the
  cache and the step is the ``output_len`` decode steps (only uncached prompt tokens count as input);
* ``serve`` — fresh prompts answered with ``output_len`` tokens.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field, replace
from typing import Any

from harness.devices.base import Device
from harness.errors import UsageError
from workloads import models, torch_env
from workloads.base import StepResult, WorkloadSpec

INSTALL_HINT = "vLLM is not installed: pip install 'tokbench[vllm]' (needs a CUDA GPU)"
_DTYPES = {"auto": "bfloat16", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass(frozen=True)
class VllmOptions:
    model: str = "llama-1b"
    batch_size: int = 1
    input_len: int = 128
    output_len: int = 128
    precision: str = "auto"
    phases: tuple[str, ...] = ("prefill", "decode")
    seed: int = 0
    warmup_steps: int = 2
    engine_args: dict[str, Any] = field(default_factory=dict)  # passed to vllm.LLM as they are


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise UsageError(INSTALL_HINT) from err
    return vllm


class VllmInference:
    """A batch of synthetic requests through ``vllm.LLM``."""

    def __init__(self, options: VllmOptions) -> None:
        bad = [p for p in options.phases if p not in ("prefill", "decode", "serve")]
        if bad or not options.phases:
            raise UsageError(f"phases {bad or '[]'}: choose from prefill, decode, serve")
        self.options = options
        self.phases = tuple(options.phases)
        params = models.preset(options.model).params if models.is_preset(options.model) else 0
        self.spec = WorkloadSpec(
            name="inference",
            kind="serve" if self.phases == ("serve",) else "inference",
            engine="vllm",
            model=options.model,
            precision=_DTYPES[options.precision],
            batch_size=options.batch_size,
            input_len=options.input_len,
            output_len=options.output_len,
            params=params,
            extra={"phases": list(self.phases), "engine_args": dict(options.engine_args)},
        )
        self.last_outputs: list[Any] = []

    def prepare(self, device: Device | None) -> None:
        vllm = import_vllm()
        o = self.options
        if device is not None and torch_env.torch_device(device).index not in (0, None):
            raise UsageError(
                f"vLLM runs on the first visible GPU; run with CUDA_VISIBLE_DEVICES={device.info.uuid} "
                f"to measure GPU {device.info.index}"
            )
        shape, path = models.resolve(o.model)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tokbench-vllm-")
            models.hf_config(shape).save_pretrained(self._tmp.name)
            model_dir, load_format = self._tmp.name, "dummy"
        else:
            model_dir, load_format = str(path), "auto"
        self.spec = replace(self.spec, params=shape.params)
        args: dict[str, Any] = {
            "model": model_dir,
            "load_format": load_format,
            "dtype": _DTYPES[o.precision],
            "skip_tokenizer_init": True,
            "enable_prefix_caching": True,
            "max_model_len": o.input_len + o.output_len + 16,
            "seed": o.seed,
            **o.engine_args,
        }
        self._vocab = shape.vocab
        self._rng = random.Random(o.seed)
        self._llm = vllm.LLM(**args)
        self._params = {
            "prefill": vllm.SamplingParams(max_tokens=1, ignore_eos=True, temperature=0.0),
            "decode": vllm.SamplingParams(max_tokens=o.output_len, ignore_eos=True, temperature=0.0),
        }
        self._params["serve"] = self._params["decode"]
        self._decode_prompts = self._prompts()
        for phase in self.phases:
            for _ in range(o.warmup_steps):
                self.step(phase)

    def _prompts(self) -> list[dict[str, list[int]]]:
        o, r, v = self.options, self._rng, self._vocab
        return [
            {"prompt_token_ids": [r.randrange(1, v) for _ in range(o.input_len)]} for _ in range(o.batch_size)
        ]

    def step(self, phase: str) -> StepResult:
        if phase not in self.phases:
            raise ValueError(f"phase {phase!r} not prepared (phases: {', '.join(self.phases)})")
        prompts = self._decode_prompts if phase == "decode" else self._prompts()
        outputs = self._llm.generate(prompts, self._params[phase], use_tqdm=False)
        self.last_outputs = outputs
        prompt = sum(len(out.prompt_token_ids) for out in outputs)
        cached = sum(getattr(out, "num_cached_tokens", None) or 0 for out in outputs)
        new = sum(len(c.token_ids) for out in outputs for c in out.outputs)
        ttft, tpot = _latencies(outputs) if phase == "serve" else (None, None)
        return StepResult(prompt - cached, new, len(outputs), ttft_s=ttft, tpot_s=tpot)

    def synchronize(self) -> None:
        """``LLM.generate`` returns only when every request has finished."""

    def close(self) -> None:
        self._llm = None
        if self._tmp is not None:
            self._tmp.cleanup()
        from workloads.training import _free_cuda

        _free_cuda()

    def flops_per_token(self, phase: str) -> float:
        return models.forward_flops_per_token(self.spec.params)


def _latencies(outputs: list[Any]) -> tuple[float | None, float | None]:
    """Mean TTFT and TPOT from per-request metrics where this vLLM version fills them in."""
    ttfts, tpots = [], []
    for out in outputs:
        m = getattr(out, "metrics", None)
        first = getattr(m, "first_token_time", None)
        start = getattr(m, "first_scheduled_time", None) or getattr(m, "arrival_time", None)
        last = getattr(m, "last_token_time", None)
        n = sum(len(c.token_ids) for c in out.outputs)
        if first is None or start is None:
            return None, None
        ttfts.append(first - start)
        if last is not None and n > 1:
            tpots.append((last - first) / (n - 1))
    ttft = sum(ttfts) / len(ttfts) if ttfts else None
    tpot = sum(tpots) / len(tpots) if tpots else None
    return ttft, tpot

