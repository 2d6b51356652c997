"""Setting safety: every setting a run changes is put back, whatever happens.

``Guard`` takes a per-GPU lock (two runs never fight over one GPU), and before the first change of
each knob on a GPU writes a journal with what that GPU had (``Journal``). It restores on normal
exit, on error, on Ctrl-C, on SIGTERM and on SIGHUP (an ssh session that drops), the signals being
turned into ``Terminated`` so the same unwinding runs. After a hard kill or a power loss the journal
stays behind: the next command that changes settings (``sweep``, ``run``), or ``tokbench restore``,
puts each journal's settings back on its own (``recover``). Journals name their host, so a state
directory shared by several nodes never makes one node judge another's process ids; commands that
only read (``report``, ``plan``, ``devices``) never repair and are never blocked by a journal.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from harness.devices.base import Device
from harness.errors import DeviceError, PermissionDenied, TokbenchError, UsageError
from harness.knobs import POWER_LIMIT, SM_CLOCK, Knob, knob
from harness.records.filelock import holder_pid

#: the knobs whose original values a guard reads on entry
_GUARDED = (POWER_LIMIT, SM_CLOCK)
#: signals that end a run the way Ctrl-C does: restore, keep finished points, exit non-zero
_SIGNALS = {signal.SIGTERM: 143, signal.SIGHUP: 129}


class Terminated(BaseException):  # noqa: N818 (named for the signal, like KeyboardInterrupt)
    """SIGTERM or SIGHUP arrived; raised in the main thread so that restores run.

    A ``BaseException`` like ``KeyboardInterrupt``, so that no ``except Exception`` or
    ``except TokbenchError`` on the way (a sensor read that tolerates errors) can swallow it."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = _SIGNALS.get(signum, 143)
        self.signal_name = signal.Signals(signum).name


def state_root() -> Path:
    env = os.environ.get("TOKBENCH_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tokbench"


def this_host() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class Journal:
    """What one GPU had before tokbench changed it, on which host, and how to reopen it."""

    uuid: str
    index: int
    backend: str
    host: str
    owner_pid: int
    #: arguments that reopen the same device in another process (backend-specific)
    reopen: dict
    #: journal key of each knob this run changed -> its value as found (see ``Knob.found``)
    found: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: dict) -> Journal:
        """Read a journal, including the first format (``power_limit_w``/``sm_clock_lock``/``knobs``)."""
        if "found" not in raw:
            old = {"power_limit": raw.get("power_limit_w"), "sm_clock": raw.get("sm_clock_lock")}
            raw = {**raw, "found": {k: old[k] for k in raw.get("knobs", ()) if k in old}, "host": this_host()}
        return cls(uuid=str(raw["uuid"]), index=int(raw["index"]), backend=str(raw["backend"]),
                   host=str(raw["host"]), owner_pid=int(raw["owner_pid"]), reopen=dict(raw["reopen"]),
                   found=dict(raw["found"]))

    def put_back(self, device: Device) -> str:
        """Restore every knob this journal lists; returns what was done, in words."""
        parts = [knob(key).put_back(device, value) for key, value in self.found.items()]
        return f"GPU {device.info.index}: " + ", ".join(parts or ["nothing changed"])


def _journal_dir() -> Path:
    return state_root() / "journal"


def _lock_dir() -> Path:
    return state_root() / "locks"


def _safe(uuid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in uuid)


def _journal_path(uuid: str) -> Path:
    return _journal_dir() / f"{_safe(uuid)}.json"


def _write_journal(j: Journal) -> None:
    _journal_dir().mkdir(parents=True, exist_ok=True)
    path = _journal_path(j.uuid)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(asdict(j)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Guard:
    """Context manager owning the settings of ``devices`` for one run."""

    def __init__(self, devices: list[Device], reopen: dict) -> None:
        self.devices = devices
        self.reopen = reopen
        self._entry: dict[str, dict[str, Any]] = {}
        self._journals: dict[str, Journal] = {}
        self._lock_files: list = []
        self._old_handlers: dict[int, Any] = {}

    # --- entry / exit -------------------------------------------------------------------------
    def __enter__(self) -> Guard:
        try:
            self._take_locks()
            for d in self.devices:
                self._entry[d.info.uuid] = {k.journal_key: k.found(d) for k in _GUARDED}
            for signum in _SIGNALS:
                self._old_handlers[signum] = signal.signal(signum, _raise_terminated)
        except BaseException:
            self._release_locks()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.restore()
        finally:
            for signum, old in self._old_handlers.items():
                signal.signal(signum, old)
            self._release_locks()

    # --- changes ----------------------------------------------------------------------------------
    def apply(self, device: Device, lever: Knob, value: float) -> float:
        """Journal what ``device`` had, change ``lever`` to ``value`` and read back what is enforced.

        A change the driver refuses for lack of permission changed nothing, so the journal entry
        it needed is taken back: a refused run leaves no journal that later commands would have to
        repair."""
        uuid = device.info.uuid
        before = self._journals.get(uuid)
        if before is None or lever.journal_key not in before.found:
            self._journal(device, lever)
        try:
            return lever.apply(device, value)
        except PermissionDenied:
            self._take_back(uuid, before)
            raise

    def _journal(self, device: Device, lever: Knob) -> None:
        uuid = device.info.uuid
        j = self._journals.get(uuid) or Journal(uuid=uuid, index=device.info.index, backend=device.info.backend,
                                                host=this_host(), owner_pid=os.getpid(), reopen=self.reopen)
        j = replace(j, found={**j.found, lever.journal_key: self._entry[uuid][lever.journal_key]})
        _write_journal(j)
        self._journals[uuid] = j

    def _take_back(self, uuid: str, before: Journal | None) -> None:
        if before is None:
            _journal_path(uuid).unlink(missing_ok=True)
            self._journals.pop(uuid, None)
        else:
            _write_journal(before)
            self._journals[uuid] = before

    def restore(self) -> list[str]:
        """Put back every GPU this guard changed, each on its own; returns what it did, one line
        each. A GPU that cannot be restored keeps its journal and is named in the error raised
        after all the others were restored."""
        done: list[str] = []
        errors: list[str] = []
        for d in self.devices:
            j = self._journals.get(d.info.uuid)
            if j is None:
                continue
            try:
                done.append(j.put_back(d))
                _journal_path(j.uuid).unlink(missing_ok=True)
                del self._journals[j.uuid]
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
            except BlockingIOError as err:
                f.seek(0)
                holder = f.read().strip() or "?"
                f.close()
                raise UsageError(f"GPU {d.info.index} is in use by another tokbench run (pid {holder})") from err
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


def gpu_in_use(device: Device) -> int | None:
    """The pid of the tokbench run that holds ``device``'s lock, or None when it is free."""
    return holder_pid(_lock_dir() / f"{_safe(device.info.uuid)}.lock")


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def journals() -> tuple[list[Journal], list[str]]:
    """Every journal in the state directory, and one line for each that cannot be read."""
    found: list[Journal] = []
    bad: list[str] = []
    for path in sorted(_journal_dir().glob("*.json")) if _journal_dir().exists() else []:
        try:
            found.append(Journal.from_json(json.loads(path.read_text())))
        except (json.JSONDecodeError, TypeError, KeyError, ValueError, OSError) as e:
            bad.append(f"journal {path} cannot be read ({e.__class__.__name__}); remove it by hand once the GPU "
                       "is checked")
    return found, bad


def _is_stale(j: Journal) -> bool:
    return j.host == this_host() and j.owner_pid != os.getpid() and not _pid_alive(j.owner_pid)


def pending_note() -> str | None:
    """One line about journals that wait to be restored (for commands that never restore)."""
    js, bad = journals()
    stale = [j for j in js if _is_stale(j)]
    foreign = [j for j in js if j.host != this_host()]
    if not stale and not foreign and not bad:
        return None
    parts = []
    if stale:
        parts.append(f"{len(stale)} GPU setting(s) left changed by a run that died; `tokbench restore` puts them back")
    if foreign:
        hosts = ", ".join(sorted({j.host for j in foreign}))
        parts.append(f"{len(foreign)} journal(s) of other hosts ({hosts}) in {_journal_dir()}")
    if bad:
        parts.append(f"{len(bad)} unreadable journal(s)")
    return "; ".join(parts)


@dataclass
class Recovery:
    """What ``recover`` did: GPUs put back, and what it could not do, with why (one line each)."""

    restored: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def recover(open_devices_fn: Callable[..., object] | None = None) -> Recovery:
    """Restore every GPU named in a stale journal of this host, each journal on its own: one that
    cannot be restored here (no driver, GPU gone) is kept and reported, never blocking the rest."""
    from harness.devices import open_devices

    open_fn = open_devices_fn or open_devices
    out = Recovery()
    js, out.problems = journals()
    for j in js:
        if j.host != this_host():
            out.problems.append(f"GPU {j.index} ({j.uuid}) was changed by a run on host {j.host}: restore it there "
                                "(`tokbench restore` on that host)")
            continue
        if not _is_stale(j):
            continue
        try:
            ds = open_fn(**j.reopen)
        except TokbenchError as e:
            out.problems.append(f"GPU {j.index} ({j.uuid}) cannot be restored here: {e}; its journal is kept")
            continue
        try:
            match = [d for d in ds.devices if d.info.uuid == j.uuid]  # type: ignore[attr-defined]
            if not match:
                out.problems.append(f"GPU {j.index} ({j.uuid}) is not present any more; its journal is kept")
                continue
            out.restored.append(j.put_back(match[0]) + " (from the journal of a run that died)")
            _journal_path(j.uuid).unlink(missing_ok=True)
        except TokbenchError as e:
            out.problems.append(f"GPU {j.index} ({j.uuid}): {e}; its journal is kept")
        finally:
            ds.close()  # type: ignore[attr-defined]
    return out
