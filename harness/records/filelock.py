"""Who holds an advisory lock: the one probe behind "is this run still being written" and "is this GPU
being swept", so both answer the same way (a lock dies with its process, unlike a pid file)."""

from __future__ import annotations

import fcntl
from pathlib import Path


def held(path: Path) -> bool:
    """True while some process holds an exclusive ``flock`` on ``path``."""
    if not path.exists():
        return False
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def holder_pid(path: Path) -> int | None:
    """The pid a held lock file names (its holder writes it), -1 when unreadable; None when free."""
    if not held(path):
        return None
    text = path.read_text().strip()
    return int(text) if text.isdigit() else -1
