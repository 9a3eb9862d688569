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
from collections.abc import Coroutine, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

from switchyard.core.limits import Admission, BudgetCheck, LimitCheck, LimitState, Reservation
from switchyard.errors import InsufficientQuotaError, RateLimitError
from switchyard.limits.budgets import Clock, MemoryLedger, utcnow
from switchyard.limits.rates import MemoryLimiter

__all__ = ["HEAD", "MAX_FRAME", "OK", "REFUSED", "SEED", "LimitsHost", "frame", "run_now", "seed_key", "serving"]

log = logging.getLogger("switchyard.limits")

_T = TypeVar("_T")

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


def run_now(step: Coroutine[Any, Any, _T]) -> _T:
    """The result of a coroutine that never waits, run to its end at once.

    The memory engines are coroutines for their Protocols, but they never wait: their clocks are
    plain calls, a counter's lock is free (nothing holds it across a wait), and the host's spent
    source answers or raises at once. So the host runs each operation to its end inside
    ``data_received``: no task, no scheduling, and nothing can come between two operations.
    """
    try:
        step.send(None)
    except StopIteration as done:
        return cast("_T", done.value)
    step.close()
    raise RuntimeError("a limits engine waited inside the limits host")


class _Connection(asyncio.Protocol):
    """One worker: its frames, answered in order, and the leases it holds, given back when it goes."""

    def __init__(self, host: LimitsHost) -> None:
        self._host = host
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.admitted: set[str] = set()
        self.reserved: set[str] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        self._host._connections.add(self)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        out: list[bytes] = []
        start = 0
        while len(buffer) - start >= HEAD.size:
            (size,) = HEAD.unpack_from(buffer, start)
            if size > MAX_FRAME:
                log.warning("limits host: a frame of %d bytes; closing that connection", size)
                assert self.transport is not None
                self.transport.abort()
                return
            end = start + HEAD.size + size
            if len(buffer) < end:
                break
            message: Any = None
            try:
                message = orjson.loads(memoryview(buffer)[start + HEAD.size:end])
                reply = self._host._handle(message, self)
            except Exception as exc:  # nonsense, or a bug: answer it, keep serving the others
                log.exception("limits host: a request failed")
                reply = [message[0], FAILED, type(exc).__name__] if isinstance(message, list) and message else None
            if reply is not None and reply[0]:
                out.append(frame(reply))
            start = end
        del buffer[:start]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        self._host._connections.discard(self)
        self._host._give_back(self)


class LimitsHost:
    """The counters of every worker, served on the Unix socket ``path``."""

    def __init__(self, path: Path, limiter: MemoryLimiter | None = None, budget_clock: Clock = utcnow) -> None:
        self._path = path
        self._limiter = limiter if limiter is not None else MemoryLimiter()
        self._seeds: dict[str, float] = {}  # those sent with the operation running now
        self._ledger = MemoryLedger(self._seeded, budget_clock, seed_timeout=None)  # asks a worker: answers at once
        self._reservations: dict[str, Reservation] = {}  # lease -> its hold, until settled or released
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()

    async def _seeded(self, scope: str, start: datetime | None) -> float:
        """The ledger's spent source: the seed the worker sent with this operation, else ask for it."""
        key = seed_key(scope, start.isoformat() if start is not None else None)
        if key not in self._seeds:
            raise _NeedSeed(scope, start)
        return self._seeds[key]

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()  # (a fresh directory: only a socket left by an earlier start of ours)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), str(self._path))
        os.chmod(self._path, 0o600)

    async def aclose(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()  # it gives back what its worker held
        await self._server.wait_closed()
        self._server = None

    def _give_back(self, worker: _Connection) -> None:
        for lease in worker.admitted:
            run_now(self._limiter.settle(Admission(lease), 0))
        for lease in worker.reserved:
            reservation = self._reservations.pop(lease, None)
            if reservation is not None:
                run_now(self._ledger.release(reservation))
        worker.admitted.clear()
        worker.reserved.clear()

    def _handle(self, m: list[Any], worker: _Connection) -> list[Any] | None:
        op = m[1]
        if op == "admit":  # [id, op, lease, tokens, [[scope, kind, limit, window], ...]]
            lease = m[2]
            try:
                admission = run_now(self._limiter.admit([LimitCheck(*c) for c in m[4]], lease, m[3]))
            except RateLimitError as exc:
                return [m[0], REFUSED, _refusal(exc)]
            if self._limiter.holds(lease):
                worker.admitted.add(lease)
            return [m[0], OK, [_state(admission.requests), _state(admission.tokens)]]
        if op == "settle":  # [0, op, lease, tokens]
            worker.admitted.discard(m[2])
            run_now(self._limiter.settle(Admission(m[2]), m[3]))
            return None
        if op == "release":  # [0, op, lease]
            worker.reserved.discard(m[2])
            reservation = self._reservations.pop(m[2], None)
            if reservation is not None:
                run_now(self._ledger.release(reservation))
            return None
        if op == "spend":  # [0, op, lease, usd, [[scope, limit, period], ...]]: settle a reservation
            worker.reserved.discard(m[2])
            reservation = self._reservations.pop(m[2], None)
            if reservation is None:  # its connection closed meanwhile (and released it): count the cost
                reservation = Reservation(m[2], [BudgetCheck(*c) for c in m[4]])
            with contextlib.suppress(_NeedSeed):  # no counter here to count it on: its first use seeds it
                run_now(self._ledger.settle(reservation, m[3]))
            return None
        self._seeds = m[-1]
        try:
            if op == "available":  # [id, op, checks, seeds]
                return [m[0], OK, run_now(self._ledger.available([BudgetCheck(*c) for c in m[2]]))]
            if op == "reserve":  # [id, op, lease, usd, checks, seeds]
                lease = m[2]
                try:
                    held = run_now(self._ledger.reserve([BudgetCheck(*c) for c in m[4]], lease, m[3]))
                except InsufficientQuotaError as exc:
                    return [m[0], REFUSED, _refusal(exc)]
                worker.reserved.add(lease)
                self._reservations[lease] = held
                return [m[0], OK, held.remaining_usd]
        except _NeedSeed as need:
            return [m[0], SEED, [need.scope, need.start]]
        finally:
            self._seeds = {}
        raise ValueError(f"unknown operation {op!r}")


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's, as the workers run (a round trip costs a quarter of the CPU time): it comes
    with uvicorn[standard]."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@contextlib.contextmanager
def serving(path: Path, host: LimitsHost | None = None) -> Iterator[LimitsHost]:
    """Run a ``LimitsHost`` on ``path`` in a daemon thread with its own event loop, for as long
    as the block runs (the supervising process spends its time waiting on its workers)."""
    host = host if host is not None else LimitsHost(path)
    ready = threading.Event()
    failure: list[BaseException] = []
    loop = _new_loop()
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
