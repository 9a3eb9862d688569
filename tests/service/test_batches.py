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


class HungSink(Sink):
    """A store that accepts a write and does not answer until ``answer`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()
        self.writing = asyncio.Event()

    async def write(self, items: Sequence[int]) -> None:
        self.writing.set()
        await self.answer.wait()
        self.batches.append(list(items))


def test_a_store_that_hangs_holds_up_only_the_writer_then_gets_everything_once() -> None:
    async def main() -> tuple[HungSink, int, int]:
        sink = HungSink()
        writer: BatchWriter[int] = BatchWriter(sink.write, what="items", log=log, interval=0.01, batch_size=10)
        writer.start("test-writer")
        writer.add(0)
        await asyncio.wait_for(sink.writing.wait(), 10)  # the write of [0] hangs
        for i in range(1, 95):
            writer.add(i)  # never waits
        waiting = writer.pending
        sink.answer.set()
        for _ in range(500):
            if writer.pending == 0:
                break
            await asyncio.sleep(0.01)
        await writer.aclose()
        return sink, waiting, writer.dropped

    sink, waiting, dropped = asyncio.run(main())
    assert waiting == 94 and dropped == 0
    assert sink.items == list(range(95))  # once each, in order


def test_the_waiting_items_stay_bounded_while_a_store_hangs() -> None:
    async def main() -> tuple[HungSink, list[int], int]:
        sink = HungSink()
        told: list[int] = []
        writer: BatchWriter[int] = BatchWriter(sink.write, what="items", log=log, interval=0.01, batch_size=10,
                                               max_buffer=100, on_dropped=told.append)
        writer.start("test-writer")
        writer.add(0)
        await asyncio.wait_for(sink.writing.wait(), 10)
        for i in range(1, 1001):
            writer.add(i)
            assert writer.pending <= 100
        sink.answer.set()
        await writer.aclose()
        return sink, told, writer.dropped

    sink, told, dropped = asyncio.run(main())
    assert sum(told) == dropped and dropped > 0
    assert sink.items[0] == 0 and sink.items[-1] == 1000  # the newest are kept, the oldest dropped
    assert len(sink.items) == 1001 - dropped == len(set(sink.items))
    assert sink.items[1:] == sorted(sink.items[1:])


def test_shutdown_with_a_store_that_never_answers_gives_up_instead_of_hanging() -> None:
    async def main() -> int:
        sink = HungSink()
        writer: BatchWriter[int] = BatchWriter(sink.write, what="items", log=log, interval=0.01, stop_wait=0.2)
        writer.start("test-writer")
        writer.add(0)
        await asyncio.wait_for(sink.writing.wait(), 10)
        writer.add(1)
        await asyncio.wait_for(writer.aclose(), 10)  # a hang here fails the test
        return writer.pending

    assert asyncio.run(main()) == 2  # given up on, with an error log: nothing was written
