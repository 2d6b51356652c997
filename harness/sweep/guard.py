"""Limit safety: every setting a sweep changes is put back, whatever happens.

``Guard`` takes a per-GPU lock (two sweeps never fight over one GPU), records each GPU's power
limit and clock lock, and writes a journal *before* the first change. It restores on normal exit,
on error, on Ctrl-C and on SIGTERM (turned into ``Terminated`` so the same unwinding runs). After a
hard kill or power loss the journal stays behind: the next `tokbench` start, or `tokbench
restore`, finds journals whose owner is gone and puts their settings back (``recover``).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType

from harness.devices.base import Device
from harness.errors import DeviceError, TokbenchError, UsageError


class Terminated(BaseException):  # noqa: N818 (named for the signal, like KeyboardInterrupt)
    """SIGTERM arrived; raised in the main thread so that restores run.

    A ``BaseException`` like ``KeyboardInterrupt``, so that no ``except Exception`` or
    ``except TokbenchError`` on the way (a sensor read that tolerates errors) can swallow it."""

    exit_code = 143
    message = "terminated by SIGTERM; settings restored, finished points kept"


def state_root() -> Path:
    env = os.environ.get("TOKBENCH_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tokbench"


@dataclass(frozen=True)
class OriginalSettings:
    """What a GPU had before tokbench touched it, and how to find it again."""

    uuid: str
    index: int
    backend: str
    power_limit_w: float
    sm_clock_lock: tuple[int, int] | None
    #: arguments that reopen the same device in another process (backend-specific)
    reopen: dict
    owner_pid: int
    #: knobs this run changed ("power_limit", "sm_clock"): only these are put back
    knobs: tuple[str, ...] = ()


def _journal_dir() -> Path:
    return state_root() / "journal"


def _lock_dir() -> Path:
    return state_root() / "locks"


def _safe(uuid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in uuid)


class Guard:
    """Context manager owning the settings of ``devices`` for one run."""

    def __init__(self, devices: list[Device], reopen: dict, change_allowed: bool = True) -> None:
        self.devices = devices
        self.reopen = reopen
        self.change_allowed = change_allowed
        self.originals: dict[str, OriginalSettings] = {}
        self._lock_files: list = []
        self._old_term: Callable | int | None = None
        self._touched: dict[str, tuple[str, ...]] = {}

    # --- entry / exit -------------------------------------------------------------------------
    def __enter__(self) -> Guard:
        try:
            self._take_locks()
            for d in self.devices:
                lock = d.sm_clock_lock()
                self.originals[d.info.uuid] = OriginalSettings(
                    uuid=d.info.uuid,
                    index=d.info.index,
                    backend=d.info.backend,
                    power_limit_w=d.power_limits().current_w,
                    sm_clock_lock=None if lock is None else (lock.lo_mhz, lock.hi_mhz),
                    reopen=self.reopen,
                    owner_pid=os.getpid(),
                )
            self._old_term = signal.signal(signal.SIGTERM, _raise_terminated)
        except BaseException:
            self._release_locks()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.restore()
        finally:
            if self._old_term is not None:
                signal.signal(signal.SIGTERM, self._old_term)
            self._release_locks()

    # --- changes ----------------------------------------------------------------------------------
    def _before_change(self, device: Device, knob: str) -> None:
        """Journal the original settings (and which knob changes) before touching the GPU."""
        if not self.change_allowed:
            raise UsageError("internal: a setting change was attempted in observe mode")
        uuid = device.info.uuid
        knobs = self._touched.get(uuid, ())
        if knob in knobs:
            return
        knobs = (*knobs, knob)
        record = replace(self.originals[uuid], knobs=knobs)
        _journal_dir().mkdir(parents=True, exist_ok=True)
        path = _journal_dir() / f"{_safe(uuid)}.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(asdict(record)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.originals[uuid] = record
        self._touched[uuid] = knobs

    def set_power_limit(self, device: Device, watts: float) -> float:
        """Set and read back; returns the enforced limit in W."""
        self._before_change(device, "power_limit")
        device.set_power_limit(watts)
        return device.power_limits().enforced_w

    def lock_sm_clock(self, device: Device, mhz: int) -> float:
        """Lock the SM clock to one value; returns the locked value read back (MHz) where the
        backend can read it, else the requested one."""
        self._before_change(device, "sm_clock")
        device.lock_sm_clock(mhz, mhz)
        lock = device.sm_clock_lock()
        return float(mhz if lock is None else lock.hi_mhz)

    def restore(self) -> list[str]:
        """Put back every GPU this guard changed; returns what it did, one line each."""
        done: list[str] = []
        errors: list[str] = []
        for d in self.devices:
            uuid = d.info.uuid
            if uuid not in self._touched:
                continue
            try:
                done.append(_apply(d, self.originals[uuid]))
                (_journal_dir() / f"{_safe(uuid)}.json").unlink(missing_ok=True)
                del self._touched[uuid]
            except TokbenchError as e:
                errors.append(f"GPU {d.info.index}: {e}")
        if errors:
            raise DeviceError("could not restore settings (journal kept for `tokbench restore`): "
                              + "; ".join(errors))
        return done

    # --- locks --------------------------------------------------------------------------------------
    def _take_locks(self) -> None:
        _lock_dir().mkdir(parents=True, exist_ok=True)
        for d in self.devices:
            f = open(_lock_dir() / f"{_safe(d.info.uuid)}.lock", "a+")  # noqa: SIM115 (held for the run)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "?"
                f.close()
                raise UsageError(f"GPU {d.info.index} is in use by another tokbench run (pid {holder})") from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            self._lock_files.append(f)

    def _release_locks(self) -> None:
        for f in self._lock_files:
            try:
                fcntl.flock(f, fcntl.LOCK_UN)
            finally:
                f.close()
        self._lock_files.clear()


def _apply(device: Device, orig: OriginalSettings) -> str:
    """Put back the knobs ``orig`` says were changed (a clock lock someone else made is never
    reset unless this run changed the clock)."""
    parts = []
    if "power_limit" in orig.knobs:
        device.set_power_limit(orig.power_limit_w)
        parts.append(f"power limit {orig.power_limit_w:g} W")
    if "sm_clock" in orig.knobs:
        if orig.sm_clock_lock is None:
            device.reset_sm_clock()
            parts.append("SM clock unlocked")
        else:
            device.lock_sm_clock(*orig.sm_clock_lock)
            parts.append(f"SM clock locked at {orig.sm_clock_lock[0]}-{orig.sm_clock_lock[1]} MHz")
    return f"GPU {device.info.index}: " + ", ".join(parts or ["nothing changed"])


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_journals() -> list[OriginalSettings]:
    """Journals left by runs whose process is gone."""
    out = []
    for path in sorted(_journal_dir().glob("*.json")) if _journal_dir().exists() else []:
        try:
            raw = json.loads(path.read_text())
            raw["sm_clock_lock"] = tuple(raw["sm_clock_lock"]) if raw.get("sm_clock_lock") else None
            raw["knobs"] = tuple(raw.get("knobs", ()))
            orig = OriginalSettings(**raw)
        except (json.JSONDecodeError, TypeError, KeyError):
            continue
        if orig.owner_pid == os.getpid() or _pid_alive(orig.owner_pid):
            continue
        out.append(orig)
    return out


def recover(open_devices_fn: Callable[..., object] | None = None) -> list[str]:
    """Restore every GPU named in a stale journal; returns one line per GPU restored."""
    from harness.devices import open_devices

    open_fn = open_devices_fn or open_devices
    done: list[str] = []
    for orig in stale_journals():
        ds = open_fn(**orig.reopen)
        try:
            match = [d for d in ds.devices if d.info.uuid == orig.uuid]  # type: ignore[attr-defined]
            if not match:
                continue
            done.append(_apply(match[0], orig) + " (from the journal of a run that died)")
            (_journal_dir() / f"{_safe(orig.uuid)}.json").unlink(missing_ok=True)
        finally:
            ds.close()  # type: ignore[attr-defined]
    return done
