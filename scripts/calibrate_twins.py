"""Fit the simulated twins' engine factors to CALIBRATION.md's H100 rows (1B preset, 700 W).

Only the engine factors (efficiency, host time per step, host time per sequence) are fitted; the
simulated GPU's physics is taken as it is. Prints each row's target and reproduction and the
fitted factors to paste into workloads/simulated.py. Run: ``python scripts/calibrate_twins.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from scipy.optimize import least_squares

from workloads.config import WorkloadConfig
from workloads.simulated import FACTORS, EngineFactors, SimWorkload, measure_twin

DECODE = {"name": "inference", "model": "llama-1b", "phases": ["decode"], "input_len": 128, "output_len": 256}


@dataclass(frozen=True)
class Row:
    label: str
    workload: dict
    tokens_per_s: float
    power_w: float


#: CALIBRATION.md, "Measured on a real H100 80GB HBM3 SXM", all at the untouched 700 W limit
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


def measure(workload: dict, factors: dict | None = None, limit_w: float | None = None,
            warm_s: float = 5.0, window_s: float = 10.0) -> tuple[float, float]:
    return measure_twin(WorkloadConfig(**workload), factors=factors, limit_w=limit_w,
                        warm_s=warm_s, window_s=window_s)


def _work_s(workload: dict, eff: float, part: str = "h100-sxm") -> float:
    """GPU time of one decode token step at full clock, averaged over the request's contexts."""
    from harness.devices.catalog import load_part
    from harness.devices.simulated import load_times

    p = load_part(part)
    key = (workload["engine"], "decode")
    wl = SimWorkload(WorkloadConfig(**workload), {**FACTORS, key: replace(FACTORS[key], efficiency=eff)})
    c = wl.config
    total = 0.0
    for i in range(c.output_len):
        t_c, t_m, t_o = load_times(p, wl.decode_load(c.input_len + i), float(p.sm_clock_max_mhz))
        total += max(t_c, t_m) + t_o
    return total / c.output_len


def _fit_decode(engine: str, rows: list[Row]) -> EngineFactors:
    """Decode runs at full clock (far below the cap), so a token step takes host + work time:
    for each efficiency the host time per row follows from the row's tokens/s, a line through
    the rows gives host_s + host_per_seq_s x batch, and the efficiency kept is the one whose
    simulated power is closest to the rows'."""
    (r1, b1), (r2, b2) = [(r, r.workload["batch_size"]) for r in rows]
    best: tuple[float, EngineFactors] | None = None
    for k in range(5, 101):
        eff = k / 100
        hosts = [b / r.tokens_per_s - _work_s(r.workload, eff) for r, b in ((r1, b1), (r2, b2))]
        per_seq = max(0.0, (hosts[1] - hosts[0]) / (b2 - b1))
        base = hosts[0] - per_seq * b1 if per_seq > 0 else (hosts[0] + hosts[1]) / 2
        if base < 0:
            continue
        f = replace(FACTORS[(engine, "decode")], efficiency=eff, host_s=round(base, 7),
                    host_per_seq_s=round(per_seq, 9))
        err = 0.0
        for r in rows:
            tps, w = measure(r.workload, {**FACTORS, (engine, "decode"): f}, warm_s=2.0, window_s=4.0)
            err = max(err, abs(math.log(tps / r.tokens_per_s)), abs(math.log(w / r.power_w)))
        if best is None or err < best[0]:
            best = (err, f)
    if best is None:
        raise SystemExit(f"{engine}: no efficiency reproduces both rows' tokens/s with non-negative host time")
    return best[1]


def _fit_efficiency(key: tuple[str, str], row: Row) -> EngineFactors:
    def residual(x):
        f = {**FACTORS, key: replace(FACTORS[key], efficiency=float(x[0]))}
        return [math.log(measure(row.workload, f, warm_s=5.0, window_s=5.0)[0] / row.tokens_per_s)]

    fit = least_squares(residual, [FACTORS[key].efficiency], bounds=([0.05], [1.0]), diff_step=0.02)
    return replace(FACTORS[key], efficiency=round(float(fit.x[0]), 3))


def main() -> None:
    fitted = {
        ("torch", "train"): _fit_efficiency(("torch", "train"), ROWS[0]),
        ("torch-compile", "train"): _fit_efficiency(("torch-compile", "train"), ROWS[1]),
        ("hf-static", "prefill"): _fit_efficiency(("hf-static", "prefill"), ROWS[2]),
        ("hf-generate", "decode"): _fit_decode("hf-generate", ROWS[3:5]),
        ("hf-static", "decode"): _fit_decode("hf-static", ROWS[5:7]),
    }
    factors = {**FACTORS, **fitted, ("hf-generate", "prefill"): fitted[("hf-static", "prefill")]}
    print(f"{'row':26} {'tokens/s':>18} {'W':>14}")
    for r in ROWS:
        tps, w = measure(r.workload, factors)
        print(f"{r.label:26} {tps:9.0f} ({tps / r.tokens_per_s - 1:+5.1%}) {w:6.0f} ({w / r.power_w - 1:+5.1%})")
    for key, f in fitted.items():
        print(f"{key}: {f}")


if __name__ == "__main__":
    main()
