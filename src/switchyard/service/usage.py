"""Usage records: queued on the request path, written in batches off it, flushed at shutdown."""

from __future__ import annotations

import logging
from collections.abc import Callable

from switchyard.core.ports import UsageStore
from switchyard.core.usage import UsageRecord
from switchyard.service.batches import BatchWriter

__all__ = ["UsageRecorder"]

log = logging.getLogger("switchyard.usage")


class UsageRecorder(BatchWriter[UsageRecord]):
    """``record`` is synchronous and never fails; a background task writes batches.

    A failed write keeps its rows for the next attempt, so an unreachable store delays usage
    but does not lose it (up to a million rows, after which the oldest are dropped with an
    error log); a store that hangs holds up only this writer, never a request, and the rows are
    written once it answers. See :class:`~switchyard.service.batches.BatchWriter`.
    """

    def __init__(
        self, store: UsageStore, interval: float = 0.5, batch_size: int = 1000,
        on_written: Callable[[int], None] | None = None, on_dropped: Callable[[int], None] | None = None,
        on_tick: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(store.write, what="usage rows", log=log, interval=interval, batch_size=batch_size,
                         on_written=on_written, on_dropped=on_dropped, on_tick=on_tick)

    record = BatchWriter.add

    def start(self, name: str = "switchyard-usage-writer") -> None:
        super().start(name)
