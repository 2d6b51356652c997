"""An OpenADR 2.0b VEN (through the maintained ``openleadr`` library, extra ``govern``) as a
governor signal.

The VEN runs in a thread with its own asyncio loop: it registers with the VTN, polls it, answers
events (opt in when every signal is understood, opt out otherwise, with a log line) and sends a
TELEMETRY_USAGE report of the node's measured GPU power. ``poll(now)`` reads the events it holds
- they carry their own times, so a VTN that becomes unreachable during an event does not end it.

Signals understood (payloads per interval):

* ``SIMPLE`` level 0-3 -> the config's ``levels``;
* ``ELECTRICITY_PRICE`` price -> the config's ``prices`` bands (in the VTN's price unit);
* ``LOAD_DISPATCH`` setpoint (kW) -> that node target; delta (kW, negative = reduce) -> the
  reference power plus the delta;
* ``LOAD_CONTROL`` x-loadControlCapacity (0-1) -> that fraction; x-loadControlPercentOffset
  (%, negative = reduce) -> 1 + offset/100; x-loadControlSetpoint (kW) -> that node target.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from harness.errors import UsageError
from harness.govern.config import GovernConfig
from harness.govern.signals import Directive, SignalError

#: seconds between registration attempts while the VTN does not answer
RETRY_S = 2.0


@dataclass(frozen=True)
class _Interval:
    start: datetime
    end: datetime
    record: dict  # {"target_w" | "fraction" | "level" | "price": value}
    what: str


def _intervals(event: dict) -> list[_Interval]:
    """The event's intervals as records; ``ValueError`` for anything not understood."""
    out: list[_Interval] = []
    signals = event.get("event_signals") or []
    if not signals:
        raise ValueError("event has no signals")
    for sig in signals:
        name, kind = sig.get("signal_name"), sig.get("signal_type")
        for iv in sig.get("intervals") or []:
            start, dur, payload = iv.get("dtstart"), iv.get("duration"), iv.get("signal_payload")
            if not isinstance(start, datetime) or not isinstance(dur, timedelta):
                raise ValueError(f"{name} interval without a start and a duration")
            try:
                value = float(payload)
            except (TypeError, ValueError):
                raise ValueError(f"{name} payload {payload!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{name} payload is {value}")
            rec = _record(name, kind, value)
            out.append(_Interval(start, start + dur, rec, f"{name} {kind} {value:g}"))
    if not out:
        raise ValueError("event has no intervals")
    return out


def _record(name: str, kind: str, value: float) -> dict:
    if name == "SIMPLE" and kind == "level":
        return {"level": value}
    if name == "ELECTRICITY_PRICE" and kind == "price":
        return {"price": value}
    if name in ("LOAD_DISPATCH", "LOAD_CONTROL") and kind in ("setpoint", "x-loadControlSetpoint"):
        if value < 0:
            raise ValueError(f"{name} setpoint {value:g} kW is negative")
        return {"target_w": value * 1000.0}
    if name == "LOAD_DISPATCH" and kind == "delta":
        return {"delta_w": value * 1000.0}
    if name == "LOAD_CONTROL" and kind == "x-loadControlCapacity":
        return {"fraction": value}
    if name == "LOAD_CONTROL" and kind == "x-loadControlPercentOffset":
        return {"fraction": min(max(1.0 + value / 100.0, 0.0), 1.0)}
    raise ValueError(f"signal {name}/{kind} is not supported")


class VenSignal:
    def __init__(self, vtn_url: str, ven_name: str, config: GovernConfig, report_s: float = 1.0) -> None:
        try:
            import openleadr  # noqa: F401
        except ImportError:
            raise UsageError("--openadr needs the openleadr library: pip install 'tokbench[govern]'") from None
        self.vtn_url = vtn_url
        self.ven_name = ven_name
        self.name = f"openadr {vtn_url}"
        self.config = config
        self.report_s = report_s
        self.reference_w = 0.0  # set by the governor: the node at the default setting
        self.power_w: Callable[[], float | None] = lambda: None
        self._events: dict[str, list[_Interval]] = {}
        self._problems: list[str] = []
        self._lock = threading.Lock()
        self._registered = threading.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="tokbench-ven", daemon=True)
        self._thread.start()

    # --- the VEN's thread ----------------------------------------------------------------------
    def _run(self) -> None:
        logging.getLogger("openleadr").setLevel(logging.CRITICAL)
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        from openleadr import OpenADRClient

        client = None
        while not self._stop.is_set():
            if client is None:
                client = OpenADRClient(ven_name=self.ven_name, vtn_url=self.vtn_url, show_fingerprint=False)
                client.add_handler("on_event", self._on_event)
                client.add_handler("on_update_event", self._on_event)
                client.add_report(self._report, resource_id="gpus", measurement="REAL_POWER", unit="W",
                                  sampling_rate=timedelta(seconds=self.report_s),
                                  report_duration=timedelta(hours=1))
                try:
                    await client.run()
                except Exception as e:  # noqa: BLE001 (any failure of the library is a logged signal problem)
                    self._problem(f"VTN unreachable ({type(e).__name__}: {e})")
                if client.registration_id:
                    self._registered.set()
                else:
                    if not self._problems:
                        self._problem("VTN unreachable or registration refused")
                    await _close(client)
                    client = None
                    for _ in range(int(RETRY_S / 0.1)):
                        if self._stop.is_set():
                            break
                        await asyncio.sleep(0.1)
                    continue
            await asyncio.sleep(0.1)
        if client is not None:
            await _close(client)

    def _problem(self, text: str) -> None:
        with self._lock:
            self._problems.append(f"{self.name}: {text}")

    async def _on_event(self, event: dict) -> str:
        desc = event.get("event_descriptor") or {}
        event_id = str(desc.get("event_id", "?"))
        if desc.get("event_status") == "cancelled":
            with self._lock:
                self._events.pop(event_id, None)
            return "optIn"
        try:
            intervals = _intervals(event)
        except ValueError as e:
            self._problem(f"event {event_id}: {e}; opted out")
            return "optOut"
        with self._lock:
            self._events[event_id] = intervals
        return "optIn"

    def _report(self) -> float:
        w = self.power_w()
        return 0.0 if w is None else float(w)

    # --- the governor's side --------------------------------------------------------------------
    def poll(self, now: datetime) -> Directive:
        with self._lock:
            problems, self._problems = self._problems, []
            active = [iv for ivs in self._events.values() for iv in ivs if iv.start <= now < iv.end]
        if problems:
            raise SignalError("; ".join(problems))
        if not self._registered.is_set():
            raise SignalError(f"{self.name}: not registered with the VTN yet")
        if not active:
            return Directive(self.name, "no event", issued=now)
        directives = [self._directive(iv, now) for iv in active]
        # several signals at once: the tightest wins
        return min(directives, key=lambda d: d.target_w if d.target_w is not None else d.fraction * self.reference_w)

    def _directive(self, iv: _Interval, now: datetime) -> Directive:
        from harness.govern.signals import directive_from_record

        rec = dict(iv.record)
        if "delta_w" in rec:
            rec = {"target_w": max(0.0, self.reference_w + rec.pop("delta_w"))}
        d = directive_from_record(rec, self.config, self.name, issued=now)
        return Directive(d.source, f"event {iv.what} until {iv.end:%H:%M:%S}", d.target_w, d.fraction, issued=now)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


async def _close(client) -> None:
    with contextlib.suppress(Exception):  # closing a session that never opened
        await client.stop()
