"""``data_dir/switchyard.pid``: one server per data dir, and how other commands find it.

The server holds an exclusive ``flock`` on the file for its whole life and writes its pid and
address into it; the kernel drops the lock when the process ends, however it ends. So the lock,
not the file's existence, says whether a server runs: a second ``serve`` cannot take it and
refuses (naming the one that holds it) without touching the file, and ``stop``, ``status`` and
``doctor`` can tell a live server from a stale file left by a crash.

``serve``'s supervisor holds the lock, and its pid is the one written: the process that ``stop``
signals, which stops its workers. A forked worker (``serve`` with one worker) shares the
descriptor, so a worker still draining after its supervisor died keeps the lock, as it keeps
the port, until it ends; spawned workers (``--workers N``) do not inherit it.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Holder", "PidFile", "ServerRunningError", "holder", "read_pid_file", "remove_stale"]

_POLL_S = 0.05


@dataclass(frozen=True)
class Holder:
    """What the pid file says: the server's pid and address (either may be unreadable)."""

    pid: int | None
    address: str | None


class ServerRunningError(Exception):
    """Another server holds this data dir's lock."""

    def __init__(self, path: Path, running: Holder) -> None:
        self.path = path
        self.running = running
        pid = f"pid {running.pid}" if running.pid is not None else "pid unknown"
        at = f", {running.address}" if running.address else ""
        super().__init__(f"switchyard is already running from {path.parent} ({pid}{at})")


def _parse(text: str) -> Holder:
    lines = text.splitlines()
    first = lines[0].strip() if lines else ""
    pid = int(first) if first.isdigit() and int(first) > 0 else None
    address = lines[1].strip() if len(lines) > 1 and lines[1].strip() else None
    return Holder(pid, address)


def read_pid_file(path: Path) -> Holder | None:
    """The file's contents, or None when it does not exist or cannot be read."""
    try:
        return _parse(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError):
        return None


def _lock(path: Path, wait: float) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock, or None when another process
    still holds it after ``wait`` seconds. A file unlinked by its last holder between our open and
    our lock is not the pid file any more: open again."""
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_S)
            continue
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            return fd
        os.close(fd)


def holder(path: Path, wait: float = 1.0) -> Holder | None:
    """The server holding ``path``'s lock (its pid and address as it wrote them), or None when no
    process holds it (no server, or a stale file). A server that has just taken the lock writes
    its pid a moment later: wait up to ``wait`` seconds for it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: a server runs
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        deadline = time.monotonic() + wait
        while True:
            found = _parse(os.pread(fd, 4096, 0).decode("ascii", errors="replace"))
            if found.pid is not None or time.monotonic() >= deadline:
                return found
            time.sleep(_POLL_S)
    finally:
        os.close(fd)


def remove_stale(path: Path) -> bool:
    """Remove ``path`` when no server holds it (taking the lock first, so that a server starting
    at that moment keeps its file). True when it was removed."""
    if not path.exists():
        return False
    fd = _lock(path, wait=0)
    if fd is None:
        return False
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
    return True


class PidFile:
    """The running server's side: ``acquire`` before anything is printed or bound, ``release``
    at exit (the kernel releases the lock anyway if the process dies)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, address: str, wait: float = 1.0) -> None:
        """Take the lock and write ``pid\\naddress``; raise ServerRunningError when another
        process holds it (``wait`` covers a ``stop`` or ``status`` peeking at the same moment)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _lock(self.path, wait)
        if fd is None:
            raise ServerRunningError(self.path, holder(self.path) or Holder(None, None))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{address}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the file (still under the lock), then drop the lock."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
