"""Async access to a SQLAlchemy Core engine, through SQLAlchemy's own greenlet bridge.

Why not ``sqlalchemy.ext.asyncio``: that package's ``__init__`` imports ``AsyncSession`` and
with it the whole ORM, which the gateway never uses. The ORM was the largest block of the
server's idle memory (about 6 MB) and about 0.1 s of its start. This module is the small part
of ``AsyncEngine`` the stores use (connect, begin, execute, scalar, run_sync, dispose), built
the same way: every call runs the synchronous Core method inside
:func:`sqlalchemy.util.greenlet_spawn`, so the async driver underneath (aiosqlite, asyncpg)
awaits on the event loop. Results come back buffered, as ``AsyncConnection.execute`` returns
them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, CursorResult, Dialect, Engine
from sqlalchemy.sql.base import Executable
from sqlalchemy.util import greenlet_spawn

__all__ = ["AsyncConnection", "AsyncEngine", "create_async_engine"]

_T = TypeVar("_T")
_Rows = CursorResult[*tuple[Any, ...]]
_P = ParamSpec("_P")


async def _run_to_completion(coro: Coroutine[Any, Any, None]) -> None:
    """Run cleanup in its own task and wait for it even if the caller is cancelled meanwhile,
    so a cancelled request still hands its connection back before it unwinds; the
    cancellation is re-raised afterwards."""
    task = asyncio.ensure_future(coro)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as err:
            if task.done():
                raise
            cancelled = err
        else:
            break
    if cancelled is not None:
        raise cancelled


class AsyncConnection:
    """One pooled connection, checked out for an ``async with`` block."""

    __slots__ = ("_engine", "_sync")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sync: Connection | None = None

    @property
    def sync_connection(self) -> Connection:
        if self._sync is None:
            raise RuntimeError("use the connection inside 'async with engine.connect()'")
        return self._sync

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    async def execute(self, statement: Executable, parameters: Any = None) -> _Rows:
        return await greenlet_spawn(self.sync_connection.execute, statement, parameters)

    async def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        return await greenlet_spawn(self.sync_connection.scalar, statement, parameters)

    async def run_sync(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Call ``fn(sync_connection, ...)``; it may use the synchronous Core API throughout."""
        connection = self.sync_connection
        return await greenlet_spawn(lambda: fn(connection, *args, **kwargs))

    async def __aenter__(self) -> AsyncConnection:
        self._sync = await greenlet_spawn(self._engine.connect)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        sync, self._sync = self._sync, None
        if sync is not None:
            await _run_to_completion(greenlet_spawn(sync.close))


class AsyncEngine:
    """A synchronous :class:`~sqlalchemy.engine.Engine` on an async driver, used from asyncio."""

    __slots__ = ("sync_engine",)

    def __init__(self, sync_engine: Engine) -> None:
        if not sync_engine.dialect.is_async:
            raise ValueError(f"{sync_engine.dialect.name}+{sync_engine.dialect.driver} is not an async driver")
        self.sync_engine = sync_engine

    @property
    def dialect(self) -> Dialect:
        return self.sync_engine.dialect

    def connect(self) -> AsyncConnection:
        """``async with engine.connect() as conn``: a connection with no transaction begun."""
        return AsyncConnection(self.sync_engine)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """``async with engine.begin() as conn``: committed on success, rolled back on error."""
        async with AsyncConnection(self.sync_engine) as conn:
            transaction = await greenlet_spawn(conn.sync_connection.begin)
            try:
                yield conn
            except BaseException as err:
                await greenlet_spawn(transaction.__exit__, type(err), err, err.__traceback__)
                raise
            await greenlet_spawn(transaction.__exit__, None, None, None)

    async def dispose(self) -> None:
        """Close every pooled connection that is checked in."""
        await greenlet_spawn(self.sync_engine.dispose)


def create_async_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An engine for an async-driver URL (``sqlite+aiosqlite``, ``postgresql+asyncpg``)."""
    return AsyncEngine(sa.create_engine(url, **kwargs))
