"""Why a worker died: what a worker leaves for its supervisor, and what the supervisor tells the
workers that follow.

A local model runs in native code (llama.cpp, torch) inside the worker process; a segfault or an
abort there kills the process, with no Python exception to log. So each worker, from its start:

- points ``faulthandler`` at ``fault-PID.txt`` in the supervisor's directory (its Python stacks
  at the fatal signal: which thread was in which call);
- keeps ``busy-PID`` current: the local models it is loading or generating with, one name a
  line, ended by an empty line (it is rewritten in place, so a reader stops at that line).

The supervisor reads both when it reaps a dead worker (``collect``), logs the crash, counts it,
and writes ``supervisor.json`` (``write_state``), which the workers read for ``/admin/status``,
``/v1/status`` and ``/metrics`` (``read_state``, ``RestartsCollector``).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from switchyard.settings import WorkerShare

__all__ = ["Crash", "RestartsCollector", "WorkerRecord", "collect", "forget", "read_state", "write_state"]

_FAULT_CHARS = 4000  # of the stacks, in the log line and the state file


class WorkerRecord:
    """In a worker: the files its supervisor reads if it dies."""

    def __init__(self, share: WorkerShare) -> None:
        pid = os.getpid()
        self._fault: IO[str] = open(share.fault_file(pid), "w", encoding="utf-8")
        faulthandler.enable(file=self._fault, all_threads=True)
        self._busy = os.open(share.busy_file(pid), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.busy(())

    def busy(self, models: Sequence[str]) -> None:
        """The local models loading or generating now (called when that set changes)."""
        data = "".join(f"{name}\n" for name in models).encode() + b"\n"
        os.pwrite(self._busy, data, 0)
        os.ftruncate(self._busy, len(data))


@dataclass(frozen=True, slots=True)
class Crash:
    """A worker that died without being asked to."""

    worker_pid: int
    exit_code: int | None  # negative: the signal that killed it
    hung: bool  # it stopped answering the supervisor's health check and was killed
    models: tuple[str, ...]  # local models loading or generating when it died
    fault: str  # faulthandler's Python stacks, when a fatal signal left them (logged, never served)
    at: float = 0.0  # Unix time

    @property
    def signal(self) -> str | None:
        if self.hung or self.exit_code is None or self.exit_code >= 0:
            return None
        try:
            return signal.Signals(-self.exit_code).name
        except ValueError:
            return f"signal {-self.exit_code}"

    @property
    def reason(self) -> str:
        if self.hung:
            return "stopped answering its health check and was killed"
        name = self.signal
        if name is not None:
            described = signal.strsignal(-self.exit_code) if self.exit_code is not None else None
            return f"died of {name}" + (f" ({described})" if described and described != name else "")
        return f"exited with status {self.exit_code}"

    def describe(self) -> str:
        """``worker 123 died of SIGSEGV (Segmentation fault) while local model m was busy``."""
        line = f"worker {self.worker_pid} {self.reason}"
        if len(self.models) == 1:
            line += f" while local model {self.models[0]} was busy"
        elif self.models:
            line += f" while local models {', '.join(self.models)} were busy"
        return line

    def as_json(self) -> dict[str, Any]:
        return {"at": round(self.at, 3), "worker_pid": self.worker_pid, "reason": self.reason,
                "signal": self.signal, "exit_code": self.exit_code, "models": list(self.models),
                "description": self.describe()}


def _read(path: os.PathLike[str]) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read(64 * 1024)
    except OSError:
        return ""


def collect(share: WorkerShare, pid: int, exit_code: int | None, hung: bool) -> Crash:
    """In the supervisor: what the dead worker ``pid`` left (its files are removed)."""
    listed = _read(share.busy_file(pid)).split("\n\n", 1)[0]
    models = tuple(name for name in listed.split("\n") if name)
    fault = _read(share.fault_file(pid)).strip()
    if len(fault) > _FAULT_CHARS:
        fault = fault[:_FAULT_CHARS] + "\n..."
    forget(share, pid)
    return Crash(pid, exit_code, hung, models, fault, time.time())


def forget(share: WorkerShare, pid: int) -> None:
    for path in (share.busy_file(pid), share.fault_file(pid)):
        with contextlib.suppress(OSError):
            path.unlink()


def write_state(share: WorkerShare, supervisor_pid: int, restarts: int, last: Crash | None) -> None:
    """In the supervisor: its pid and its restarts, for the workers to show (replaced atomically)."""
    state = {"pid": supervisor_pid, "restarts": restarts, "last_crash": last.as_json() if last is not None else None}
    tmp = share.state_file.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(state))
    os.replace(tmp, share.state_file)


def read_state(share: WorkerShare) -> dict[str, Any] | None:
    """In a worker: what its supervisor last wrote (None when it cannot be read)."""
    try:
        state = orjson.loads(share.state_file.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


class RestartsCollector(Collector):
    """``switchyard_worker_restarts_total``: the workers started again after one died, read from
    the supervisor's state at each scrape."""

    def __init__(self, source: Callable[[], dict[str, Any] | None]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        state = self._source() or {}
        yield CounterMetricFamily("switchyard_worker_restarts",
                                  "Worker processes started again after one died (a fatal signal such as a "
                                  "crash in a local model's native code, an exit, a hang).",
                                  value=float(state.get("restarts", 0)))
