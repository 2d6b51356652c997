"""Fit the simulated twins' engine factors to the H100 table of docs/calibration.md.

The rows are reproduced at the table's exact shapes (1B preset; decode 128 tokens in, 128 out) at
the untouched 700 W limit, on a warm chip: each measurement runs ``WARM_S`` simulated seconds first,
about five thermal time constants, as the real rows were taken after warm-up. Only engine factors
are fitted (efficiency; host time per step and per sequence; DRAM traffic as a multiple of the
model's minimum); the simulated GPU's physics is taken as it is. Prints each row's target and
reproduction and the fitted factors to paste into workloads/simulated.py.

Run: ``python scripts/calibrate_twins.py`` (a few minutes on one core).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from scipy.optimize import least_squares

from workloads.config import WorkloadConfig
from workloads.simulated import FACTORS, EngineFactors, SimWorkload, measure_twin

#: simulated seconds before a window: ~5 x the parts' 25 s thermal time constant
WARM_S = 120.0
#: a shorter warm-up for the fit's inner loop (its leakage error is refitted away by the last pass)
FIT_WARM_S = 30.0
DECODE = {"name": "inference", "model": "llama-1b", "phases": ["decode"], "input_len": 128, "output_len": 128}


@dataclass(frozen=True)
class Row:
    label: str
    workload: dict
    tokens_per_s: float
    power_w: float


#: docs/calibration.md, "Measured on a real H100", all at the untouched 700 W limit
ROWS = [
    Row("train eager 8x2048", {"name": "training", "model": "llama-1b", "batch_size": 8, "seq_len": 2048,
                               "compile": False}, 56_900, 694),
    Row("train compile 8x2048", {"name": "training", "model": "llama-1b", "batch_size": 8, "seq_len": 2048,
                                 "compile": True}, 66_000, 688),
    Row("prefill 16x2048", {"name": "inference", "model": "llama-1b", "phases": ["prefill"], "batch_size": 16,
                            "input_len": 2048, "output_len": 1, "engine": "hf-static"}, 189_700, 697),
    Row("decode hf-generate bs1", {**DECODE, "engine": "hf-generate", "batch_size": 1}, 61, 145),
    Row("decode hf-generate bs64", {**DECODE, "engine": "hf-generate", "batch_size": 64}, 3_800, 174),
    Row("decode hf-static bs1", {**DECODE, "engine": "hf-static", "batch_size": 1}, 297, 224),
    Row("decode hf-static bs64", {**DECODE, "engine": "hf-static", "batch_size": 64}, 12_260, 415),
]


def measure(workload: dict, factors: dict | None = None, warm_s: float = WARM_S,
            window_s: float = 10.0) -> tuple[float, float]:
    return measure_twin(WorkloadConfig(**workload), factors=factors, warm_s=warm_s, window_s=window_s)


def work_s(workload: dict, factors: EngineFactors, part: str = "h100-sxm") -> float:
    """GPU time of one decode token step at full clock, averaged over the request's contexts."""
    from harness.devices.catalog import load_part
    from harness.devices.simulated import step_time

    p = load_part(part)
    key = (workload["engine"], "decode")
    wl = SimWorkload(WorkloadConfig(**workload), {**FACTORS, key: factors})
    c = wl.config
    steps = [step_time(p, wl.decode_load(c.input_len + i), float(p.sm_clock_max_mhz)).total_s
             for i in range(c.output_len)]
    return sum(steps) / len(steps)


def decode_factors(engine: str, rows: list[Row], efficiency: float, traffic: float) -> EngineFactors | None:
    """Factors with this efficiency (and traffic) whose host times reproduce both rows' tokens/s.

    Decode runs at full clock (far below the cap). Where host and GPU time add up (eager engines),
    the host time per row follows from its tokens/s and a line through the rows gives
    host_s + host_per_seq_s x batch. Where they overlap (CUDA graphs), the small batch is
    host-bound (host time = its step time) and the large batch GPU-bound, which fixes the traffic
    for a given efficiency. None when that needs negative host time or traffic below the minimum.
    """
    trial = replace(FACTORS[(engine, "decode")], efficiency=efficiency, traffic=traffic)
    (r1, b1), (r2, b2) = [(r, r.workload["batch_size"]) for r in rows]
    step1, step2 = b1 / r1.tokens_per_s, b2 / r2.tokens_per_s
    if trial.overlaps_host:
        unit = work_s(r2.workload, replace(trial, traffic=1.0))
        trial = replace(trial, traffic=round(step2 / unit, 3))
        if trial.traffic < 1.0 or work_s(r1.workload, trial) > step1 or step1 > step2:
            return None
        return replace(trial, host_s=round(step1, 7), host_per_seq_s=0.0)
    h1, h2 = step1 - work_s(r1.workload, trial), step2 - work_s(r2.workload, trial)
    per_seq = max(0.0, (h2 - h1) / (b2 - b1))
    base = h1 - per_seq * b1 if per_seq > 0 else (h1 + h2) / 2
    if base < 0 or min(h1, h2) < 0:
        return None
    return replace(trial, host_s=round(base, 7), host_per_seq_s=round(per_seq, 9))


def fit_decode(engine: str, rows: list[Row]) -> EngineFactors:
    """Efficiency (and traffic, where it is free) that reproduce both rows' watts; their tokens/s
    hold by construction."""
    key = (engine, "decode")
    start = FACTORS[key]
    free_traffic = not start.overlaps_host

    def factors(x) -> EngineFactors | None:
        return decode_factors(engine, rows, round(float(x[0]), 4), round(float(x[1]), 4) if free_traffic else 1.0)

    def residual(x) -> list[float]:
        f = factors(x)
        if f is None:
            return [5.0] * len(rows)
        return [math.log(measure(r.workload, {**FACTORS, key: f}, warm_s=FIT_WARM_S, window_s=5.0)[1] / r.power_w)
                for r in rows]

    x0, lo, hi = [start.efficiency], [0.05], [1.0]
    if free_traffic:
        x0, lo, hi = x0 + [start.traffic], lo + [1.0], hi + [4.0]
    fit = least_squares(residual, x0, bounds=(lo, hi), diff_step=0.02, xtol=1e-3)
    f = factors(list(fit.x) + [1.0])
    if f is None:
        raise SystemExit(f"{engine}: no efficiency reproduces both rows' tokens/s with non-negative host time")
    return f


def fit_efficiency(key: tuple[str, str], row: Row) -> EngineFactors:
    def residual(x) -> list[float]:
        f = {**FACTORS, key: replace(FACTORS[key], efficiency=float(x[0]))}
        return [math.log(measure(row.workload, f, warm_s=FIT_WARM_S, window_s=5.0)[0] / row.tokens_per_s)]

    fit = least_squares(residual, [FACTORS[key].efficiency], bounds=([0.05], [1.0]), diff_step=0.02)
    return replace(FACTORS[key], efficiency=round(float(fit.x[0]), 3))


def main() -> None:
    fitted = {
        ("torch", "train"): fit_efficiency(("torch", "train"), ROWS[0]),
        ("torch-compile", "train"): fit_efficiency(("torch-compile", "train"), ROWS[1]),
        ("hf-static", "prefill"): fit_efficiency(("hf-static", "prefill"), ROWS[2]),
        ("hf-generate", "decode"): fit_decode("hf-generate", ROWS[3:5]),
        ("hf-static", "decode"): fit_decode("hf-static", ROWS[5:7]),
    }
    factors = {**FACTORS, **fitted, ("hf-generate", "prefill"): fitted[("hf-static", "prefill")]}
    print(f"{'row':26} {'tokens/s':>18} {'W':>14}   (warm chip: {WARM_S:g} s first)")
    for r in ROWS:
        tps, w = measure(r.workload, factors)
        print(f"{r.label:26} {tps:9.0f} ({tps / r.tokens_per_s - 1:+5.1%}) {w:6.0f} ({w / r.power_w - 1:+5.1%})")
    for key, f in fitted.items():
        print(f"{key}: {f}")


if __name__ == "__main__":
    main()
