"""``serve``'s supervisor: the process that holds the pid file and the listening socket, and runs
the app in worker processes (one by default, ``--workers N``), so that a worker that dies, in a
local model's native code above all, takes down neither the port nor the server.

It is uvicorn's multiprocess supervisor (``Multiprocess``: workers sharing the socket, a
health-check ping every half second, SIGTERM, SIGINT and SIGHUP handled), with what it lacks:

- **One worker is forked, not spawned.** ``serve`` has imported the app and prepared the store
  in this process already; a forked worker starts from there instead of importing it all
  again, and shares those pages with the supervisor (which freezes them out of the GC first,
  so that collections in the worker do not copy them). So the default ``serve`` answers as
  soon as a lone process did, and costs little more memory (``bench/serve_startup.py``;
  docs/local-models.md). With ``--workers N`` they are spawned, as in uvicorn: Prometheus'
  client, already imported here, picks its multiprocess mode only when it is imported.

- **A dead worker is reported.** One error line names the signal that killed it, or its exit
  status, or the health check it stopped answering, the local models it was loading or
  generating with (``busy-PID``, which the worker keeps current) and its Python stacks at the
  fatal signal (``faulthandler``'s ``fault-PID.txt``): ``observability/crashes.py``. A worker
  that stops answering the health check (uvicorn then kills it) is sent SIGABRT first, so that
  its stacks say where it hung.
- **It is counted.** ``supervisor.json`` holds the restarts and the last crash; every worker
  reads it for ``/admin/status``, ``/v1/status`` and ``switchyard_worker_restarts_total``.
- **A crash loop does not spin.** A worker that dies within ``STABLE_S`` of its start extends
  a streak; from the second such death in a row, its replacement waits 1, 2, 4, ... up to
  ``MAX_BACKOFF_S`` seconds (``backoff``). Meanwhile the socket stays open: connections queue
  in its backlog and are served by the next worker.
- **Stopping closes the listener first,** so new connections are refused while the workers
  drain (uvicorn's supervisor keeps its copy of the socket open until the last one exits).

A first worker that fails before it serves (``STARTUP_FAILURE``: its lifespan raised, the
database cannot be opened) stops the supervisor, as in uvicorn: it would fail the same way again.
A replacement that fails so (the database away for a moment) is one more death in the streak.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing import Pipe
from typing import Any, cast

from uvicorn._subprocess import subprocess_started
from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import SIGNALS, Multiprocess, Process

from switchyard.observability.crashes import Crash, collect, forget, write_state
from switchyard.settings import WorkerShare

__all__ = ["MAX_BACKOFF_S", "STABLE_S", "Supervisor", "backoff", "supervise"]

log = logging.getLogger("switchyard.supervisor")

STABLE_S = 30.0  # a worker that lived this long before dying ends a crash streak
MAX_BACKOFF_S = 30.0
_ABORT_WAIT_S = 2.0


def backoff(streak: int) -> float:
    """Seconds before replacing a worker that died ``streak`` times in a row, each soon after
    its start: none for the first, then 1, 2, 4, ... up to ``MAX_BACKOFF_S``."""
    return 0.0 if streak <= 1 else min(MAX_BACKOFF_S, 2.0 ** (streak - 2))


_FORK = multiprocessing.get_context("fork")


class _Forked(Process):
    """uvicorn's worker, forked rather than spawned: it starts with everything its supervisor
    imported (the app, SQLAlchemy, ...) instead of importing it all again."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:  # (no super(): it spawns)
        self.config = config
        self._server = None
        self.parent_conn, self.child_conn = Pipe()
        self.process = cast(Any, _FORK.Process(target=_forked_started, args=(config, self.target, sockets)))


def _forked_started(config: Config, target: Callable[..., None], sockets: list[socket.socket]) -> None:
    for sig in SIGNALS:  # the supervisor's handlers queue signals for its own loop; a worker's are its own
        signal.signal(sig, signal.SIG_DFL)
    subprocess_started(config, target, sockets, None)  # (multiprocessing gave it /dev/null for stdin)


class Supervisor(Multiprocess):
    def __init__(self, config: Config, sockets: list[socket.socket], share: WorkerShare) -> None:
        super().__init__(config, sockets)
        self._share = share
        self._born: dict[int, float] = {}  # worker pid -> when it started (monotonic)
        self._due: dict[int, float] = {}  # index of a dead worker -> when its replacement starts
        self._streak = 0
        self.restarts = 0
        self.last_crash: Crash | None = None
        self.failed_to_start = False
        self._fork = config.workers == 1 and not share.pooled

    def _new(self) -> Process:
        if self._fork and threading.active_count() == 1:  # (forking a threaded process can deadlock)
            # What serve built so far lives as long as the supervisor: out of every GC pass, so
            # that no collection in the worker writes to (and so copies) the pages it shares.
            gc.collect()
            gc.freeze()
            return _Forked(self.config, self.sockets)
        return Process(self.config, self.sockets)

    def _write_state(self) -> None:
        try:
            write_state(self._share, os.getpid(), self.restarts, self.last_crash)
        except OSError as exc:  # the report in the log is what matters; keep supervising
            log.warning("cannot write %s: %s", self._share.state_file, exc.strerror or exc)

    def init_processes(self) -> None:
        self._write_state()
        for _ in range(self.processes_num):
            process = self._new()
            process.start()
            self.processes.append(process)
        now = time.monotonic()
        for process in self.processes:
            if process.pid is not None:
                self._born[process.pid] = now

    def terminate_all(self) -> None:
        for sock in self.sockets:  # refuse new connections while the workers drain
            sock.close()
        super().terminate_all()

    def restart_all(self) -> None:
        """SIGHUP: uvicorn's, with forked workers where they are (each replacement serves before
        its predecessor is retired)."""
        for index, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._new()
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error("worker %s was not ready in time; keeping worker %s", new.pid, old.pid)
                return
            self._born[new.pid or 0] = time.monotonic()
            old.terminate()
            old.join()
            self.processes[index] = new

    def _start(self, index: int) -> None:
        process = self._new()
        process.start()
        self.processes[index] = process
        if process.pid is not None:
            self._born[process.pid] = time.monotonic()

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            due = self._due.get(index)
            if due is not None:
                if time.monotonic() >= due:
                    del self._due[index]
                    if not process.process.is_alive():  # (a SIGHUP restart may have replaced it)
                        self._start(index)
                continue
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            hung = process.process.is_alive()
            if hung and process.pid is not None:  # SIGABRT first: its faulthandler writes where it hangs
                with contextlib.suppress(OSError):
                    os.kill(process.pid, signal.SIGABRT)
                process.process.join(_ABORT_WAIT_S)
            process.kill()
            process.join()
            if self.should_exit.is_set():
                return
            if process.exitcode == STARTUP_FAILURE and self.restarts == 0:  # (a replacement backs off)
                log.error("worker %s failed to start (see above); stopping", process.pid,
                          extra={"worker": process.pid})
                self.failed_to_start = True
                self.should_exit.set()
                return
            self._replace(index, process, hung)

    def _replace(self, index: int, process: Process, hung: bool) -> None:
        pid = process.pid or 0
        crash = collect(self._share, pid, process.exitcode, hung)
        lived = time.monotonic() - self._born.pop(pid, time.monotonic() - STABLE_S)
        self._streak = self._streak + 1 if lived < STABLE_S else 1
        delay = backoff(self._streak)
        self.restarts += 1
        self.last_crash = crash
        self._write_state()
        when = "now" if delay == 0 else f"in {delay:g} s ({self._streak} deaths in a row, each within " \
                                        f"{STABLE_S:g} s of its start)"
        fields: dict[str, Any] = {"worker": pid, "signal": crash.signal, "exit_code": crash.exit_code,
                                  "models": list(crash.models), "restarts": self.restarts, "restart_in_s": delay}
        if crash.fault:
            fields["fault"] = crash.fault
        log.error("%s; a fresh worker starts %s (restart %d; local models load again on their next request)",
                  crash.describe(), when, self.restarts, extra=fields)
        if delay:
            self._due[index] = time.monotonic() + delay
        else:
            self._start(index)

    def join_all(self) -> None:
        super().join_all()
        for process in self.processes:
            if process.pid is not None:
                forget(self._share, process.pid)


def supervise(app: str, share: WorkerShare, workers: int, **options: Any) -> int:
    """Serve the factory ``app`` in ``workers`` processes under a ``Supervisor`` until it is
    stopped; the exit status (``STARTUP_FAILURE`` when a worker failed to start)."""
    config = Config(app, factory=True, workers=workers, **options)
    sock = config.bind_socket()  # here: the listener outlives every worker
    supervisor = Supervisor(config, [sock], share)
    supervisor.run()
    return STARTUP_FAILURE if supervisor.failed_to_start else 0
