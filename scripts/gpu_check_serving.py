"""gpu_check section for serving under load (issue 15): `tokbench sweep --observe` of the
serve-vllm-8b profile at the GPU's current setting, one concurrency list. tokbench starts vLLM
(dummy weights, nothing downloaded) on the GPU, drives it, and stops it. Observe-only: --observe
forbids every setting change. vLLM's start (weights, CUDA graphs) takes minutes, so run this section
on its own with a budget to match:

    python scripts/gpu_check.py --only serving_observe --budget-s 540
"""

from __future__ import annotations

import shutil

from gpu_check_sweep import COLUMNS, _observe

SERVING_COLUMNS = [*COLUMNS, "output_tokens_per_s", "tokens_per_s_per_user", "ttft_ms_p99", "tpot_ms_p99",
                   "itl_ms_p50", "e2e_ms_p50", "goodput_rps", "requests_ok", "requests_errors", "mean_in_flight"]


def section_serving_observe(ctx: dict) -> dict:
    """serve-vllm-8b at concurrency 1, 16 and 64, the current setting, 10 s windows."""
    if shutil.which("vllm") is None:
        return {"skipped": "vllm is not installed on this node (it has its own environment on GPU nodes)"}
    return _observe("serve-vllm-8b", ["--batch-sizes", "1,16,64"], ctx["timeout_s"] - 5, columns=SERVING_COLUMNS)


SECTIONS = [
    ("serving_observe", 480.0, section_serving_observe),
]
