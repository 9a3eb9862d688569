"""What ``serve --workers N`` shares with its worker processes beside the settings: one private
directory, made fresh for each ``serve`` and removed when it stops, holding

    limits.sock   the limits host's socket (without Redis: the supervisor owns the counters)
    metrics/      every worker's Prometheus metrics files, which one scrape adds up

Prometheus' client picks its multiprocess mode when it is imported, from
``PROMETHEUS_MULTIPROC_DIR``, so ``export`` sets that before the workers are started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WorkerShare"]

_ENV = "SWITCHYARD_WORKER_SHARE"
_PROMETHEUS_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, slots=True)
class WorkerShare:
    root: Path

    @property
    def limits_socket(self) -> Path:
        return self.root / "limits.sock"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    def export(self) -> None:
        """Hand this directory to the worker processes started from now on."""
        os.environ[_ENV] = str(self.root)
        os.environ[_PROMETHEUS_ENV] = str(self.metrics_dir)

    def withdraw(self) -> None:
        """Undo ``export`` (the directory is gone)."""
        for name in (_ENV, _PROMETHEUS_ENV):
            os.environ.pop(name, None)

    @classmethod
    def from_environ(cls) -> WorkerShare | None:
        """In a worker: the directory its supervisor shares, if any."""
        root = os.environ.get(_ENV)
        return cls(Path(root)) if root else None
