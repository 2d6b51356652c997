"""The calibrated fit: monotone, through the measured points within their noise, nothing beyond the range."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.readers.analysis import analyse
from harness.readers.fit import fit_grid, monotone_fit
from harness.testing.synthetic import DECODE, TRAIN, SynthRun, fabricate_run


@pytest.mark.parametrize("phase", [TRAIN, DECODE])
def test_fit_is_monotone_and_within_the_noise_of_every_point(tmp_path, phase):
    run = SynthRun(phases=(phase,), batches=(64,), kind="training" if phase is TRAIN else "inference",
                   settings=tuple(np.arange(200.0, 701.0, 25.0)), repeats=3, samples_per_point=0, seed=8)
    c = analyse(fabricate_run(tmp_path, run)).curve(phase.name)
    grid = np.linspace(200.0, 700.0, 2001)
    for f in (c.fit_tokens_per_s, c.fit_power_w, c.fit_power_p99_w, c.fit_power_max_1s_w):
        assert np.all(np.diff(f(grid)) >= -1e-9)
    # through the points: every residual within 3 standard errors of that point's mean (the curve's
    # noise, pooled over its settings: three repeats alone say little about their own spread)
    sigma = np.sqrt(np.mean([s.tokens_per_s.std ** 2 for s in c.stats]))
    for s, r in zip(c.stats, c.fit_tokens_per_s.residuals):
        assert abs(r) <= 3 * sigma / np.sqrt(s.n), (s.setting, r)
    assert np.mean(np.abs(c.fit_tokens_per_s.residuals)) <= sigma
    # and close to the truth: within 2% everywhere
    truth = np.array([phase.tokens_per_s_at(x, 64) for x in grid])
    assert np.max(np.abs(c.fit_tokens_per_s(grid) / truth - 1)) < 0.02


def test_no_extrapolation_beyond_the_measured_range(tmp_path):
    run = SynthRun(settings=(300.0, 400.0, 500.0, 600.0), repeats=2, samples_per_point=0)
    c = analyse(fabricate_run(tmp_path, run)).curve("train")
    with pytest.raises(ValueError, match="no extrapolation"):
        c.fit_tokens_per_s([250.0])
    with pytest.raises(ValueError, match="no extrapolation"):
        c.fit_power_w([700.0])
    assert fit_grid(300.0, 600.0, c.settings).min() == 300.0 and fit_grid(300.0, 600.0, c.settings).max() == 600.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1e5, allow_nan=False), min_size=2, max_size=25))
def test_fit_never_wiggles(values):
    x = np.arange(len(values), dtype=float) * 25.0 + 200.0
    f = monotone_fit(x, values)
    dense = f(np.linspace(x[0], x[-1], 500))
    assert np.all(np.diff(dense) >= -1e-6 * max(1.0, max(values)))
    assert dense.min() >= min(values) - 1e-6 and dense.max() <= max(values) + 1e-6
    if all(b >= a for a, b in zip(values, values[1:])):  # already monotone: passes through every point
        assert np.allclose(f(x), values)
