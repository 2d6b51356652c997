"""The knobs a sweep turns, each defined once: its CLI name, the field points and curve files carry,
its unit, how to read its range on a device, how to change it (with read-back), and the journal key
under which the guard records that it changed.

Everything else asks this module (``knob("sm-clock")``, ``knob("sm_clock_mhz")``) instead of
spelling the knob out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import UsageError


@dataclass(frozen=True)
class Knob:
    """One lever on a GPU. ``observe`` is the pseudo-knob of a run that changes nothing."""

    name: str  # CLI spelling: --knob power-limit
    field: str  # record spelling: points.csv "knob", curve files, manifests
    unit: str  # of the setting: W or MHz
    label: str  # axis label
    journal_key: str  # what the guard's journal lists as changed ("" for observe)
    verb: str  # what changing it is, for messages ("set the power limit")
    #: the finest step a search resolves (never finer than this, in ``unit``)
    min_resolution: float = 0.0

    @property
    def changes(self) -> bool:
        return bool(self.journal_key)

    def range(self, device) -> tuple[float, float, list[float] | None]:
        """(lowest, highest, the settable values or None for a continuous range) on ``device``."""
        if self is SM_CLOCK:
            clocks = device.supported_sm_clocks()
            return float(clocks[0]), float(clocks[-1]), [float(c) for c in clocks]
        lim = device.power_limits()
        return lim.min_w, lim.max_w, None

    def may_change(self, device) -> bool:
        caps = device.info.capabilities
        if self is POWER_LIMIT:
            return caps.can_set_power_limit
        if self is SM_CLOCK:
            return caps.can_lock_sm_clock
        return True

    def current(self, device) -> float:
        """The setting in force now: the enforced power limit, or the locked SM clock (the
        highest supported clock when none is locked)."""
        if self is SM_CLOCK:
            lock = device.sm_clock_lock()
            return float(lock.hi_mhz if lock is not None else device.supported_sm_clocks()[-1])
        return device.power_limits().enforced_w

    def apply(self, device, value: float) -> float:
        """Change the setting and read back what the device enforces."""
        if self is POWER_LIMIT:
            device.set_power_limit(value)
            return device.power_limits().enforced_w
        if self is SM_CLOCK:
            mhz = int(round(value))
            device.lock_sm_clock(mhz, mhz)
            lock = device.sm_clock_lock()
            return float(mhz if lock is None else lock.hi_mhz)
        raise UsageError("internal: an observe-only run tried to change a setting")

    def found(self, device) -> Any:
        """What the guard journals before the first change, to put back later (JSON-able): the
        requested power limit, or the locked clock range (None when the clock is not locked)."""
        if self is SM_CLOCK:
            lock = device.sm_clock_lock()
            return None if lock is None else [lock.lo_mhz, lock.hi_mhz]
        return device.power_limits().current_w

    def put_back(self, device, value: Any) -> str:
        """Restore what ``found`` recorded; returns what was done, in words."""
        if self is SM_CLOCK:
            if value is None:
                device.reset_sm_clock()
                return "SM clock unlocked"
            device.lock_sm_clock(int(value[0]), int(value[1]))
            return f"SM clock locked at {int(value[0])}-{int(value[1])} MHz"
        device.set_power_limit(float(value))
        return f"power limit {float(value):g} W"


POWER_LIMIT = Knob("power-limit", "power_limit_w", "W", "power limit (W)", "power_limit", "set the power limit",
                   min_resolution=25.0)
SM_CLOCK = Knob("sm-clock", "sm_clock_mhz", "MHz", "locked SM clock (MHz)", "sm_clock", "lock the SM clock")
OBSERVE = Knob("observe", "observe", "W", "setting (W)", "", "observe")

KNOBS: tuple[Knob, ...] = (POWER_LIMIT, SM_CLOCK, OBSERVE)
#: the knobs a user may sweep (observe is chosen with --observe, not --knob)
SWEEPABLE: tuple[str, ...] = (POWER_LIMIT.name, SM_CLOCK.name)


def knob(spelling: str | Knob) -> Knob:
    """The knob by any of its spellings: CLI name, record field or journal key (a Knob is itself)."""
    if isinstance(spelling, Knob):
        return spelling
    for k in KNOBS:
        if spelling in (k.name, k.field) or (k.journal_key and spelling == k.journal_key):
            return k
    raise UsageError(f"unknown knob '{spelling}' (choose from {', '.join(SWEEPABLE)})")
