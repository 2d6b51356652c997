"""Per-part Max-P and Max-Q of the simulated parts (the table in docs/calibration.md).

For each part and workload (train-llama-1b; decode-llama-8b at batch 1 and 64) it sweeps the power
cap from the part's minimum to its maximum and the locked SM clock from its maximum down to a few
hundred MHz, each point a steady window of the simulated twin (workloads.simulated.measure_point),
and prints Max-P (the maximum limit: most tokens/s), Max-Q by cap and by clock (most tokens/J), the
tokens/J gain of each Max-Q over Max-P and the throughput it keeps. Then, for decode-8b b64 on the
Hopper parts, clock against cap at equal throughput: each cap that binds beside the clock sweep's
tokens/J at the throughput that cap keeps (tests/test_physics_decode.py asserts the clock wins).

    python scripts/physics_table.py [--parts h100-sxm,h200-sxm] [--points 11]
"""

from __future__ import annotations

import argparse

import numpy as np

from harness.devices.catalog import available_parts, load_part
from harness.profiles import load_profile
from workloads.simulated import TwinPoint, measure_point

WORKLOADS = {"train-1b": ("train-llama-1b", 8), "decode-8b b1": ("decode-llama-8b", 1),
             "decode-8b b64": ("decode-llama-8b", 64)}


def sweep(part: str, profile: str, batch: int, points: int) -> tuple[dict[float, TwinPoint], dict[int, TwinPoint]]:
    p = load_part(part)
    config = load_profile(profile).workload.model_copy(update={"batch_size": batch})

    def at(**kw: float) -> TwinPoint:
        return measure_point(config, part=part, warm_s=8.0, window_s=4.0, **kw)

    caps = {float(c): at(limit_w=float(c)) for c in np.linspace(p.power_min_w, p.power_max_w, points).round()}
    step = p.sm_clock_step_mhz
    clocks = {int(f): at(lock_mhz=int(f)) for f in
              (round(x / step) * step for x in np.linspace(p.sm_clock_max_mhz, 0.25 * p.sm_clock_max_mhz, points))}
    return caps, clocks


def row(caps: dict[float, TwinPoint], clocks: dict[int, TwinPoint]) -> str:
    max_p = max(caps)  # the default (= maximum) limit: most tokens/s
    ref = caps[max_p]

    def tpj(x: TwinPoint) -> float:
        return x.tokens_per_s / x.watts

    q_cap = max(caps, key=lambda c: tpj(caps[c]))
    q_clk = max(clocks, key=lambda f: tpj(clocks[f]))
    out = [f"{max_p:.0f} W ({ref.tokens_per_s:,.0f} tok/s, {ref.watts:.0f} W)"]
    for label, x in ((f"{q_cap:.0f} W", caps[q_cap]), (f"{q_clk} MHz", clocks[q_clk])):
        out.append(f"{label}: {tpj(x) / tpj(ref) - 1:+.0%} tok/J, keeps {x.tokens_per_s / ref.tokens_per_s:.0%}")
    return " | ".join(out)


def clock_vs_cap(part: str) -> None:
    """Decode 8B batch 64: every cap from the lowest limit up to the decode's draw (50 W apart)
    beside the locked-clock sweep (90 MHz apart) interpolated at the throughput the cap keeps."""
    p = load_part(part)
    config = load_profile("decode-llama-8b").workload.model_copy(update={"batch_size": 64})

    def at(**kw: float) -> TwinPoint:
        return measure_point(config, part=part, warm_s=4.0, window_s=3.0, **kw)

    top = at()
    clocks = [at(lock_mhz=f) for f in range(p.sm_clock_max_mhz, p.sm_clock_min_mhz + 250, -90)]
    kept = np.array([x.tokens_per_s / top.tokens_per_s for x in clocks])
    gain = np.array([x.tokens_per_s / x.watts / (top.tokens_per_s / top.watts) for x in clocks])
    order = np.argsort(kept)
    for cap in range(int(p.power_min_w), int(top.watts), 50):
        x = at(limit_w=float(cap))
        k = x.tokens_per_s / top.tokens_per_s
        g_cap = x.tokens_per_s / x.watts / (top.tokens_per_s / top.watts)
        g_clk = float(np.interp(k, kept[order], gain[order]))
        print(f"| {part} | {cap} W | {k:.1%} | {g_cap - 1:+.1%} ({1 - 1 / g_cap:.1%} less energy per token) | "
              f"{g_clk - 1:+.1%} ({1 - 1 / g_clk:.1%}) | {g_clk / g_cap - 1:+.1%} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default=",".join(available_parts()))
    ap.add_argument("--points", type=int, default=11)
    args = ap.parse_args()
    print("| part | workload | Max-P (max limit: tokens/s, W drawn) | Max-Q by cap | Max-Q by clock |")
    print("|---|---|---|---|---|")
    for part in args.parts.split(","):
        for label, (profile, batch) in WORKLOADS.items():
            print(f"| {part} | {label} | {row(*sweep(part, profile, batch, args.points))} |", flush=True)
    hopper = [part for part in args.parts.split(",") if part in ("h100-sxm", "h200-sxm")]
    if hopper:
        print("\n| part (decode-8b b64) | cap | tokens/s kept | tokens/J by cap | by clock at that throughput "
              "| clock over cap |")
        print("|---|---|---|---|---|---|")
        for part in hopper:
            clock_vs_cap(part)


if __name__ == "__main__":
    main()
