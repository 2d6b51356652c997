"""Harness overhead of the torch workloads: tokens/s through tokbench's Workload vs the same loop
written plainly, in interleaved pairs (so drift hits both alike), on the CPU.

Target: tokbench keeps >= 99% of the plain loop's tokens/s. Run:
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


def timed(run, steps: int) -> tuple[int, float]:
    """Tokens and seconds of ``steps`` calls of ``run`` (each returns its token count)."""
    t0 = time.perf_counter()
    tokens = sum(run() for _ in range(steps))
    return tokens, time.perf_counter() - t0


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least disturbed by neighbours)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    train = TrainingWorkload(TRAIN)
    train.prepare(None)
    compare("training tiny 8x128", lambda: train.step("train").tokens, plain_training(), args.pairs, args.steps)

    gen = HFInference(GEN)
    gen.prepare(None)
    compare("hf-generate decode 4x64", lambda: gen.step("decode").tokens, plain_generate(True),
            args.pairs, 1)
    compare("hf-generate serve 4x(64+64)", lambda: gen.step("serve").tokens, plain_generate(False),
            args.pairs, 1)


if __name__ == "__main__":
    main()
