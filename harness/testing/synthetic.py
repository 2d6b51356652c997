"""Run directories fabricated from a known, noisy model, so readers can be tested against the truth.

The model is deliberately simple and closed-form (the simulated GPUs in ``harness.devices`` are
the physical model): a phase draws ``min(cap, its own draw)`` watts, and its throughput falls as
``((drawn - static) / (draw - static)) ** exponent`` once the cap binds, so tokens/J peaks at
``static / (1 - exponent)`` watts when that lies inside the range. Decode draws less than any
useful cap, so its curve is flat above its own draw. Repeats carry multiplicative noise. Tests and
``scripts/bench_report.py`` use this; end-to-end tests use real simulated sweeps instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from harness.records.manifest import build_manifest
from harness.records.rundir import POINT_COLUMNS, Point, RunDir


@dataclass(frozen=True)
class SynthPhase:
    """Throughput and power of one phase against the cap (and the batch, for inference)."""

    name: str
    tokens_per_s: float  # per GPU at full draw, batch ``batch_half`` gives half of it
    draw_w: float  # what the phase draws when nothing caps it (at the largest batch)
    static_w: float  # power that buys no throughput
    exponent: float = 0.5
    batch_half: float = 0.0  # 0: batch does not matter (training)
    ttft_s_per_seq: float = 0.0  # prefill: time to first token per sequence in the batch

    def draw(self, cap_w: float, batch: int = 1) -> float:
        return float(min(cap_w, self.natural_draw(batch)))

    def natural_draw(self, batch: int = 1) -> float:
        if not self.batch_half:
            return self.draw_w
        share = batch / (batch + self.batch_half)
        return self.static_w + 20.0 + (self.draw_w - self.static_w - 20.0) * share

    def speed(self, cap_w: float, batch: int = 1) -> float:
        """Share of full speed kept under the cap."""
        d = self.natural_draw(batch)
        p = self.draw(cap_w, batch)
        return float(((p - self.static_w) / (d - self.static_w)) ** self.exponent) if p > self.static_w else 0.0

    def tokens_per_s_at(self, cap_w: float, batch: int = 1) -> float:
        share = batch / (batch + self.batch_half) if self.batch_half else 1.0
        return self.tokens_per_s * share * self.speed(cap_w, batch)

    def tokens_per_j_at(self, cap_w: float, batch: int = 1) -> float:
        return self.tokens_per_s_at(cap_w, batch) / self.draw(cap_w, batch)


@dataclass(frozen=True)
class SynthPart:
    name: str = "NVIDIA H100 80GB HBM3 (synthetic)"
    architecture: str = "Hopper"
    min_w: float = 200.0
    max_w: float = 700.0
    default_w: float = 700.0
    max_sm_clock_mhz: int = 1980
    idle_w: float = 72.5


H100 = SynthPart()
A100 = SynthPart(name="NVIDIA A100-SXM4-80GB (synthetic)", architecture="Ampere", min_w=100.0, max_w=400.0,
                 default_w=400.0, max_sm_clock_mhz=1410, idle_w=55.0)
#: compute-bound training: the cap binds everywhere; tokens/J peaks at static / (1 - exponent) = 300 W
TRAIN = SynthPhase("train", tokens_per_s=60000.0, draw_w=700.0, static_w=150.0, exponent=0.5)
PREFILL = SynthPhase("prefill", tokens_per_s=190000.0, draw_w=700.0, static_w=150.0, exponent=0.5,
                     batch_half=4.0, ttft_s_per_seq=0.011)
#: memory-bound decode: draws 310 W at the largest batch, so a cap above that does not bind
DECODE = SynthPhase("decode", tokens_per_s=14000.0, draw_w=310.0, static_w=150.0, exponent=0.5, batch_half=32.0)


@dataclass(frozen=True)
class SynthRun:
    part: SynthPart = H100
    phases: tuple[SynthPhase, ...] = (TRAIN,)
    settings: tuple[float, ...] = tuple(np.arange(200.0, 701.0, 50.0))
    batches: tuple[int, ...] = (8,)
    repeats: int = 3
    noise_rel: float = 0.01
    power_noise_rel: float = 0.004
    gpus: int = 1
    seconds: float = 5.0
    samples_per_point: int = 200
    kind: str = "training"
    knob: str = "power_limit_w"
    #: point indices to flag, with the flag names (their numbers are also spoiled, as real ones are)
    flagged: dict[int, str] = field(default_factory=dict)
    seed: int = 0
    model: str = "llama-1b"
    precision: str = "bf16"

    def with_(self, **kw) -> SynthRun:
        return replace(self, **kw)


def _manifest(run: SynthRun, run_id: str) -> dict:
    p = run.part
    devices = [
        {"index": i, "uuid": f"GPU-synth-{i:04d}", "pci_bus_id": f"00000000:{i:02X}:00.0", "name": p.name,
         "architecture": p.architecture, "driver": "synthetic", "memory_total_mb": 81559,
         "max_sm_clock_mhz": p.max_sm_clock_mhz, "max_mem_clock_mhz": 2619, "backend": "sim",
         "capabilities": {}, "part": "synthetic",
         "power_limits": {"min_w": p.min_w, "max_w": p.max_w, "default_w": p.default_w}}
        for i in range(run.gpus)
    ]
    workload = {"name": f"synthetic-{run.kind}", "kind": run.kind, "engine": "sim", "model": run.model,
                "precision": run.precision, "batch_size": max(run.batches), "seq_len": 2048 if run.kind == "training"
                else 0, "input_len": 0 if run.kind == "training" else 512,
                "output_len": 0 if run.kind == "training" else 256, "params": 1_104_000_000, "extra": {}}
    return build_manifest(run_id=run_id, backend="sim", knob=run.knob, devices=devices, workload=workload,
                          comparison={"gpu_model": p.name, "driver": "synthetic", "workload": workload["name"],
                                      "precision": run.precision},
                          profile={"name": "synthetic"}, command_line=["synthetic"], host={"hostname": "synthetic"},
                          start_utc="2026-01-01T00:00:00+00:00",
                          idle_power_w={str(i): p.idle_w for i in range(run.gpus)})


def fabricate_run(root: Path, run: SynthRun, run_id: str = "synth") -> Path:
    """Write ``root/run_id`` in a sweep's format: ``RunDir`` creates it (manifest, points header),
    then the rows go to points.csv and, unless ``samples_per_point`` is 0, each point's polls and
    50 Hz power history to ``RunDir.samples_path``. Written in bulk without a sweep's per-point
    fsync: fabricated test data need no durability. Returns the run directory."""
    rng = np.random.default_rng(run.seed)
    rd = RunDir.create(Path(root), run_id, _manifest(run, run_id))
    t0 = 0.0
    idx = 0
    rows = []
    order = [(r, s, b) for r in range(run.repeats) for s in run.settings for b in run.batches]
    try:
        for repeat, setting, batch in order:
            for gpu in range(run.gpus):
                for ph in run.phases:
                    row, tel, hist = _point(run, ph, setting, batch, repeat, gpu, idx, t0, rng)
                    rows.append(Point(**row))
                    if run.samples_per_point:
                        pd.concat([tel.assign(source="poll"), hist.assign(source="history", gpu_index=gpu)],
                                  ignore_index=True).to_parquet(rd.samples_path(idx), index=False)
                    t0 = row["window_end_s"] + 1.0
                    idx += 1
        pd.DataFrame([[getattr(p, c) for c in POINT_COLUMNS] for p in rows]).to_csv(
            rd.path / "points.csv", mode="a", header=False, index=False)
        rd.update_manifest(status="complete")
    finally:
        rd.close()
    return rd.path


def _point(run: SynthRun, ph: SynthPhase, setting: float, batch: int, repeat: int, gpu: int, idx: int,
           t0: float, rng: np.random.Generator) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    tps = ph.tokens_per_s_at(setting, batch) * (1 + run.noise_rel * rng.standard_normal())
    watts = ph.draw(setting, batch) * (1 + run.power_noise_rel * rng.standard_normal())
    flag = run.flagged.get(idx, "")
    if flag:  # a spoiled window: throughput collapsed while power stayed
        tps *= 0.6
    secs = run.seconds
    tokens = int(round(tps * secs))
    joules = watts * secs
    binds = setting < ph.natural_draw(batch) * 0.999
    clock = run.part.max_sm_clock_mhz * (0.55 + 0.45 * ph.speed(setting, batch))
    per_user = tps / batch if ph.batch_half else None
    row = {c: None for c in POINT_COLUMNS}
    row.update(
        point_index=idx, gpu_index=gpu, gpu_uuid=f"GPU-synth-{gpu:04d}", knob=run.knob, setting=setting,
        enforced=setting, batch_size=batch, phase=ph.name, repeat=repeat, window_start_s=t0,
        window_end_s=t0 + secs, seconds=secs, steps=100, input_tokens=tokens if ph.name != "decode" else 0,
        output_tokens=tokens if ph.name == "decode" else 0, tokens=tokens, joules=joules,
        joules_integrated=joules * 0.999, true_joules=joules, energy_source="counter", power_mean_w=watts,
        power_p99_w=watts * 1.04, power_max_1s_w=watts * 1.02, sm_clock_mean_mhz=clock, mem_clock_mean_mhz=2619.0,
        temp_start_c=55.0, temp_end_c=56.0, warmup_s=3.0, tokens_per_s=tokens / secs, tokens_per_j=tokens / joules,
        j_per_token=joules / max(tokens, 1),
        ttft_ms=ph.ttft_s_per_seq * batch * 1000.0 / max(ph.speed(setting, batch), 1e-3) if ph.ttft_s_per_seq
        else None,
        tpot_ms=1000.0 / per_user if ph.name == "decode" and per_user else None,
        tokens_per_s_per_user=per_user if ph.name == "decode" else None,
        clock_event_shares=f"sw_power_cap={0.95 if binds else 0.0:.2f}" + (";hw_slowdown=0.30" if flag else ""),
        flags=flag,
    )
    n = max(run.samples_per_point, 5)
    t = t0 + np.linspace(0.0, secs, n, endpoint=False)
    inst = watts * (1 + 0.03 * rng.standard_normal(n))
    tel = pd.DataFrame({
        "t_s": t, "gpu_index": gpu, "power_instant_w": inst,
        "power_average_w": np.convolve(inst, np.ones(5) / 5, mode="same"),
        "sm_clock_mhz": clock + 10 * rng.standard_normal(n), "temperature_c": np.linspace(55.0, 56.0, n),
        "clock_events": np.where(rng.random(n) < (0.95 if binds else 0.0), 0x4, 0).astype("int64"),
    })
    hn = max(2, int(secs * 50)) if run.samples_per_point else 2
    hist = pd.DataFrame({"t_s": t0 + np.arange(hn) * 0.02, "power_w": watts * (1 + 0.03 * rng.standard_normal(hn))})
    return row, tel, hist


def true_max_q(ph: SynthPhase, lo_w: float, hi_w: float, batch: int = 1) -> float:
    """The noise-free setting of most tokens/J in [lo_w, hi_w] (dense search)."""
    grid = np.linspace(lo_w, hi_w, 5001)
    vals = np.array([ph.tokens_per_j_at(g, batch) for g in grid])
    return float(grid[int(np.argmax(vals))])
