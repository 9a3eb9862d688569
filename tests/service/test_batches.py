"""BatchWriter: a few large batches under load, every item written once and in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from switchyard.service.batches import BatchWriter

log = logging.getLogger("test.batches")


class Sink:
    """A store that takes ``delay`` seconds per write (a database commit), failing when told to."""

    def __init__(self, delay: float = 0.0, fail: int = 0) -> None:
        self.delay = delay
        self.fail = fail
        self.batches: list[list[int]] = []

    async def write(self, items: Sequence[int]) -> None:
        await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("store unreachable")
        self.batches.append(list(items))

    @property
    def items(self) -> list[int]:
        return [i for b in self.batches for i in b]


def test_a_steady_flow_is_written_once_per_interval_not_continuously() -> None:
    """Items that arrive while a slow write runs wait for the next interval. (Draining them at
    once wrote a batch of a few rows every commit: a store kept busy by tiny writes.)"""

    async def main() -> tuple[Sink, int, float]:
        sink = Sink(delay=0.02)
        writer: BatchWriter[int] = BatchWriter(sink.write, what="items", log=log, interval=0.1, batch_size=10_000)
        writer.start("test-writer")
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(600):  # about 0.6 s of one item a millisecond (longer on a loaded machine)
            writer.add(i)
            await asyncio.sleep(0.001)
        during, elapsed = len(sink.batches), loop.time() - started
        await writer.aclose()
        return sink, during, elapsed

    sink, during, elapsed = asyncio.run(main())
    assert sink.items == list(range(600))
    # one write per 0.1 s interval, where the draining loop wrote after every 20 ms commit
    assert 2 <= during <= elapsed / 0.1 + 2, (during, elapsed, [len(b) for b in sink.batches])


def test_batch_size_caps_each_write_and_wakes_the_writer_early() -> None:
    async def main() -> Sink:
        sink = Sink()
        writer: BatchWriter[int] = BatchWriter(sink.write, what="items", log=log, interval=60.0, batch_size=1000)
        writer.start("test-writer")
        for i in range(2500):
            writer.add(i)
        for _ in range(200):  # a full batch wakes the writer long before its 60 s interval
            if writer.written >= 2000:
                break
            await asyncio.sleep(0.01)
        assert writer.written >= 2000
        await writer.aclose()
        return sink

    sink = asyncio.run(main())
    assert [len(b) for b in sink.batches] == [1000, 1000, 500]
    assert sink.items == list(range(2500))


def test_a_failed_write_keeps_its_items_in_order_for_the_next() -> None:
    async def main() -> Sink:
        sink = Sink(fail=2)
        writer: BatchWriter[int] = BatchWriter(sink.write, what="items", log=log, interval=0.02, batch_size=100)
        writer.start("test-writer")
        for i in range(50):
            writer.add(i)
        await asyncio.sleep(0.1)  # two failed attempts, then a good one
        for i in range(50, 80):
            writer.add(i)
        await writer.aclose()
        return sink

    sink = asyncio.run(main())
    assert sink.items == list(range(80))
