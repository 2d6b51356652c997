"""Steady-state detection on a simulated step change of the power cap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.devices import open_devices
from harness.devices.simulated import Load
from harness.telemetry import Sampler, SteadyState

BAND_PCT = 3.0
HOLD_S = 3.0
#: the stated tolerance: the detected settling point lies within this of the true one
TOLERANCE_S = 0.5


def _work(gpu, seconds):
    t_end = gpu.clock.now() + seconds
    while gpu.clock.now() < t_end:
        gpu.submit(Load(flops=0.05 * 650e12))
        gpu.synchronize()


def test_settling_point_of_a_cap_step_is_found():
    gpu = open_devices("sim", sim_seed=0).devices[0]
    clock = gpu.clock
    truth: list[tuple[float, float, float]] = []
    clock.call_every(0.005, lambda t: truth.append((t, gpu.p_now_w, gpu.f_now_mhz)))
    _work(gpu, 5.0)  # settled at the 700 W cap
    gpu.set_power_limit(350)
    t_step = clock.now()
    ss = SteadyState(band_pct=BAND_PCT, hold_s=HOLD_S, timeout_s=60)
    with Sampler([gpu], rate_hz=20.0) as sampler:
        while clock.now() < t_step + 16:
            _work(gpu, 0.05)
            r = sampler.latest(0)
            ss.update(r.t_s, r.power_instant_w, r.sm_clock_mhz)
    # true settling point: after it, true power and SM clock stay within +-BAND_PCT of their final values
    tr = np.array(truth)
    tr = tr[tr[:, 0] >= t_step]
    settle = t_step
    for k in (1, 2):
        final = tr[-400:, k].mean()
        out = np.flatnonzero(np.abs(tr[:, k] / final - 1) > BAND_PCT / 100)
        if out.size:
            settle = max(settle, tr[out[-1], 0])
    assert settle > t_step + 0.05  # a real transient (the cap controller takes a few hundred ms)
    assert not ss.timed_out
    assert ss.settled_since == pytest.approx(settle, abs=TOLERANCE_S)
    assert ss.settled_at - ss.settled_since == pytest.approx(HOLD_S, abs=0.1)
    assert ss.warmup_s == pytest.approx(ss.settled_at - t_step, abs=0.15)


def test_settling_point_of_an_exponential_is_where_the_band_holds():
    """P = 350 + 350 e^(-t/2) W: the rolling 3 s range falls to 3% of the mean where
    272 e^(-t/2) = 0.03 * ~360, i.e. t = 2 ln(272 / 10.8) = 6.45 s."""
    ss = SteadyState(band_pct=3.0, hold_s=3.0, timeout_s=60)
    for i in range(2000):
        t = i * 0.05
        p = 350 + 350 * math.exp(-t / 2)
        if ss.update(t, p, 1500.0 + (p - 350)):
            break
    expected = 2 * math.log(350 * (1 - math.exp(-1.5)) / (0.03 * 350 * (1 + 0.5 * 0.03)))
    assert ss.settled_since == pytest.approx(expected, abs=0.1)
    assert ss.settled_at == pytest.approx(ss.settled_since + 3.0, abs=0.06)


def test_timeout_ends_the_warmup():
    ss = SteadyState(band_pct=1.0, hold_s=1.0, timeout_s=5.0)
    done_at = None
    for i in range(200):
        t = i * 0.05
        if ss.update(t, 300.0 + 30.0 * (i % 2), 1500.0):  # a power that never settles
            done_at = t
            break
    assert ss.timed_out and ss.settled_at is None
    assert done_at == pytest.approx(5.0)


def test_constant_signal_settles_after_hold():
    ss = SteadyState(band_pct=3.0, hold_s=3.0)
    ts = [i * 0.1 for i in range(100)]
    first = next(t for t in ts if ss.update(t, 500.0, 1700.0))
    assert first == pytest.approx(3.0)
    assert ss.settled_since == 0.0
