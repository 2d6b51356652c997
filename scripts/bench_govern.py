"""Benchmark: `tokbench govern` answering a shed event on simulated H100s.

Two simulated H100s run a job at Max-P; at t = 10 s a shed event asks for a fraction of the
node's reference power (both GPUs at the default setting) for 30 s, then ends. Measured:

* response time: event start -> the node's 1 s mean power (the part's 100 ms instant-power
  telemetry, both GPUs) is at or below the target and stays there for the rest of the event
  (target, issue 17: 2 s plus the part's telemetry lag);
* tokens the job delivered during the event, and the worst 1 s mean power / target from 2.5 s
  after the event start to its end,
  for the governor (curve + closed loop) and for the naive policy "cap every GPU at the same
  fraction of its default setting" applied at the event start.

Two workloads: training on the power-limit knob (the reference curve profiles/curves/
h100-train-llama-1b.json) and batch-64 decode on the SM-clock knob (a curve made here by a
simulated sweep and `tokbench export`, ~1 min).

    python scripts/bench_govern.py [--fractions 0.8,0.6,0.4] [--skip-decode]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.devices import open_devices  # noqa: E402
from harness.govern.menu import Menu  # noqa: E402
from harness.govern.run import GovernOptions, run_governor  # noqa: E402
from harness.govern.signals import Directive  # noqa: E402
from harness.records.curves import load_curve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 15, 17, 0, tzinfo=UTC)
PRE_S, EVENT_S, POST_S = 10.0, 30.0, 5.0
#: the response the issue allows: 2 s plus the part's telemetry lag (H100: 100 ms field refresh,
#: rounded up to 0.5 s); the worst 1 s mean is taken from then on
ALLOWED_S = 2.5


class Event:
    """No constraint, then ``target_w`` (governor) or ``settings`` (naive) for EVENT_S."""

    name = "bench-event"

    def __init__(self, target_w: float | None = None, settings: tuple[float, ...] | None = None) -> None:
        self.target_w, self.settings = target_w, settings

    def poll(self, now: datetime) -> Directive:
        s = (now - T0).total_seconds()
        if PRE_S <= s < PRE_S + EVENT_S:
            return Directive(self.name, "event", target_w=self.target_w, settings=self.settings)
        return Directive(self.name, "no event")

    def close(self) -> None:
        pass


@dataclass
class Outcome:
    response_s: float | None
    worst_ratio: float  # worst 1 s mean from ALLOWED_S after the event start to its end / target
    mean_w: float
    tokens: float


def run(curve: str, job: str, phase: str | None, batch: int | None, sig: Event, target_w: float,
        state: Path) -> Outcome:
    samples: list[tuple[float, float]] = []

    def on_start(devices) -> None:
        node = devices[0].clock
        node.call_every(0.1, lambda t: samples.append((t, sum(d.sensors.instant_w for d in devices))))

    os.environ["TOKBENCH_SIM_STATE_DIR"] = str(state / "sim")
    os.environ["TOKBENCH_STATE_DIR"] = str(state / "tokbench")
    r = run_governor(GovernOptions(curve=curve, job=job, phase=phase, batch_size=batch, backend="sim", sim_count=2,
                                   duration_s=PRE_S + EVENT_S + POST_S, start=T0.isoformat(), log=None),
                     signal=sig, on_start=on_start)
    t0 = r.rows[0].t_s
    t_ev, t_end = t0 + PRE_S, t0 + PRE_S + EVENT_S
    t = np.array([s[0] for s in samples])
    p = np.array([s[1] for s in samples])
    # 1 s means (10 samples of the 100 ms instant field), ending at each sample
    mean1 = np.convolve(p, np.ones(10) / 10, mode="full")[: len(p)]
    inside = (t >= t_ev) & (t <= t_end)
    ok = mean1 <= target_w
    response = None
    idx = np.flatnonzero(inside)
    for k in idx:
        if ok[k: idx[-1] + 1].all():
            response = t[k] - t_ev
            break
    after = inside & (t >= t_ev + ALLOWED_S)
    tok = np.array([d.tokens for d in r.rows])
    ts = np.array([d.t_s for d in r.rows])
    tokens = float(np.interp(t_end, ts, tok) - np.interp(t_ev, ts, tok))
    return Outcome(response, float(mean1[after].max() / target_w), float(p[inside].mean()), tokens)


def decode_curve(work: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKBENCH_SIM_STATE_DIR": str(work / "sim"),
           "TOKBENCH_STATE_DIR": str(work / "st")}
    cli = [sys.executable, "-m", "harness.cli"]
    subprocess.run([*cli, "sweep", "--profile", "decode-llama-1b", "--knob", "sm-clock", "--backend", "sim",
                    "--batch-sizes", "64", "--points", "10", "--repeats", "1", "--window", "5", "--warmup-min", "2",
                    "--out", str(work / "runs"), "--run-id", "decode"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = work / "decode-curve.json"
    subprocess.run([*cli, "export", str(work / "runs" / "decode"), "--out", str(out)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fractions", default="0.8,0.6,0.4")
    ap.add_argument("--skip-decode", action="store_true")
    args = ap.parse_args()
    fractions = [float(x) for x in args.fractions.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cases = [("train, power limit", str(ROOT / "profiles/curves/h100-train-llama-1b.json"), "train-llama-1b",
                  None, None)]
        if not args.skip_decode:
            cases.append(("decode b64, SM clock", decode_curve(work), "decode-llama-1b", "decode", 64))
        print("| workload | shed to | target W | policy | response s | worst 1 s mean / target | mean W "
              "| tokens in event | vs governor | tokens/J |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, curve, job, phase, batch in cases:
            os.environ["TOKBENCH_SIM_STATE_DIR"] = str(work / "probe")
            menu = Menu.from_curve(load_curve(Path(curve)), open_devices("sim").devices[0], phase, batch)
            reference = 2 * menu.at(menu.default_setting).power_w
            for k, f in enumerate(fractions):
                target = f * reference
                naive_setting = max(menu.settings[0], f * menu.default_setting)
                gov = run(curve, job, phase, batch, Event(target_w=target), target, work / f"g{label[:5]}{k}")
                nai = run(curve, job, phase, batch, Event(settings=(naive_setting,) * 2), target,
                          work / f"n{label[:5]}{k}")
                for name, o in (("governor", gov), (f"naive ({naive_setting:.0f} each)", nai)):
                    resp = "never" if o.response_s is None else f"{o.response_s:.1f}"
                    print(f"| {label} | {f:.0%} | {target:.0f} | {name} | {resp} | {o.worst_ratio:.3f} | "
                          f"{o.mean_w:.0f} | {o.tokens:.4g} | {o.tokens / gov.tokens - 1:+.1%} | "
                          f"{o.tokens / (o.mean_w * EVENT_S):.1f} |", flush=True)


if __name__ == "__main__":
    main()
