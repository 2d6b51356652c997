"""Tokenomics: Max-Q under a latency target equals a brute-force search and never breaks the target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.errors import UsageError
from harness.readers.analysis import analyse
from harness.testing.synthetic import DECODE, PREFILL, SynthRun, fabricate_run

RUN = SynthRun(phases=(PREFILL, DECODE), batches=(1, 4, 16, 64), kind="inference",
               settings=(200.0, 300.0, 400.0, 500.0, 600.0, 700.0), repeats=3, samples_per_point=0, seed=21)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return fabricate_run(tmp_path_factory.mktemp("lat"), RUN, "inf")


def brute_force(points: pd.DataFrame, tpot_ms: float, ttft_ms: float | None):
    """Straight from points.csv: every repeat of a (setting, batch) meets the target; most tokens/J."""
    dec = points[points.phase == "decode"]
    pre = points[points.phase == "prefill"]
    best = None
    for (setting, batch), g in dec.groupby(["setting", "batch_size"]):
        if g.tpot_ms.max() > tpot_ms:
            continue
        if ttft_ms is not None:
            p = pre[(pre.setting == setting) & (pre.batch_size == batch)]
            if p.ttft_ms.max() > ttft_ms:
                continue
        tpj = g.tokens_per_j.mean()
        if best is None or tpj > best[2]:
            best = (setting, batch, tpj, g.tokens_per_s.mean())
    return best


@pytest.mark.parametrize("tpot_ms", [1.0, 2.5, 4.0, 8.0, 1000.0])
@pytest.mark.parametrize("ttft_ms", [None, 60.0, 300.0])
def test_latency_max_q_equals_brute_force_and_meets_the_target(run_dir, tpot_ms, ttft_ms):
    a = analyse(run_dir, tpot_ms=tpot_ms, ttft_ms=ttft_ms)
    lat = a.tokenomics.latency
    expect = brute_force(a.run.points, tpot_ms, ttft_ms)
    if expect is None:
        assert lat.max_q is None and "no (setting, batch) meets" in lat.sentence
        return
    q = lat.max_q
    assert (q.setting, q.batch_size) == expect[:2]
    assert q.tokens_per_j == pytest.approx(expect[2])
    rows = a.run.points[(a.run.points.setting == q.setting) & (a.run.points.batch_size == q.batch_size)]
    assert rows[rows.phase == "decode"].tpot_ms.max() <= tpot_ms
    if ttft_ms is not None:
        assert rows[rows.phase == "prefill"].ttft_ms.max() <= ttft_ms
    # Max-P within the same target: at least as fast (or Max-Q's speed cannot be told from the best: Max-Q lies in
    # the Max-P range of its batch, the lowest setting of which is Max-P), never more efficient
    same_speed = lat.max_p.batch_size == q.batch_size and q.setting in lat.max_p_range.settings
    assert lat.max_p.tokens_per_s >= q.tokens_per_s or same_speed
    assert lat.max_p.tokens_per_j <= q.tokens_per_j
    assert lat.throughput_given_up == pytest.approx(1 - q.tokens_per_s / lat.max_p.tokens_per_s)


def test_tighter_targets_cost_efficiency(run_dir):
    tpj = [analyse(run_dir, tpot_ms=t).tokenomics.latency.max_q.tokens_per_j for t in (4.0, 8.0, 15.0, 1000.0)]
    assert tpj == sorted(tpj) and tpj[-1] > tpj[0]


def test_frontier_per_setting_and_overall(run_dir):
    tk = analyse(run_dir).tokenomics
    assert tk.phase == "decode" and tk.latency is None
    by = tk.by_setting()
    assert sorted(by) == list(RUN.settings)
    for pts in by.values():
        assert [p.batch_size for p in pts] == [64, 16, 4, 1]  # per-user speed rises as the batch falls
    front = tk.frontier()
    for p in tk.points:  # nothing beats a frontier point on both axes
        assert not any(o.tokens_per_s > p.tokens_per_s and o.tokens_per_s_per_user > p.tokens_per_s_per_user
                       for o in front) or p not in front
    assert np.all(np.diff([p.tokens_per_s for p in front]) > 0)


def test_latency_targets_on_a_training_run_are_refused(tmp_path):
    path = fabricate_run(tmp_path, SynthRun(samples_per_point=0, repeats=2))
    with pytest.raises(UsageError, match="no time per output token"):
        analyse(path, tpot_ms=20.0)
    assert analyse(path).tokenomics is None


def test_ttft_needs_tpot(run_dir):
    with pytest.raises(UsageError, match="--ttft-ms needs --tpot-ms"):
        analyse(run_dir, ttft_ms=100.0)
