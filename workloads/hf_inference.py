"""Inference with transformers: synthetic prompts, exactly ``output_len`` new tokens, EOS ignored.

Two engines:

* ``hf-static`` — a static KV cache and a hand-driven greedy loop whose one-token decode step
  (forward + argmax) is compiled with ``mode="reduce-overhead"`` on a GPU, i.e. replayed as a CUDA
  graph; the loop never synchronises, so the host runs ahead of the GPU. Compilation happens in
  ``prepare`` (warm-up), never inside a window. The default on a GPU.
* ``hf-generate`` — plain ``model.generate`` with its dynamic cache: the framework baseline, so a
  report can show what the software costs in tokens/J.

Phases, each measured in its own window by repeating only it:

* ``prefill`` — the batch of prompts through the model up to its first token
  (``B × input_len`` input tokens, ``B`` output tokens). Its step time is the time to first token.
* ``decode`` — ``output_len`` one-token steps from a fixed context of ``input_len`` tokens, the
  cache rewound to that context before every repeat (``B × output_len`` output tokens). Its step
  time over ``output_len`` is the time per output token.
* ``serve`` — whole requests: prefill then ``output_len − 1`` decode steps (``B × output_len``
  output tokens); the step itself stamps the first token, so it reports TTFT and TPOT, and
  request time = TTFT + (output_len − 1) × TPOT.

Written against transformers 5.x (the ``cache=`` keyword and static layers that track their
length in ``cumulative_length``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Any

from harness.devices.base import Device
from harness.errors import UsageError
from workloads import models, torch_env
from workloads.base import StepResult, WorkloadSpec

ENGINES = ("hf-static", "hf-generate")
INFERENCE_PHASES = ("prefill", "decode", "serve")


@dataclass(frozen=True)
class InferenceOptions:
    model: str = "tiny"
    engine: str = "hf-static"
    batch_size: int = 1
    input_len: int = 32
    output_len: int = 16
    precision: str = "auto"
    compile: bool | None = None  # None: compile the decode step when on a GPU (hf-static only)
    phases: tuple[str, ...] = ("prefill", "decode")
    seed: int = 0
    warmup_steps: int = 2  # per phase, in prepare(): the first compiled calls record the graphs


class HFInference:
    """A batch of synthetic requests served by transformers on one device (CPU when None)."""

    def __init__(self, options: InferenceOptions) -> None:
        if options.engine not in ENGINES:
            raise UsageError(f"engine {options.engine!r}: choose one of {', '.join(ENGINES)}")
        bad = [p for p in options.phases if p not in INFERENCE_PHASES]
        if bad or not options.phases:
            raise UsageError(f"phases {bad or '[]'}: choose from {', '.join(INFERENCE_PHASES)}")
        if options.output_len < 1 or options.input_len < 2 or options.batch_size < 1:
            raise UsageError("inference needs batch_size >= 1, input_len >= 2 and output_len >= 1")
        self.options = options
        self.phases = tuple(options.phases)
        kind = "serve" if self.phases == ("serve",) else "inference"
        params = models.preset(options.model).params if models.is_preset(options.model) else 0
        self.spec = WorkloadSpec(
            name="inference",
            kind=kind,
            engine=options.engine,
            model=options.model,
            precision=options.precision,
            batch_size=options.batch_size,
            input_len=options.input_len,
            output_len=options.output_len,
            params=params,
            extra={"phases": list(self.phases)},
        )
        self.last_output_ids: Any = None  # (B, tokens) of the last step, for checks

    # --- protocol ---------------------------------------------------------------------
    def prepare(self, device: Device | None) -> None:
        import torch

        o = self.options
        self._clock = torch_env.clock_of(device)
        self._tdev = torch_env.torch_device(device)
        dtype = torch_env.resolve_dtype(o.precision, self._tdev)
        net = models.build_model(o.model, dtype=dtype, device=self._tdev, seed=o.seed)
        self._net = net
        forward_args = inspect.signature(net.forward).parameters
        self._cache_kw = "cache" if "cache" in forward_args else "past_key_values"
        compiled = (self._tdev.type == "cuda") if o.compile is None else o.compile
        self.spec = replace(
            self.spec,
            params=models.count_params(net),
            precision=torch_env.dtype_name(dtype),
            extra={**self.spec.extra, "compile": bool(compiled and o.engine == "hf-static")},
        )
        gen = torch.Generator(device="cpu").manual_seed(o.seed)
        vocab = net.config.vocab_size
        self._prompts = torch.randint(1, vocab, (o.batch_size, o.input_len), generator=gen).to(self._tdev)
        self._engine: _StaticEngine | _GenerateEngine
        if o.engine == "hf-static":
            self._engine = _StaticEngine(self, compiled)
        else:
            self._engine = _GenerateEngine(self)
        with torch.inference_mode():
            for phase in self.phases:
                for _ in range(o.warmup_steps):
                    self.step(phase)
        self.synchronize()

    def step(self, phase: str) -> StepResult:
        import torch

        if phase not in self.phases:
            raise ValueError(f"phase {phase!r} not prepared (phases: {', '.join(self.phases)})")
        with torch.inference_mode():
            return getattr(self._engine, phase)()

    def synchronize(self) -> None:
        torch_env.synchronize(self._tdev)

    def close(self) -> None:
        self._engine = self._net = self._prompts = None  # type: ignore[assignment]
        from workloads.training import _free_cuda

        _free_cuda()

    def flops_per_token(self, phase: str) -> float:
        return models.forward_flops_per_token(self.spec.params)


class _StaticEngine:
    """Static KV cache + greedy loop; the decode step compiled to a CUDA graph on a GPU."""

    def __init__(self, w: HFInference, compiled: bool) -> None:
        import torch
        from transformers import StaticCache

        o = w.options
        self.w, self.n_in, self.n_out = w, o.input_len, o.output_len
        self.cache = StaticCache(config=w._net.config, max_cache_len=o.input_len + o.output_len)
        self.out = torch.zeros((o.batch_size, o.output_len), dtype=torch.long, device=w._tdev)
        self.prompt_pos = torch.arange(o.input_len, device=w._tdev).unsqueeze(0)
        # one (1, 1) position tensor per decode step, made once so the loop allocates nothing
        self.step_pos = torch.arange(o.input_len, o.input_len + o.output_len, device=w._tdev).view(-1, 1, 1)
        self.cuda_graphs = compiled and w._tdev.type == "cuda"
        self.decode_one = (
            torch.compile(self._decode_one, mode="reduce-overhead") if compiled else self._decode_one
        )
        self.first = self._prefill()  # the context decode repeats start from

    def _forward(self, ids: Any, pos: Any, **kw: Any) -> Any:
        cache = {self.w._cache_kw: self.cache}
        return self.w._net(input_ids=ids, position_ids=pos, use_cache=True, **cache, **kw)

    def _decode_one(self, ids: Any, pos: Any) -> Any:
        return self._forward(ids, pos).logits[:, -1].argmax(-1, keepdim=True)

    def _rewind(self, length: int) -> None:
        """Put the cache back to ``length`` tokens; later writes overwrite the stale entries,
        which the causal mask hides meanwhile."""
        for layer in self.cache.layers:
            if getattr(layer, "is_initialized", False):
                layer.cumulative_length.fill_(length)

    def _prefill(self) -> Any:
        self._rewind(0)
        logits = self._forward(self.w._prompts, self.prompt_pos, logits_to_keep=1).logits
        return logits[:, -1].argmax(-1, keepdim=True)

    def _decode(self, first: Any, steps: int, start: int) -> None:
        """``steps`` one-token steps from the context, writing ``out[:, start:start+steps]``:
        step ``i`` feeds the previous token at position ``input_len + i``."""
        import torch

        ids = first
        for i in range(steps):
            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            nxt = self.decode_one(ids, self.step_pos[i])
            col = start + i
            self.out[:, col : col + 1].copy_(nxt)
            ids = self.out[:, col : col + 1]

    def prefill(self) -> StepResult:
        first = self._prefill()
        self.w.last_output_ids = first
        b = first.shape[0]
        return StepResult(input_tokens=b * self.n_in, output_tokens=first.numel(), sequences=b)

    def decode(self) -> StepResult:
        self._rewind(self.n_in)
        self._decode(self.first, self.n_out, 0)
        self.w.last_output_ids = self.out
        return StepResult(input_tokens=0, output_tokens=self.out.numel(), sequences=self.out.shape[0])

    def serve(self) -> StepResult:
        clock = self.w._clock
        t0 = clock.now()
        first = self._prefill()
        self.out[:, 0:1].copy_(first)
        self.w.synchronize()  # a server must have the first token on the host to stream it
        t1 = clock.now()
        self._decode(self.out[:, 0:1], self.n_out - 1, 1)
        self.w.synchronize()
        t2 = clock.now()
        self.w.last_output_ids = self.out
        b = self.out.shape[0]
        tpot = (t2 - t1) / (self.n_out - 1) if self.n_out > 1 else None
        return StepResult(b * self.n_in, self.out.numel(), b, ttft_s=t1 - t0, tpot_s=tpot)


class _GenerateEngine:
    """Plain ``generate`` with a dynamic cache (greedy, EOS ignored)."""

    def __init__(self, w: HFInference) -> None:
        from transformers import DynamicCache, GenerationConfig

        o = w.options
        self.w, self.n_in, self.n_out = w, o.input_len, o.output_len

        def config(new_tokens: int) -> Any:
            return GenerationConfig(
                max_new_tokens=new_tokens,
                do_sample=False,
                eos_token_id=None,  # ignore EOS: every request produces exactly its length
                pad_token_id=0,
                use_cache=True,
            )

        self.config_full, self.config_first = config(o.output_len), config(1)
        # decode context: the prompt minus its last token is cached; generate() feeds that last
        # token, so each repeat is output_len one-token forwards
        self.cache = DynamicCache(config=w._net.config)
        w._net(input_ids=w._prompts[:, :-1], use_cache=True, **{w._cache_kw: self.cache})

    def _generate(self, config: Any, **kw: Any) -> Any:
        ids = self.w._net.generate(input_ids=self.w._prompts, generation_config=config, **kw)
        return ids[:, self.n_in :]

    def prefill(self) -> StepResult:
        new = self._generate(self.config_first)
        self.w.last_output_ids = new
        return StepResult(new.shape[0] * self.n_in, new.numel(), new.shape[0])

    def decode(self) -> StepResult:
        new = self._generate(self.config_full, **{self.w._cache_kw: self.cache})
        self.cache.crop(self.n_in - 1 - int(self.cache.get_seq_length()))  # negative: tokens to drop
        self.w.last_output_ids = new
        return StepResult(0, new.numel(), new.shape[0])

    def serve(self) -> StepResult:
        stamps = _Stamps(self.w._clock)
        t0 = self.w._clock.now()
        new = self._generate(self.config_full, streamer=stamps)
        self.w.last_output_ids = new
        t = stamps.times
        tpot = (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else None
        return StepResult(new.shape[0] * self.n_in, new.numel(), new.shape[0], ttft_s=t[0] - t0, tpot_s=tpot)


class _Stamps:
    """A ``generate`` streamer that stamps each new token (generate copies it to the host
    before calling ``put``, so the stamp follows the token's real completion)."""

    def __init__(self, clock: Any) -> None:
        self.clock, self.times, self._prompt_seen = clock, [], False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # the first put is the prompt
            self._prompt_seen = True
            return
        self.times.append(self.clock.now())

    def end(self) -> None:
        pass
