"""The inference server a profile asks tokbench to start: started once, waited for, always stopped.

A server is started from an argv list (never a shell) in its own process group, with its output in
a log file, and made to receive SIGTERM if tokbench dies without unwinding (Linux's parent-death
signal). It is shared by every concurrency of a sweep (a vLLM start takes minutes) and stopped,
process group and all, when the process exits: on success, on error, on Ctrl-C and on SIGTERM (the
sweep's guard turns it into an exception that unwinds). Every failure is one ``ServerError`` line.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from harness.errors import TokbenchError

_PR_SET_PDEATHSIG = 1


class ServerError(TokbenchError):
    """The inference server could not be started, never became ready, or died."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def probe(url: str, path: str, timeout_s: float = 2.0) -> bool:
    """True when ``GET url+path`` answers 200."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=timeout_s) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ServerProcess:
    """One started server."""

    def __init__(self, command: Sequence[str], url: str, env: dict[str, str] | None = None,
                 ready_path: str = "/v1/models") -> None:
        self.command = list(command)
        self.url = url
        self.ready_path = ready_path
        fd, name = tempfile.mkstemp(prefix="tokbench-server-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                             start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as e:
                raise ServerError(f"cannot start the server {self.command[0]!r}: {e.strerror or e}") from None
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exited(self) -> int | None:
        """The exit code once the server has exited, else None."""
        return self.proc.poll()

    def last_line(self) -> str:
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][:200] if lines else ""

    def died_message(self, when: str) -> str:
        tail = self.last_line()
        return (f"the server ({self.command[0]}) exited with code {self.exited()} {when}"
                + (f"; its last line: {tail}" if tail else "") + f" (log: {self.log_path})")

    def wait_ready(self, timeout_s: float, poll_s: float = 0.25) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.exited() is not None:
                raise ServerError(self.died_message("before it was ready"))
            if probe(self.url, self.ready_path):
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerError(f"the server at {self.url} was not ready after {timeout_s:g} s "
                                  f"(GET {self.ready_path} never answered 200); stopped it (log: {self.log_path})")
            time.sleep(poll_s)

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after ``grace_s``."""
        if self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


_SERVERS: dict[tuple, ServerProcess] = {}


def shared_server(command: Sequence[str], url: str, env: dict[str, str], ready_path: str,
                  ready_timeout_s: float) -> ServerProcess:
    """The server for ``command``, started (and waited for) on first use and reused after."""
    key = (tuple(command), url, tuple(sorted(env.items())))
    server = _SERVERS.get(key)
    if server is not None and server.exited() is None:
        return server
    if server is not None:
        raise ServerError(server.died_message("during the run"))
    if probe(url, ready_path):
        raise ServerError(f"something already answers at {url}: stop it, or drop [workload.endpoint].command "
                          "to measure the server that is running")
    server = ServerProcess(command, url, env, ready_path)
    _SERVERS[key] = server
    server.wait_ready(ready_timeout_s)
    return server


def stop_all() -> None:
    for server in _SERVERS.values():
        server.stop()
    _SERVERS.clear()
