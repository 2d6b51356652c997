"""Max-P / Max-Q ranges, flatness, knee, Pareto and savings on fabricated runs whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from harness.readers.analysis import analyse
from harness.testing.synthetic import DECODE, TRAIN, SynthRun, fabricate_run, true_max_q

STEP = 25.0
SETTINGS = tuple(np.arange(200.0, 701.0, STEP))


def _train(tmp_path, seed: int, repeats: int = 3, **kw):
    return analyse(fabricate_run(tmp_path, SynthRun(settings=SETTINGS, repeats=repeats, seed=seed,
                                                    samples_per_point=0, **kw), f"train-{seed}-{repeats}"))


@pytest.mark.parametrize(("repeats", "widest"), [(1, 300.0), (3, 200.0), (6, 150.0)])
def test_max_q_keeps_99pct_of_the_true_peak_and_contains_the_true_max_q(tmp_path, repeats, widest):
    peak = max(TRAIN.tokens_per_j_at(s) for s in SETTINGS)
    grid_best = SETTINGS[int(np.argmax([TRAIN.tokens_per_j_at(s) for s in SETTINGS]))]
    cont_best = true_max_q(TRAIN, 200.0, 700.0)
    widths = []
    for seed in range(6):
        c = _train(tmp_path, seed, repeats).curve("train")
        assert TRAIN.tokens_per_j_at(c.max_q.best) >= 0.99 * peak, (seed, c.max_q)
        assert c.max_q.lo <= grid_best <= c.max_q.hi, (seed, c.max_q)
        assert c.max_q.lo - STEP <= cont_best <= c.max_q.hi + STEP
        assert c.max_q.hi - c.max_q.lo <= widest  # a range, not the whole sweep
        widths.append(c.max_q.hi - c.max_q.lo)
        methods = {s.tokens_per_j.method for s in c.stats}
        assert methods == {"bootstrap" if repeats >= 5 else "pooled"}
    print(repeats, widths)


def test_compute_bound_max_p_is_the_top_setting_and_the_curve_binds(tmp_path):
    for seed in range(11, 15):
        c = _train(tmp_path, seed).curve("train")
        # every cap below max costs throughput: 675 W loses 2.3%, about the noise (1% x 3 repeats)
        assert c.max_p.best >= 675.0 and c.max_p.hi == 700.0
        assert TRAIN.tokens_per_s_at(c.max_p.best) >= 0.97 * TRAIN.tokens_per_s_at(700.0)
        assert c.flat.binds
        assert ("binds across the range" in c.flat.sentence if c.max_p.best == 700.0
                else "the cap binds there but costs less than the noise" in c.flat.sentence)
    assert c.knee is not None and 300.0 < c.knee.setting < 600.0
    assert c.knee.slope_below > c.knee.slope_above > 0


def test_flat_decode_is_reported_flat_with_the_setting_above_which_the_cap_does_not_bind(tmp_path):
    run = SynthRun(phases=(DECODE,), batches=(64,), kind="inference", settings=tuple(np.arange(200.0, 701.0, 50.0)),
                   repeats=3, samples_per_point=0)
    draw = DECODE.natural_draw(64)
    for seed in range(4):
        c = analyse(fabricate_run(tmp_path, run.with_(seed=seed), f"dec{seed}")).curve("decode", 64)
        assert c.flat.flat and not c.flat.binds
        assert draw - 50.0 <= c.flat.above <= draw + 50.0, c.flat
        assert f"the cap does not bind above {c.flat.above:.0f} W" in c.flat.sentence
        assert c.flat.draw_w == pytest.approx(draw, rel=0.03)
        assert c.max_p.best == c.flat.above  # Max-P: the lowest setting that loses nothing
        assert c.max_p.hi == 700.0


def test_a_curve_that_never_binds_says_so(tmp_path):
    run = SynthRun(phases=(DECODE,), batches=(1,), kind="inference", settings=(300.0, 400.0, 500.0, 600.0, 700.0),
                   repeats=3, samples_per_point=0, seed=4)
    c = analyse(fabricate_run(tmp_path, run)).curve("decode", 1)
    assert c.flat.flat and c.flat.above == 300.0
    assert "does not bind anywhere in the range (300-700 W)" in c.flat.sentence


def test_flagged_points_are_left_out_unless_asked(tmp_path):
    run = SynthRun(settings=SETTINGS, repeats=3, seed=5, samples_per_point=0)
    clean = analyse(fabricate_run(tmp_path, run, "clean")).curve("train")
    # point 8 is setting 400 W, repeat 0 (settings run low to high per repeat); spoiled by 40%
    bad_run = run.with_(flagged={8: "temp_drift;hw_slowdown"})
    bad_dir = fabricate_run(tmp_path, bad_run, "bad")
    a = analyse(bad_dir)
    s = a.curve("train").at(400.0)
    assert s.n == 2 and s.n_flagged == 1
    assert len(a.flagged) == 1 and a.flagged.iloc[0]["flags"] == "temp_drift;hw_slowdown"
    assert s.tokens_per_s.mean == pytest.approx(clean.at(400.0).tokens_per_s.mean, rel=0.03)
    with_bad = analyse(bad_dir, include_flagged=True).curve("train").at(400.0)
    assert with_bad.n == 3 and with_bad.tokens_per_s.mean < 0.9 * s.tokens_per_s.mean
    assert set(with_bad.flags) == {"temp_drift", "hw_slowdown"}


def test_savings_against_the_default_and_pareto_frontier(tmp_path):
    c = _train(tmp_path, 7).curve("train")
    d = c.vs_default
    q, top = c.at(c.max_q.best), c.at(700.0)
    assert d.measured and d.default_setting == 700.0
    assert d.throughput_kept == pytest.approx(q.tokens_per_s.mean / top.tokens_per_s.mean)
    assert d.energy_saved == pytest.approx(1 - top.tokens_per_j.mean / q.tokens_per_j.mean)
    assert 0.1 < d.energy_saved < 0.3 and 0.4 < d.throughput_kept < 0.6
    brute = [s.setting for s in c.stats if not any(
        o.tokens_per_s.mean >= s.tokens_per_s.mean and o.tokens_per_j.mean >= s.tokens_per_j.mean and o is not s
        and (o.tokens_per_s.mean > s.tokens_per_s.mean or o.tokens_per_j.mean > s.tokens_per_j.mean)
        for o in c.stats)]
    assert list(c.pareto) == brute
    assert 700.0 in c.pareto and c.max_q.top in c.pareto


def test_several_gpus_pool_and_one_can_be_picked(tmp_path):
    path = fabricate_run(tmp_path, SynthRun(settings=SETTINGS[::4], repeats=2, gpus=2, samples_per_point=0, seed=9))
    pooled = analyse(path).curve("train")
    one = analyse(path, gpu=1).curve("train")
    assert pooled.stats[0].n == 4 and one.stats[0].n == 2
    from harness.errors import UsageError

    with pytest.raises(UsageError, match="no GPU 5"):
        analyse(path, gpu=5)


def test_one_setting_is_no_curve(tmp_path):
    run = SynthRun(settings=(700.0,), repeats=3, samples_per_point=0, knob="observe", seed=6)
    a = analyse(fabricate_run(tmp_path, run))
    c = a.curve("train")
    assert c.flat.single and c.flat.short == "one setting" and c.knee is None
    assert "observe-only run" in c.flat.sentence and "no curve to read" in c.flat.sentence
    assert c.max_p.best == c.max_q.best == 700.0
    assert c.vs_default.measured and c.vs_default.throughput_kept == 1.0


def test_four_unrepeated_settings_give_no_noise_from_their_curvature():
    """A fleet board's 1-repeat, 4-setting training curve (700/533/367/200 W): its two second differences
    differ by the change of curvature, not noise; read as noise they called 200 W at half speed 'cannot be
    told' from 700 W and made it Max-P."""
    from harness.readers.ranges import max_p_range
    from harness.readers.stats import pooled_noise

    means = np.array([26_416.0, 51_545.0, 60_367.0, 64_940.0])
    groups = [np.array([m]) for m in means]
    assert pooled_noise(groups, means) == (None, 0.0)
    five = np.array([26_416.0, 45_000.0, 51_545.0, 60_367.0, 64_940.0])
    sigma, df = pooled_noise([np.array([m]) for m in five], five)
    assert sigma is not None and df == 3.0

    class Stat:
        def __init__(self, setting: float, tps: float) -> None:
            self.setting, self.n = setting, 1
            self.tokens_per_s = type("M", (), {"mean": tps})()

    stats = [Stat(s, m) for s, m in zip((200.0, 366.7, 533.3, 700.0), means)]
    assert max_p_range(stats, {s.setting: np.array([s.tokens_per_s.mean]) for s in stats}).best == 700.0
