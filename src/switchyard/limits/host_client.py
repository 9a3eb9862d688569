"""A worker's side of the limits host (``limits/host.py``): ``HostLimiter`` and ``HostLedger``
implement ``Limiter`` and ``BudgetLedger`` by asking the supervising process over its Unix socket.

One connection per worker (``HostLink``) carries every request's questions, each answered by
id. An admit or a reserve is one round trip; a settle or a release is one frame sent without
waiting (the host handles a worker's frames in order). An admit or reserve that was cancelled
or timed out after its frame left is taken back by a settle or release sent behind it.

When the host cannot be reached (the connection is refused or lost, or no answer comes within
``timeout`` seconds) an admit is the 503 ``limits_unavailable`` and a reserve raises
``LedgerUnavailableError``: ``FallbackLimiter`` and ``FallbackLedger`` (``limits/fallback.py``)
turn them into per-process limits, or the 503 with ``limits_fail_closed``, as for Redis. The
host gives back whatever a lost connection held; a settle that finds no connection is dropped
(the usage rows have the cost, and a host seeds its counters from them).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import orjson

from switchyard.core.budget_periods import SpentSource
from switchyard.core.limits import Admission, BudgetCheck, LimitCheck, LimitState, Reservation
from switchyard.errors import InsufficientQuotaError, RateLimitError
from switchyard.limits.budgets import MICRO, Held, LedgerUnavailableError, period_of, to_micro, utcnow
from switchyard.limits.host import HEAD, MAX_FRAME, OK, REFUSED, SEED, frame, seed_key
from switchyard.limits.rates import unavailable

__all__ = ["HostLedger", "HostLimiter", "HostLink", "HostUnavailableError"]

class HostUnavailableError(Exception):
    """The limits host cannot be reached, or did not answer in time."""


class _Connection(asyncio.Protocol):
    def __init__(self, link: HostLink) -> None:
        self._link = link
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= HEAD.size:
            (size,) = HEAD.unpack_from(buffer, start)
            end = start + HEAD.size + size
            if size > MAX_FRAME or len(buffer) < end:
                break
            self._link._answered(orjson.loads(memoryview(buffer)[start + HEAD.size:end]))
            start = end
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self._link._lost(self)


class HostLink:
    """The worker's one connection to the host, made on first use and again after it is lost."""

    def __init__(self, path: Path, timeout: float = 1.0) -> None:
        self._path = path
        self._timeout = timeout
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[list[Any]]] = {}
        self._ids = itertools.count(1)

    async def _connect(self) -> _Connection:
        async with self._connecting:
            if self._connection is not None:
                return self._connection
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self._timeout):
                    _, connection = await loop.create_unix_connection(lambda: _Connection(self), str(self._path))
            except (OSError, TimeoutError) as exc:
                raise HostUnavailableError(f"cannot reach the limits host: {type(exc).__name__}") from exc
            self._connection = connection
            return connection

    def _answered(self, reply: list[Any]) -> None:
        waiter = self._pending.pop(reply[0], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    def _lost(self, connection: _Connection) -> None:
        if self._connection is connection:
            self._connection = None
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            if not waiter.done():
                waiter.set_exception(HostUnavailableError("the limits host went away"))

    def _write(self, data: bytes) -> bool:
        connection = self._connection
        if connection is None or connection.transport is None or connection.transport.is_closing():
            return False
        connection.transport.write(data)
        return True

    async def call(self, message: list[Any]) -> list[Any]:
        """Send ``[op, ...]`` and wait for its answer, ``[id, status, value]``."""
        if self._connection is None:
            await self._connect()
        loop = asyncio.get_running_loop()
        ident = next(self._ids)
        waiter: asyncio.Future[list[Any]] = loop.create_future()
        if not self._write(frame([ident, *message])):
            raise HostUnavailableError("the limits host went away")
        self._pending[ident] = waiter
        timer = loop.call_at(loop.time() + self._timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._pending.pop(ident, None)

    def send(self, message: list[Any]) -> None:
        """Send ``[op, ...]`` without waiting for an answer; dropped when not connected (the host
        gave back what the lost connection held)."""
        self._write(frame([0, *message]))

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()


def _expire(waiter: asyncio.Future[list[Any]]) -> None:
    if not waiter.done():
        waiter.set_exception(HostUnavailableError("the limits host did not answer in time"))


def _error(kind: str, message: str, retry_after: float | None, headers: dict[str, str]) -> RateLimitError:
    err = InsufficientQuotaError(message) if kind == "quota" else RateLimitError(message, retry_after=retry_after)
    err.headers.update(headers)
    return err


def _budgets(checks: Sequence[BudgetCheck]) -> list[list[Any]]:
    return [[c.scope, c.limit_usd, c.period] for c in checks]


def _state(value: list[Any] | None) -> LimitState | None:
    return None if value is None else LimitState(int(value[0]), int(value[1]), float(value[2]))


class HostLimiter:
    """Rate limits kept by the limits host, shared by every worker of this host."""

    def __init__(self, link: HostLink) -> None:
        self._link = link

    async def admit(self, checks: Sequence[LimitCheck], lease: str, tokens: int) -> Admission:
        wire = [[c.scope, c.kind, c.limit, c.window] for c in checks]
        try:
            reply = await self._link.call(["admit", lease, max(0, tokens), wire])
        except HostUnavailableError as exc:
            self._link.send(["settle", lease, 0])  # (if the admit counted after all)
            raise unavailable() from exc
        except BaseException:  # cancelled with the frame sent: take back whatever it counted
            self._link.send(["settle", lease, 0])
            raise
        status, value = reply[1], reply[2]
        if status == REFUSED:
            raise _error(*value)
        if status != OK:
            raise unavailable()
        return Admission(lease, tuple(checks), requests=_state(value[0]), tokens=_state(value[1]))

    async def settle(self, admission: Admission, tokens: int) -> None:
        if admission.settled:
            return
        admission.settled = True
        self._link.send(["settle", admission.lease, max(0, tokens)])

    async def aclose(self) -> None:
        await self._link.aclose()


class HostLedger:
    """Budgets kept by the limits host; ``spent_source`` seeds a counter the host has not seen
    yet (the usage rollups, read by this worker)."""

    def __init__(self, link: HostLink, spent_source: SpentSource | None = None, *, seed_cache_s: float = 2.0) -> None:
        self._link = link
        self._source = spent_source
        self._seed_cache_s = seed_cache_s
        self._seeds: dict[str, tuple[float, float]] = {}  # seed key -> (when, USD)
        self._locks: dict[str, asyncio.Lock] = {}

    async def _seed(self, scope: str, start: str | None) -> float:
        """What the usage rollups say, read once per worker per ``seed_cache_s`` (concurrent
        requests that all found the counter new wait for one read)."""
        if self._source is None:
            return 0.0
        key = seed_key(scope, start)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._seeds.get(key)
            if cached is None or time.monotonic() - cached[0] > self._seed_cache_s:
                since = datetime.fromisoformat(start) if start is not None else None
                cached = self._seeds[key] = (time.monotonic(), await self._source(scope, since))
                if len(self._seeds) > 10_000:
                    self._seeds = {k: v for k, v in self._seeds.items()
                                   if time.monotonic() - v[0] <= self._seed_cache_s}
        self._locks.pop(key, None)
        return cached[1]

    async def _ask(self, message: list[Any]) -> list[Any]:
        seeds: dict[str, float] = {}
        message.append(seeds)
        for _ in range(16):  # one seed per counter the host lacks (a period may turn meanwhile)
            try:
                reply = await self._link.call(message)
            except HostUnavailableError as exc:
                raise LedgerUnavailableError(str(exc)) from exc
            if reply[1] != SEED:
                return reply
            scope, start = reply[2]
            seeds[seed_key(scope, start)] = await self._seed(scope, start)
        raise LedgerUnavailableError("the limits host kept asking for seeds")

    async def available(self, checks: Sequence[BudgetCheck]) -> float:
        if not checks:
            return math.inf
        reply = await self._ask(["available", _budgets(checks)])
        if reply[1] != OK:
            raise LedgerUnavailableError("the limits host failed")
        return float(reply[2])

    async def reserve(self, checks: Sequence[BudgetCheck], lease: str, amount_usd: float) -> Reservation:
        now = utcnow()
        micro = to_micro(amount_usd)
        held = Held(lease, tuple(checks), micro / MICRO, periods=tuple(period_of(c.period, now) for c in checks),
                    owner=self, micro=micro)
        if not checks:
            return held
        try:
            reply = await self._ask(["reserve", lease, micro / MICRO, _budgets(checks)])
        except BaseException:  # cancelled or unanswered: a hold it may have made is given back
            self._link.send(["release", lease])
            raise
        if reply[1] == REFUSED:
            raise _error(*reply[2])
        if reply[1] != OK:
            raise LedgerUnavailableError("the limits host failed")
        held.remaining_usd = {scope: float(room) for scope, room in reply[2].items()}
        return held

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        if reservation.done:
            return
        reservation.done = True
        if reservation.checks:
            self._link.send(["spend", reservation.lease, actual_usd, _budgets(reservation.checks)])

    async def release(self, reservation: Reservation) -> None:
        if reservation.done:
            return
        reservation.done = True
        if reservation.checks:
            self._link.send(["release", reservation.lease])

    async def aclose(self) -> None:
        await self._link.aclose()
