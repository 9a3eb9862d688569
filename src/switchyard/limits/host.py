"""The limits host: rate limits and budgets shared by the worker processes of one host, without Redis.

``switchyard serve --workers N`` runs N processes. Each would keep its own counters, and every
limit and budget would be multiplied by N. Instead the supervising process (the one that holds
the pid file and starts the workers) owns the counters: ``LimitsHost`` runs there, on an event
loop in a thread of its own (``serving``), with a ``MemoryLimiter`` and a ``MemoryLedger``, the
engines that serve a single process, so the semantics are the same by construction. The
workers ask it over a Unix socket (``HostLimiter`` and ``HostLedger`` in ``limits/host_client.py``).
One event loop runs every admit and reserve to its end before the next, so they are atomic
across the workers, as a Lua script is in Redis.

The wire: each frame is a 4-byte little-endian length and an orjson array, ``[id, op, ...]``
from a worker and ``[id, status, value]`` back (``OK``, ``REFUSED`` with the 429's message,
retry and headers, ``SEED`` with the counter the host lacks). Settles and releases carry id 0
and get no answer: a worker's frames are handled in the order they were sent, so its next
request sees them.

- **Holds die with their worker.** When a worker's connection closes (it exited, crashed or was
  killed), its parallel slots, token holds and budget holds are given back at once.
- **Budgets start from the database, through the workers.** The host opens no database: a
  reserve that finds a counter not seeded yet is answered ``SEED`` (scope, period start), and
  the worker asks again with what its usage rollups say. The host seeds each counter once.
- **The socket** lives in a private directory (mode 0700) made fresh for each ``serve``, and is
  itself mode 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from switchyard.core.limits import Admission, BudgetCheck, LimitCheck, LimitState, Reservation
from switchyard.errors import InsufficientQuotaError, RateLimitError
from switchyard.limits.budgets import Clock, MemoryLedger, utcnow
from switchyard.limits.rates import MemoryLimiter

__all__ = ["HEAD", "MAX_FRAME", "OK", "REFUSED", "SEED", "LimitsHost", "frame", "seed_key", "serving"]

log = logging.getLogger("switchyard.limits")

OK, REFUSED, SEED, FAILED = 0, 1, 2, 3
HEAD = struct.Struct("<I")
MAX_FRAME = 16 * 1024 * 1024


def frame(message: Sequence[Any]) -> bytes:
    body = orjson.dumps(message)
    return HEAD.pack(len(body)) + body


def seed_key(scope: str, start: str | None) -> str:
    """How a seed is named on the wire: the scope and its period's start (ISO 8601; '' for total)."""
    return f"{scope}\n{start or ''}"


class _NeedSeed(Exception):
    def __init__(self, scope: str, start: datetime | None) -> None:
        super().__init__(scope)
        self.scope = scope
        self.start = start.isoformat() if start is not None else None


def _state(state: LimitState | None) -> list[float] | None:
    return None if state is None else [state.limit, state.remaining, state.reset_s]


def _refusal(exc: RateLimitError) -> list[Any]:
    kind = "quota" if isinstance(exc, InsufficientQuotaError) else "rate"
    return [kind, exc.message, exc.retry_after, exc.headers]


class _Worker:
    """The leases one connection (one worker) holds, to give back when it goes."""

    __slots__ = ("admitted", "reserved")

    def __init__(self) -> None:
        self.admitted: set[str] = set()
        self.reserved: set[str] = set()


class LimitsHost:
    """The counters of every worker, served on the Unix socket ``path``."""

    def __init__(self, path: Path, limiter: MemoryLimiter | None = None, budget_clock: Clock = utcnow) -> None:
        self._path = path
        self._limiter = limiter if limiter is not None else MemoryLimiter()
        self._seeds: ContextVar[dict[str, float]] = ContextVar("seeds")
        self._ledger = MemoryLedger(self._seeded, budget_clock)
        self._reservations: dict[str, Reservation] = {}  # lease -> its hold, until settled or released
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def _seeded(self, scope: str, start: datetime | None) -> float:
        """The ledger's spent source: the seed the worker sent with this request, else ask for it."""
        key = seed_key(scope, start.isoformat() if start is not None else None)
        seeds = self._seeds.get({})
        if key not in seeds:
            raise _NeedSeed(scope, start)
        return seeds[key]

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()  # (a fresh directory: only a socket left by an earlier start of ours)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self._path))
        os.chmod(self._path, 0o600)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._connections.values():
                writer.close()  # its reader ends, and gives back what the worker held
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        worker = _Worker()
        try:
            while True:
                (size,) = HEAD.unpack(await reader.readexactly(HEAD.size))
                if size > MAX_FRAME:
                    log.warning("limits host: a frame of %d bytes; closing that connection", size)
                    return
                message = orjson.loads(await reader.readexactly(size))
                try:
                    reply = await self._handle(message, worker)
                except Exception as exc:  # a bug: answer it, keep serving the others
                    log.exception("limits host: %s failed", message[1] if message else "?")
                    reply = [message[0], FAILED, type(exc).__name__] if message and message[0] else None
                if reply is not None:
                    writer.write(frame(reply))
                    if writer.transport.get_write_buffer_size() > 1 << 20:
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, orjson.JSONDecodeError):
            pass  # the worker went (or sent nonsense): give back what it held
        finally:
            self._connections.pop(task, None)
            await self._give_back(worker)
            writer.close()

    async def _give_back(self, worker: _Worker) -> None:
        for lease in worker.admitted:
            await self._limiter.settle(Admission(lease), 0)
        for lease in worker.reserved:
            reservation = self._reservations.pop(lease, None)
            if reservation is not None:
                await self._ledger.release(reservation)
        worker.admitted.clear()
        worker.reserved.clear()

    async def _handle(self, m: list[Any], worker: _Worker) -> list[Any] | None:
        op = m[1]
        if op == "admit":  # [id, op, lease, tokens, [[scope, kind, limit, window], ...]]
            lease = m[2]
            checks = [LimitCheck(*c) for c in m[4]]
            try:
                admission = await self._limiter.admit(checks, lease, m[3])
            except RateLimitError as exc:
                return [m[0], REFUSED, _refusal(exc)]
            if self._limiter.holds(lease):
                worker.admitted.add(lease)
            return [m[0], OK, [_state(admission.requests), _state(admission.tokens)]]
        if op == "settle":  # [0, op, lease, tokens]
            worker.admitted.discard(m[2])
            await self._limiter.settle(Admission(m[2]), m[3])
            return None
        if op == "release":  # [0, op, lease]
            worker.reserved.discard(m[2])
            reservation = self._reservations.pop(m[2], None)
            if reservation is not None:
                await self._ledger.release(reservation)
            return None
        if op == "spend":  # [0, op, lease, usd, [[scope, limit, period], ...]]: settle a reservation
            worker.reserved.discard(m[2])
            reservation = self._reservations.pop(m[2], None)
            if reservation is None:  # its connection closed meanwhile (and released it): count the cost
                reservation = Reservation(m[2], [BudgetCheck(*c) for c in m[4]])
            with contextlib.suppress(_NeedSeed):  # no counter here to count it on: its first use seeds it
                await self._ledger.settle(reservation, m[3])
            return None
        seeds = self._seeds.set(m[-1])
        try:
            if op == "available":  # [id, op, checks, seeds]
                room = await self._ledger.available([BudgetCheck(*c) for c in m[2]])
                return [m[0], OK, room]
            if op == "reserve":  # [id, op, lease, usd, checks, seeds]
                lease = m[2]
                try:
                    held = await self._ledger.reserve([BudgetCheck(*c) for c in m[4]], lease, m[3])
                except InsufficientQuotaError as exc:
                    return [m[0], REFUSED, _refusal(exc)]
                worker.reserved.add(lease)
                self._reservations[lease] = held
                return [m[0], OK, held.remaining_usd]
        except _NeedSeed as need:
            return [m[0], SEED, [need.scope, need.start]]
        finally:
            self._seeds.reset(seeds)
        raise ValueError(f"unknown operation {op!r}")


@contextlib.contextmanager
def serving(path: Path, host: LimitsHost | None = None) -> Iterator[LimitsHost]:
    """Run a ``LimitsHost`` on ``path`` in a daemon thread with its own event loop, for as long
    as the block runs (the supervising process spends its time waiting on its workers)."""
    host = host if host is not None else LimitsHost(path)
    ready = threading.Event()
    failure: list[BaseException] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            await host.start()
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            await stop.wait()
        finally:
            await host.aclose()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="switchyard-limits-host",
                              daemon=True)
    thread.start()
    ready.wait()
    if failure:
        thread.join()
        loop.close()
        raise failure[0]
    try:
        yield host
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        if not thread.is_alive():
            loop.close()
