"""The async engine for one database URL (SQLite or PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from switchyard.store.engine import AsyncEngine, create_async_engine

__all__ = ["SQLITE_BUSY_TIMEOUT_S", "Database", "sqlite_path"]

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another process's write lock before failing."""


def sqlite_path(url: str | URL) -> Path | None:
    """The file behind a SQLite URL; None for other backends and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets readers run beside one writer, so a CLI process and the server can share
    # the file; NORMAL is durable across application crashes in WAL mode.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


class Database:
    """Owns one ``AsyncEngine``. Build with :meth:`create`, close with :meth:`dispose`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    def create(cls, url: str | URL, **engine_kwargs: Any) -> Database:
        """An engine for ``url``; for a SQLite file, its folder is created if missing."""
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            connect_args = dict(engine_kwargs.pop("connect_args", {}))
            connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
            # sqlite3 keeps 128 prepared statements per connection by default; a usage batch
            # is a multi-VALUES INSERT of its own length, so that cache filled with statements
            # of up to 13,000 parameters each (tens of MB). Background writes are all that
            # reach the database per request, so preparing each statement anew costs little.
            connect_args.setdefault("cached_statements", 0)
            engine = create_async_engine(parsed, connect_args=connect_args, **engine_kwargs)
            sa.event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
            # A batch of rows as one multi-VALUES INSERT, not a DBAPI executemany: sqlite3 steps
            # each row of an executemany apart, and every step hands the GIL between aiosqlite's
            # thread and a busy event loop. Under load that made a 1,000-row usage batch take
            # seconds; as one statement it takes one hand-over.
            engine.sync_engine.dialect.use_insertmanyvalues_wo_returning = True
            path = sqlite_path(parsed)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        else:
            engine_kwargs.setdefault("pool_pre_ping", True)
            engine = create_async_engine(parsed, **engine_kwargs)
        return cls(engine)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        async with self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()
