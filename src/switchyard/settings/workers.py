"""What ``serve`` shares with the worker processes it supervises beside the settings: one
private directory, made fresh for each ``serve`` and removed when it stops, holding

    supervisor.json   the supervisor's pid and its record of restarts (the last crash, why, and
                      which local models were busy), for /admin/status, /v1/status and /metrics
    fault-PID.txt     where worker PID's ``faulthandler`` writes its Python stacks if it dies of a
                      fatal signal (SIGSEGV, SIGABRT, ...)
    busy-PID          the local models worker PID is loading or generating with, kept current
    limits.sock       several workers, without Redis: the limits host's socket (the supervisor
                      owns the counters)
    metrics/          several workers: every worker's Prometheus metrics files, which one scrape
                      adds up

Prometheus' client picks its multiprocess mode when it is imported, from
``PROMETHEUS_MULTIPROC_DIR``, so ``export`` sets that before the workers are started (only
with several workers: one worker keeps its metrics in memory, as a lone process does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WorkerShare"]

_ENV = "SWITCHYARD_WORKER_SHARE"
_POOLED_ENV = "SWITCHYARD_WORKERS_POOLED"
_PROMETHEUS_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, slots=True)
class WorkerShare:
    root: Path
    pooled: bool = True  # several workers: metrics files added up and, without Redis, the limits host

    @property
    def limits_socket(self) -> Path:
        return self.root / "limits.sock"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    @property
    def state_file(self) -> Path:
        return self.root / "supervisor.json"

    def fault_file(self, pid: int) -> Path:
        return self.root / f"fault-{pid}.txt"

    def busy_file(self, pid: int) -> Path:
        return self.root / f"busy-{pid}"

    def export(self) -> None:
        """Hand this directory to the worker processes started from now on."""
        os.environ[_ENV] = str(self.root)
        os.environ[_POOLED_ENV] = "1" if self.pooled else "0"
        if self.pooled:
            os.environ[_PROMETHEUS_ENV] = str(self.metrics_dir)

    def withdraw(self) -> None:
        """Undo ``export`` (the directory is gone)."""
        for name in (_ENV, _POOLED_ENV, _PROMETHEUS_ENV):
            os.environ.pop(name, None)

    @classmethod
    def from_environ(cls) -> WorkerShare | None:
        """In a worker: the directory its supervisor shares, if any."""
        root = os.environ.get(_ENV)
        return cls(Path(root), os.environ.get(_POOLED_ENV, "1") != "0") if root else None
