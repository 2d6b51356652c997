"""OpenADR 2.0b: a real openleadr VTN started here on 127.0.0.1 issues a load-reduction event to
tokbench's VEN governing two simulated H100s (their clock kept in step with the wall)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_govern_core import window_means

from harness.devices import open_devices
from harness.govern.config import GovernConfig
from harness.govern.run import GovernOptions, run_governor
from harness.govern.signals import SignalError

openleadr = pytest.importorskip("openleadr")

ROOT = Path(__file__).resolve().parents[1]
CURVE = str(ROOT / "profiles" / "curves" / "h100-train-llama-1b.json")
RESPONSE_S = 3.0  # docs/govern.md: decision period + cap settling + the 2 s meter window, rounded up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Vtn:
    """An openleadr VTN in a thread of its own; records opt responses and report values."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"
        self.opts: list[str] = []
        self.reports: list[float] = []
        self.ven_ids: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "VTN did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        logging.getLogger("openleadr").setLevel(logging.CRITICAL)
        self.server = openleadr.OpenADRServer(vtn_id="test-vtn", http_port=self.port, http_host="127.0.0.1",
                                              requested_poll_freq=timedelta(seconds=1),
                                              show_server_cert_domain=False)
        self.server.add_handler("on_create_party_registration", self._register)
        self.server.add_handler("on_register_report", self._register_report)
        self.loop.run_until_complete(self.server.run())
        self.ready.set()
        self.loop.run_forever()

    def _register(self, info: dict):
        self.ven_ids.append(info["ven_name"])
        return f"ven-{info['ven_name']}", "reg-1"

    def _register_report(self, ven_id, resource_id, measurement, unit, scale, min_sampling_interval,
                         max_sampling_interval):
        return self._on_report, timedelta(seconds=1)

    def _on_report(self, data) -> None:
        self.reports.extend(float(v) for _, v in data)

    def event(self, signal_name: str, signal_type: str, start: datetime, seconds: float, payload: float) -> None:
        def add() -> None:
            self.server.add_event(ven_id="ven-tokbench-ven", signal_name=signal_name, signal_type=signal_type,
                                  intervals=[{"dtstart": start, "duration": timedelta(seconds=seconds),
                                              "signal_payload": payload}],
                                  callback=lambda ven_id, event_id, opt_type: self.opts.append(opt_type))

        self.loop.call_soon_threadsafe(add)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def vtn():
    v = Vtn()
    yield v
    v.stop()


def _limits() -> list[float]:
    return [d.power_limits().current_w for d in open_devices("sim", sim_count=2).devices]


def test_vtn_load_dispatch_event_is_met_within_the_response_time_and_reported(vtn, tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text("margin = 0.05\n")  # the 3 s meter windows below are good to ~3.3%
    start = datetime.now(UTC) + timedelta(seconds=3)
    seconds, target = 12.0, 800.0
    vtn.event("LOAD_DISPATCH", "setpoint", start, seconds, target / 1000.0)  # kW
    r = run_governor(GovernOptions(curve=CURVE, openadr=vtn.url, config=str(cfg), duration_s=19.0, realtime=True,
                                   backend="sim", sim_count=2, log=str(tmp_path / "log.csv")))
    assert vtn.opts == ["optIn"]
    rows = r.rows
    wall0 = datetime.fromisoformat(rows[0].time_utc)
    t_start = rows[0].t_s + (start - wall0).total_seconds()
    t_end = t_start + seconds
    before = [d for d in rows if d.t_s < t_start - 0.6 and d.measured_w is not None]
    assert before and before[-1].settings == "700;700" and before[-1].measured_w > 1.2 * target
    means = window_means(rows, 3.0, t_start + RESPONSE_S, t_end)
    assert len(means) >= 2 and max(means) <= target and min(means) > 0.85 * target
    (whole,) = window_means(rows, t_end - t_start - RESPONSE_S - 0.6, t_start + RESPONSE_S, t_end)
    assert 0.85 * target < whole <= target
    during = [d for d in rows if t_start + 0.6 < d.t_s < t_end - 0.1]
    assert all(d.target_w == target and "LOAD_DISPATCH" in d.reason for d in during)
    after = [d for d in rows if d.t_s > t_end + 0.6]
    assert after and all(d.reason.startswith("no event") for d in after)
    assert all(b.expected_w >= a.expected_w for a, b in zip(after, after[1:]))  # back up, at the ramp rate
    assert after[-1].settings == "700;700"
    assert len(vtn.reports) >= 5 and max(vtn.reports) > target  # measured node power reached the VTN
    assert _limits() == [700.0, 700.0]


def test_a_malformed_event_is_opted_out_with_a_log_line(vtn, tmp_path):
    from harness.govern.openadr import VenSignal

    ven = VenSignal(vtn.url, "tokbench-ven", GovernConfig())
    try:
        for _ in range(50):
            if ven._registered.is_set():
                break
            threading.Event().wait(0.1)
        vtn.event("x-UNKNOWN", "level", datetime.now(UTC) + timedelta(seconds=1), 5.0, 1.0)
        for _ in range(60):
            if vtn.opts:
                break
            threading.Event().wait(0.1)
        assert vtn.opts == ["optOut"]
        with pytest.raises(SignalError, match="not supported; opted out"):
            ven.poll(datetime.now(UTC))
        assert ven.poll(datetime.now(UTC)).reason == "no event"  # said once, then business as usual
    finally:
        ven.close()


def test_an_unreachable_vtn_is_logged_and_the_gpus_stay_at_default(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/OpenADR2/Simple/2.0b"
    r = run_governor(GovernOptions(curve=CURVE, openadr=url, duration_s=1.0, realtime=True, backend="sim",
                                   sim_count=2, log=None))
    assert all(d.settings == "700;700" for d in r.rows)
    assert any("unreachable" in d.reason for d in r.rows)
    assert all("no good signal yet: default setting" in d.reason for d in r.rows)


def test_every_understood_signal_maps_to_a_directive_and_others_are_refused():
    from harness.govern.openadr import VenSignal, _intervals

    t = datetime(2026, 1, 15, 17, 0, tzinfo=UTC)

    def event(name: str, kind: str, payload) -> dict:
        return {"event_signals": [{"signal_name": name, "signal_type": kind, "intervals": [
            {"dtstart": t, "duration": timedelta(minutes=30), "signal_payload": payload}]}]}

    ven = VenSignal.__new__(VenSignal)  # the mapping only; no thread, no VTN
    ven.config, ven.name, ven.reference_w = GovernConfig(), "openadr test", 1400.0
    cases = [(("SIMPLE", "level", 2), None, 0.5), (("ELECTRICITY_PRICE", "price", 320.0), None, 0.6),
             (("LOAD_DISPATCH", "setpoint", 0.9), 900.0, None), (("LOAD_DISPATCH", "delta", -0.5), 900.0, None),
             (("LOAD_CONTROL", "x-loadControlCapacity", 0.7), None, 0.7),
             (("LOAD_CONTROL", "x-loadControlPercentOffset", -25.0), None, 0.75),
             (("LOAD_CONTROL", "x-loadControlSetpoint", 1.1), 1100.0, None)]
    for args, target_w, fraction in cases:
        (iv,) = _intervals(event(*args))
        assert iv.end - iv.start == timedelta(minutes=30)
        d = ven._directive(iv, t)
        assert (d.target_w, d.fraction) == (target_w, fraction), args
    for bad, msg in ((("LOAD_DISPATCH", "multiplier", 1.0), "not supported"),
                     (("SIMPLE", "level", float("nan")), "payload is nan"),
                     (("LOAD_DISPATCH", "setpoint", -1.0), "negative"),
                     (("SIMPLE", "level", "high"), "is not a number")):
        with pytest.raises(ValueError, match=msg):
            _intervals(event(*bad))
    with pytest.raises(ValueError, match="no signals"):
        _intervals({"event_signals": []})
