"""gpu_check section for the sweep (issue 5): `tokbench sweep --observe` of the 1B training and
decode profiles at the GPU's current setting. Observe-only: the sweep changes nothing without
--gpus/--yes, and --observe forbids it outright.

The training run repeats its window three times at the one setting (issue 14): how long each warm-up
lasts (the first from idle, the others on a part already settled, which should end at the minimum)
and how much tokens/J varies from window to window (the noise the Max-Q search's stopping rule and
window length work from)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["phase", "batch_size", "repeat", "setting", "enforced", "warmup_s", "seconds", "tokens_per_s",
           "tokens_per_j", "power_mean_w", "power_p99_w", "power_max_1s_w", "sm_clock_mean_mhz", "temp_start_c",
           "temp_end_c", "ttft_ms", "tpot_ms", "flags"]


def _observe(profile: str, extra: list[str], timeout_s: float, columns: list[str] | None = None,
             repeats: int = 1) -> dict:
    import ctypes.util

    if ctypes.util.find_library("cuda") is None:  # NVML without CUDA (a fake driver in CI): nothing to run on
        return {"skipped": "no CUDA driver library (libcuda)"}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "harness.cli", "sweep", "--observe", "--backend", "nvml", "--profile", profile,
               "--repeats", str(repeats), "--window", "10", "--warmup-min", "3", "--warmup-max", "60", "--out", tmp,
               "--run-id", "observe", *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT)
        out: dict = {"command": " ".join(cmd[2:]), "returncode": r.returncode, "stderr_tail": r.stderr[-2000:]}
        csv = Path(tmp) / "observe" / "points.csv"
        if csv.exists():
            df = pd.read_csv(csv)
            out["points"] = json.loads(df[[c for c in (columns or COLUMNS) if c in df]].to_json(orient="records"))
            out.update(_repeat_summary(df))
        if r.returncode != 0:
            out["failed"] = f"sweep exited {r.returncode}"
        return out


def _repeat_summary(df: pd.DataFrame) -> dict:
    """Per phase and batch with two or more windows: the warm-ups in order and the window-to-window
    coefficient of variation of tokens/J, percent (what --search max-q calls the noise per window)."""
    out = {}
    for (phase, batch), g in df.groupby(["phase", "batch_size"]):
        if len(g) < 2:
            continue
        tpj = g["tokens_per_j"].astype(float)
        out[f"{phase}_b{batch}"] = {"warmup_s": [round(float(v), 2) for v in g["warmup_s"]],
                                    "tokens_per_j_cv_pct": round(float(100 * tpj.std(ddof=1) / tpj.mean()), 3),
                                    "windows": int(len(g))}
    return {"repeats": out} if out else {}


def section_sweep_observe_train(ctx: dict) -> dict:
    """tokbench sweep --observe of train-llama-1b at the current setting, three windows."""
    return _observe("train-llama-1b", [], ctx["timeout_s"] - 5, repeats=3)


def section_sweep_observe_decode(ctx: dict) -> dict:
    """tokbench sweep --observe of decode-llama-1b, batch 1 and 64, at the current setting."""
    return _observe("decode-llama-1b", ["--batch-sizes", "1,64"], ctx["timeout_s"] - 5)


SECTIONS = [
    ("sweep_observe_train", 150.0, section_sweep_observe_train),
    ("sweep_observe_decode", 150.0, section_sweep_observe_decode),
]
