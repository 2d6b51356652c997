"""Write profiles/curves/h100-train-llama-1b.json: a *reference* curve, not a measurement.

It stands in until a simulated sweep regenerates it, so that `tokbench plan` runs out of the box.
Shape (CALIBRATION.md): compute-bound 1.1 B Llama training on an H100 SXM at ~66,000 tokens/s and
~688 W mean under the 700 W cap; every lower cap binds (mean draw ≈ 0.983 × cap), throughput keeps
~97% at 86% of max, ~85% at 57%, ~64% at 40%; tokens/J peaks near 250 W. Throughput follows a
saturating law in power, 1 - exp(-(P - 90 W) / 180 W); p99 of 50 Hz samples sits 3% above the
cap and the highest 1 s average 0.5% above it (caps act on ~1 s averages).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.records.curves import (
    CurveFile,
    CurveFit,
    CurvePoint,
    PartIdentity,
    Provenance,
    WorkloadIdentity,
    save_curve,
)  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "profiles" / "curves" / "h100-train-llama-1b.json"


def main() -> None:
    caps = np.arange(200.0, 701.0, 50.0)
    mean = 0.983 * caps

    def g(p: np.ndarray) -> np.ndarray:
        return 1.0 - np.exp(-(p - 90.0) / 180.0)

    tps = 66_000.0 * g(mean) / g(np.array(0.983 * 700.0))
    p99, max1 = 1.03 * caps, 1.005 * caps
    points = [
        CurvePoint(
            setting=float(c),
            enforced=float(c),
            phase="train",
            batch_size=8,
            repeats=3,
            tokens_per_s=round(float(t), 1),
            tokens_per_j=round(float(t / m), 3),
            power_mean_w=round(float(m), 1),
            power_p99_w=round(float(q), 1),
            power_max_1s_w=round(float(x), 1),
        )
        for c, t, m, q, x in zip(caps, tps, mean, p99, max1, strict=True)
    ]
    fit = CurveFit(
        phase="train",
        batch_size=8,
        method="reference (analytic, simulated)",
        settings=[float(c) for c in caps],
        tokens_per_s=[p.tokens_per_s for p in points],
        power_mean_w=[p.power_mean_w for p in points],
        power_p99_w=[p.power_p99_w for p in points],
        power_max_1s_w=[p.power_max_1s_w for p in points],
    )
    curve = CurveFile(
        knob="power_limit_w",
        part=PartIdentity(
            name="NVIDIA H100 80GB HBM3 (simulated reference)",
            architecture="hopper",
            backend="sim",
            power_limit_min_w=200.0,
            power_limit_max_w=700.0,
            power_limit_default_w=700.0,
            max_sm_clock_mhz=1980,
        ),
        workload=WorkloadIdentity(
            name="train-llama-1b",
            kind="training",
            engine="torch",
            model="llama-1.1b (hidden 2048, 16 layers)",
            precision="bf16",
            batch_size=8,
            seq_len=2048,
            params=1_104_000_000,
        ),
        idle_power_w=72.5,
        points=points,
        fits=[fit],
        provenance=Provenance(
            tool_version="0.1.0",
            run_ids=["reference-simulated"],
            created="2026-11-27T00:00:00Z",
            host="none: simulated reference curve",
            command="python scripts/make_reference_curve.py (simulated reference, "
            "not measured; to be regenerated from a simulated sweep)",
        ),
    )
    save_curve(curve, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
