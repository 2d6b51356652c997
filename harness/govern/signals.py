"""Signals a governor follows, each turned into a ``Directive`` (a node power target, or the
settings a plan chose) at a given UTC time.

A source that cannot answer (malformed row, price NaN, server unreachable) raises ``SignalError``
with a one-line message; the governor logs it and keeps its documented safe behaviour (hold the
last good directive until it is stale, then ``on_stale``). Nothing here raises anything else.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pandas as pd

from harness.errors import TokbenchError
from harness.govern.config import GovernConfig


class SignalError(TokbenchError):
    """A signal that cannot be used right now (the governor logs it and stays safe)."""


@dataclass(frozen=True)
class Directive:
    """What a signal asks for. Exactly one of ``target_w`` / ``fraction`` / ``settings`` is
    set, or none of them (no constraint: Max-P)."""

    source: str
    reason: str
    target_w: float | None = None  # node GPU power, W
    fraction: float | None = None  # of the node's reference power
    settings: tuple[float, ...] | None = None  # one per GPU (NaN: parked at the floor)
    planned_tokens_per_s: float | None = None  # what the plan expects from this node
    #: when the data behind it was issued (staleness); None: always fresh
    issued: datetime | None = None


class Signal(Protocol):
    name: str

    def poll(self, now: datetime) -> Directive:
        """The directive in force at ``now`` (UTC); ``SignalError`` when it cannot tell."""

    def close(self) -> None: ...


def directive_from_record(rec: dict, config: GovernConfig, source: str, issued: datetime | None = None) -> Directive:
    """A feed record ({"target_w"| "level" | "price" | "fraction": value}) as a directive."""
    keys = [k for k in ("target_w", "level", "price", "fraction") if rec.get(k) not in (None, "")]
    if len(keys) != 1:
        raise SignalError(f"{source}: a record needs exactly one of target_w, level, price, fraction (got {rec})")
    key = keys[0]
    try:
        value = float(rec[key])
    except (TypeError, ValueError):
        raise SignalError(f"{source}: {key} '{rec[key]}' is not a number") from None
    if not math.isfinite(value):
        raise SignalError(f"{source}: {key} is {value}; ignored")
    try:
        if key == "target_w":
            if value < 0:
                raise ValueError(f"target {value:g} W is negative")
            return Directive(source, f"target {value:g} W", target_w=value, issued=issued)
        if key == "fraction":
            if not 0 <= value <= 1:
                raise ValueError(f"fraction {value:g} outside 0..1")
            return Directive(source, f"fraction {value:g}", fraction=value, issued=issued)
        if key == "level":
            return Directive(source, f"level {value:g}", fraction=config.fraction_for_level(value), issued=issued)
        return Directive(source, f"price {value:g} $/MWh", fraction=config.fraction_for_price(value), issued=issued)
    except ValueError as e:
        raise SignalError(f"{source}: {e}") from None


def parse_time(text: str, source: str) -> datetime:
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise SignalError(f"{source}: bad timestamp '{text}'") from None
    if ts is pd.NaT:
        raise SignalError(f"{source}: bad timestamp '{text}'")
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


class FixedTarget:
    """One node target for the whole run (`--target-w`)."""

    name = "fixed"

    def __init__(self, target_w: float | None) -> None:
        self.target_w = target_w

    def poll(self, now: datetime) -> Directive:
        if self.target_w is None:
            return Directive(self.name, "no target: Max-P")
        return Directive(self.name, f"target {self.target_w:g} W", target_w=self.target_w)

    def close(self) -> None:
        pass


class CsvFeed:
    """A CSV file that grows (columns ``timestamp`` and one of target_w, level, price,
    fraction): each row applies from its timestamp until the next. Read again when it grows;
    a malformed row is reported once and skipped."""

    def __init__(self, path: str | Path, config: GovernConfig) -> None:
        self.path = Path(path)
        self.name = f"feed {self.path.name}"
        self.config = config
        self._rows: list[tuple[datetime, dict]] = []
        self._offset = 0
        self._header: list[str] | None = None
        self._pending: list[str] = []

    def _read_new(self) -> None:
        try:
            with open(self.path) as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError as e:
            raise SignalError(f"{self.name}: cannot read: {e.strerror}") from None
        if not chunk.endswith("\n"):  # a row being written: wait for its end
            chunk = chunk[: chunk.rfind("\n") + 1]
        self._offset += len(chunk.encode())
        bad = []
        for line in filter(str.strip, chunk.splitlines()):
            cells = [c.strip() for c in line.split(",")]
            if self._header is None:
                self._header = cells
                if "timestamp" not in cells:
                    raise SignalError(f"{self.name}: first line must be a header with a 'timestamp' column")
                continue
            if len(cells) != len(self._header):
                bad.append(f"'{line}' has {len(cells)} cells, header has {len(self._header)}")
                continue
            rec = dict(zip(self._header, cells))
            try:
                when = parse_time(rec.pop("timestamp"), self.name)
                directive_from_record(rec, self.config, self.name)  # validate now, report once
            except SignalError as e:
                bad.append(str(e).removeprefix(f"{self.name}: "))
                continue
            self._rows.append((when, rec))
        self._rows.sort(key=lambda r: r[0])
        if bad:
            raise SignalError(f"{self.name}: skipped {len(bad)} bad row(s): {bad[0]}")

    def poll(self, now: datetime) -> Directive:
        self._read_new()
        due = [r for r in self._rows if r[0] <= now]
        if not due:
            raise SignalError(f"{self.name}: no row at or before {now.isoformat(timespec='seconds')}")
        when, rec = due[-1]
        return directive_from_record(rec, self.config, self.name, issued=when)

    def close(self) -> None:
        pass


class HttpFeed:
    """An HTTP endpoint answering JSON ({"target_w"|"level"|"price"|"fraction": value,
    optional "timestamp"}), asked every ``every_s`` with a short timeout."""

    def __init__(self, url: str, config: GovernConfig, timeout_s: float = 2.0, every_s: float = 5.0) -> None:
        self.url = url
        self.name = f"http {url}"
        self.config = config
        self.timeout_s = timeout_s
        self.every_s = every_s  # signal seconds between requests; the last answer holds between them
        self._last: tuple[datetime, Directive] | None = None

    def poll(self, now: datetime) -> Directive:
        if self._last is not None and 0 <= (now - self._last[0]).total_seconds() < self.every_s:
            return self._last[1]
        d = self._fetch(now)
        self._last = (now, d)
        return d

    def _fetch(self, now: datetime) -> Directive:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as r:  # noqa: S310 (operator's URL)
                body = r.read()
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise SignalError(f"{self.name}: unreachable ({getattr(e, 'reason', e)})") from None
        try:
            rec = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SignalError(f"{self.name}: answer is not JSON") from None
        if not isinstance(rec, dict):
            raise SignalError(f"{self.name}: answer must be a JSON object")
        issued = parse_time(rec.pop("timestamp"), self.name) if rec.get("timestamp") else now
        return directive_from_record(rec, self.config, self.name, issued=issued)

    def close(self) -> None:
        pass


def utc_now() -> datetime:
    return datetime.now(UTC)
