"""The sampler: simulated-clock sampling, history drains, thread mode."""

from __future__ import annotations

import random
import threading

import pytest

from harness.devices import open_devices
from harness.telemetry import READING_COLUMNS, Sampler
from harness.testing.checks import WallClockView
from harness.testing.shapes import bursty


def test_simulated_sampling_is_exact_and_deterministic():
    def run():
        gpu = open_devices("sim", sim_seed=7).devices[0]
        t_start = gpu.clock.now()
        with Sampler([gpu], rate_hz=200.0) as s:
            bursty(gpu, 3.0, random.Random(7))
            t_end = gpu.clock.now()
        return s.readings(0, 0, t_end), t_end - t_start

    (a, elapsed), (b, _) = run(), run()
    assert list(a.columns) == list(READING_COLUMNS)
    span = a["t_s"].iloc[-1] - a["t_s"].iloc[0]
    assert span > elapsed - 0.05
    assert len(a) == round(span * 200) + 1  # every tick, none missed
    dt = a["t_s"].diff().dropna()
    assert dt.max() < 1 / 200 + 1e-4  # no gap at 200 Hz
    assert a.equals(b)  # same seed, same readings


def test_history_drain_loses_nothing_and_duplicates_nothing():
    gpu = open_devices("sim", sim_seed=1).devices[0]
    recorded = []
    original = gpu.after_step

    def spy(t):  # every sample the simulated driver writes into its ring buffer
        before = gpu.sensors.samples[-1] if gpu.sensors.samples else None
        original(t)
        if gpu.sensors.samples and gpu.sensors.samples[-1] is not before:
            recorded.append(gpu.sensors.samples[-1].ts_us)

    gpu.after_step = spy
    # drains every 2 s against a ring of ~2.4 s: close to losing samples, but must not
    with Sampler([gpu], rate_hz=10.0, drain_history_s=2.0) as s:
        start_us = recorded[0] if recorded else 0
        bursty(gpu, 12.0, random.Random(1))
    hist = s.power_history(0, -1e12, 1e12)
    drained = hist["ts_us"].tolist()
    assert drained == sorted(set(drained))  # no duplicates, in order
    expected = [t for t in recorded if t >= start_us]
    assert drained == expected  # nothing lost
    assert len(drained) > 12 / 0.02 * 0.95


def test_history_times_map_onto_the_device_clock():
    gpu = open_devices("sim", sim_seed=2).devices[0]
    with Sampler([gpu]) as s:
        gpu.clock.sleep(3.0)
        now = gpu.clock.now()
    hist = s.power_history(0, now - 1.0, now)
    assert 45 <= len(hist) <= 51
    assert hist["t_s"].max() <= now + 1e-6
    assert hist["t_s"].max() > now - 0.03


def test_thread_mode_samples_at_its_rate_and_stops():
    dev = WallClockView(open_devices("sim").devices[0])
    s = Sampler([dev], rate_hz=50.0)
    assert s.threaded
    s.start()
    threading.Event().wait(0.5)
    s.stop()
    n = len(s.readings(0, 0, 1e12))
    assert 20 <= n <= 27
    assert not any(t.name == "tokbench-sampler" for t in threading.enumerate())
    assert s.latest(0) is not None


def test_forget_before_bounds_memory():
    gpu = open_devices("sim").devices[0]
    with Sampler([gpu], rate_hz=100.0) as s:
        gpu.clock.sleep(5.0)
        now = gpu.clock.now()
        s.forget_before(now - 1.0)
        assert len(s.readings(0, 0, 1e12)) == pytest.approx(100, abs=2)
        gpu.clock.sleep(1.0)
    assert len(s.power_history(0, now - 1.0, now + 1.0)) == pytest.approx(100, abs=3)


def test_history_offset_follows_a_drifting_driver_clock():
    """On real clocks the driver's timestamps (host wall time) may drift against the monotonic
    clock; the offset is the smallest lag over recent drains, so it follows the drift."""
    from harness.devices.base import PowerSample
    from harness.telemetry.sampler import _History

    rolling, fixed = _History(recent=8), _History()
    for k in range(200):
        now = 100.0 + k * 0.5
        driver_us = int((now * (1 - 1e-3) + 5.0 - 0.004) * 1e6)  # 1000 ppm slow, newest sample 4 ms old
        for h in (rolling, fixed):
            h.add(now, [PowerSample(driver_us, 300.0)])
    true_offset = 199 * 0.5 * 1e-3 + 100.0 * 1e-3 - 5.0  # now - driver time, at the last drain, minus the lag
    assert rolling.offset_s == pytest.approx(true_offset + 0.004, abs=0.005)
    assert abs(fixed.offset_s - (true_offset + 0.004)) > 0.05  # a global minimum would be stale
