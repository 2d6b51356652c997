"""Harness overhead of the torch workloads: tokens/s through tokbench's Workload vs the same loop
written plainly, in interleaved pairs (so drift hits both alike), on the CPU.

Target: tokbench keeps >= 99% of the plain loop's tokens/s. Time is this process's CPU time by
default (one torch thread, so CPU time is the work's time and other processes on a shared machine
do not add to it); ``--clock wall`` uses the wall clock. Run:
    PYTHONPATH=. python scripts/bench_workload_overhead.py [--pairs 30] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import DynamicCache, GenerationConfig

from workloads import models
from workloads.hf_inference import HFInference, InferenceOptions
from workloads.training import TrainingOptions, TrainingWorkload

TRAIN = TrainingOptions(model="tiny", batch_size=8, seq_len=128, warmup_steps=2)
GEN = InferenceOptions(model="tiny", engine="hf-generate", batch_size=4, input_len=64, output_len=64,
                       phases=("decode", "serve"), warmup_steps=2)


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def timed(run, steps: int) -> tuple[int, float]:
    """Tokens and seconds of ``steps`` calls of ``run`` (each returns its token count)."""
    t0 = clock()
    tokens = sum(run() for _ in range(steps))
    return tokens, clock() - t0


def plain_training():
    o = TRAIN
    net = models.build_model(o.model, dtype=torch.float32, device="cpu", seed=o.seed).train()
    opt = torch.optim.AdamW(net.parameters(), lr=o.lr)
    batch = torch.randint(0, net.config.vocab_size, (o.batch_size, o.seq_len),
                          generator=torch.Generator().manual_seed(o.seed))

    def step() -> int:
        net(input_ids=batch, labels=batch, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return batch.numel()

    for _ in range(o.warmup_steps):
        step()
    return step


def plain_generate(decode_only: bool):
    o = GEN
    net = models.build_model(o.model, dtype=torch.float32, device="cpu", seed=o.seed)
    prompts = torch.randint(1, net.config.vocab_size, (o.batch_size, o.input_len),
                            generator=torch.Generator().manual_seed(o.seed))
    cfg = GenerationConfig(max_new_tokens=o.output_len, do_sample=False, eos_token_id=None, pad_token_id=0)
    cache = DynamicCache(config=net.config)
    with torch.inference_mode():
        net(input_ids=prompts[:, :-1], use_cache=True, cache=cache)

    @torch.inference_mode()
    def step() -> int:
        if decode_only:
            out = net.generate(input_ids=prompts, generation_config=cfg, cache=cache)
            cache.crop(o.input_len - 1 - int(cache.get_seq_length()))
            return out[:, o.input_len:].numel()
        out = net.generate(input_ids=prompts, generation_config=cfg)
        return out.numel()  # prompt + new tokens, as the workload's serve step counts

    for _ in range(o.warmup_steps):
        step()
    return step


def report_wrapper_cost(workload, phase: str, steps: int = 3) -> None:
    tokens, seconds = timed(lambda: workload.step(phase).tokens, steps)
    cost = wrapper_cost_s(workload, phase)
    print(f"{'':28} tokbench's own code per {phase} step: {cost * 1e6:.1f} us = "
          f"{cost / (seconds / steps):.4%} of the step")


def compare(label: str, ours, plain, pairs: int, steps: int) -> float:
    """Alternate short blocks of each (ABBA order) so that load from other processes and thermal
    drift fall on both alike; report the pooled ratio and the spread of per-pair ratios."""
    totals = {"ours": [0, 0.0], "plain": [0, 0.0]}
    ratios = []
    for i in range(pairs):
        order = (("ours", ours), ("plain", plain)) if i % 2 == 0 else (("plain", plain), ("ours", ours))
        rate = {}
        for name, run in order:
            tokens, seconds = timed(run, steps)
            totals[name][0] += tokens
            totals[name][1] += seconds
            rate[name] = tokens / seconds
        ratios.append(rate["ours"] / rate["plain"])
    pooled = (totals["ours"][0] / totals["ours"][1]) / (totals["plain"][0] / totals["plain"][1])
    q1, med, q3 = statistics.quantiles(ratios, n=4)
    print(f"{label:28} tokbench/plain pooled {pooled:7.2%}  median {med:.2%} (IQR {q1:.2%}-{q3:.2%}; "
          f"{totals['ours'][0] / totals['ours'][1]:,.0f} vs {totals['plain'][0] / totals['plain'][1]:,.0f} "
          f"tokens/s; {pairs} pairs x {steps} steps)")
    return pooled


def wrapper_cost_s(workload, phase: str, calls: int = 20000) -> float:
    """Seconds per ``step`` spent in tokbench's own code: the same call with the engine's work
    replaced by returning its last result. A deterministic bound the noisy pairs cannot give."""
    result = workload.step(phase)
    engine = getattr(workload, "_engine", None)
    if engine is not None:  # inference: dispatch, inference mode, phase check
        original = getattr(engine, phase)
        setattr(engine, phase, lambda: result)
    else:  # training: everything but the model and optimizer
        original = workload._forward_backward, workload._opt
        workload._forward_backward = lambda batch: None

        class _NoOpt:
            def step(self):
                pass

            def zero_grad(self, set_to_none=True):
                pass

        workload._opt = _NoOpt()
    t0 = time.perf_counter()
    for _ in range(calls):
        workload.step(phase)
    cost = (time.perf_counter() - t0) / calls
    if engine is not None:
        setattr(engine, phase, original)
    else:
        workload._forward_backward, workload._opt = original
    return cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least disturbed by neighbours)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    ap.add_argument("--only", choices=["training", "generate"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock")

    if args.only in (None, "training"):
        train = TrainingWorkload(TRAIN)
        train.prepare(None)
        compare("training tiny 8x128", lambda: train.step("train").tokens, plain_training(), args.pairs, args.steps)
        report_wrapper_cost(train, "train")
    if args.only == "training":
        return

    gen = HFInference(GEN)
    gen.prepare(None)
    compare("hf-generate decode 4x64", lambda: gen.step("decode").tokens, plain_generate(True),
            args.pairs, 1)
    compare("hf-generate serve 4x(64+64)", lambda: gen.step("serve").tokens, plain_generate(False),
            args.pairs, 1)
    for phase in ("decode", "serve"):
        report_wrapper_cost(gen, phase)


if __name__ == "__main__":
    main()
