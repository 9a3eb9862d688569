"""An INSERT that a writer runs once per batch: compiled by SQLAlchemy once, run as the driver's
``executemany`` with each row a tuple.

``Connection.execute(insert, [dict, ...])`` builds and checks a parameter dict per row and
calls each column's bind processor through several layers; for the usage writer's batches
that cost more CPU than the database's own work (about 80,000 instructions a row). Here the
statement is compiled for the dialect once (so the SQL is SQLAlchemy's, placeholders and
casts included), the rows' values are read in the statement's parameter order, and only the
columns whose type has a bind processor on this dialect (a timestamp on SQLite, say) are
converted, a column at a time. On PostgreSQL the tuples go to the driver's ``executemany``
(asyncpg pipelines it); on SQLite a batch is one multi-VALUES statement, as SQLAlchemy renders
it there (``store/database.py`` says why). Either way inside the caller's transaction.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from switchyard.store.engine import AsyncConnection

__all__ = ["BulkInsert"]


class BulkInsert:
    """``statement`` (an INSERT of ``table``, an upsert included) for ``dialect``, with values for
    ``columns`` read from each row by attribute (``read="attributes"``: dataclasses) or by key
    (``"items"``: dicts)."""

    __slots__ = ("_converters", "_get", "_group", "_head", "_per_statement", "_sql", "_tail")

    def __init__(self, statement: sa.Insert, table: sa.Table, columns: Sequence[str], dialect: Dialect, *,
                 read: Literal["attributes", "items"]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(columns))
        order = compiled.positiontup
        if order is None or len(order) < 2 or sorted(order) != sorted(columns):
            raise RuntimeError(f"{dialect.name}: expected positional parameters for {list(columns)}, got {order}")
        self._sql = compiled.string
        self._get: Callable[[Any], tuple[Any, ...]] = (
            operator.attrgetter(*order) if read == "attributes" else operator.itemgetter(*order))
        self._converters = [  # what execute() would call for each column, where anything
            (position, process) for position, name in enumerate(order)
            if (process := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        ]
        self._per_statement = 0  # rows per multi-VALUES statement; 0: the driver's executemany
        if dialect.use_insertmanyvalues_wo_returning and dialect.paramstyle == "qmark":  # SQLite (store/database.py)
            self._group = "(" + ", ".join("?" * len(order)) + ")"
            self._head, found, self._tail = self._sql.partition(" VALUES " + self._group)
            if not found or self._group in self._tail:
                raise RuntimeError(f"sqlite: no single VALUES group in {self._sql[:200]!r}")
            self._head += " VALUES "
            self._per_statement = max(1, min(dialect.insertmanyvalues_page_size,
                                             dialect.insertmanyvalues_max_parameters // len(order)))

    async def run(self, conn: AsyncConnection, rows: Iterable[Any]) -> None:
        """Insert ``rows`` in ``conn``'s transaction."""
        params = list(map(self._get, rows))
        if not params:
            return
        if self._converters:  # a column at a time: one C-level pass per column, not a loop per value
            columns = list(zip(*params, strict=True))
            for position, process in self._converters:
                columns[position] = tuple(map(process, columns[position]))
            params = list(zip(*columns, strict=True))
        if not self._per_statement:
            sql = self._sql
            await conn.run_sync(lambda c: c.exec_driver_sql(sql, params))
            return
        # sqlite3 runs an executemany a row at a time, handing the GIL between aiosqlite's thread and
        # the event loop on each row (seconds for a large batch while the loop is busy): one
        # statement holds the whole batch, as SQLAlchemy's "insertmanyvalues" would render it
        per = self._per_statement
        statements = [
            (self._head + ", ".join([self._group] * len(chunk)) + self._tail, tuple(chain.from_iterable(chunk)))
            for chunk in (params[i:i + per] for i in range(0, len(params), per))
        ]

        def insert(c: Connection) -> None:
            for sql, values in statements:
                c.exec_driver_sql(sql, values)

        await conn.run_sync(insert)
