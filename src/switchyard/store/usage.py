"""Usage in SQL: the ``UsageStore`` port.

Two tables. ``usage_records`` holds one raw row per request, a capped ring (:meth:`prune` deletes
by age and keeps at most ``max_rows``). ``usage_rollups`` holds totals per UTC hour, key and model,
written in the same transaction as the raw rows and never pruned: every report and budget reads
the rollups, so they stay exact however little raw data is kept. The one exception is grouping
by agent session, which the rollups do not keep (a client names as many sessions as it likes):
it totals the raw rows, so it covers what the retention settings still hold.

Rollup cost is an integer in nano-USD (USD x 1e9; each request's cost rounded to the nearest
nano-dollar), so sums are exact on every backend and in every order. Time filters select whole
hours: a rollup counts when its hour overlaps ``[since, until)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from switchyard.core.usage import GROUP_BY, UsageRecord, parse_group_by
from switchyard.store.engine import AsyncEngine
from switchyard.store.tables import usage_records, usage_rollups

__all__ = [
    "GROUP_BY",
    "NO_KEY",
    "SqlUsageStore",
    "format_usd",
    "hour_start",
    "nanousd",
    "parse_group_by",
]

_u = usage_records
_r = usage_rollups

NO_KEY = ""
"""``usage_rollups.key_id`` of requests made without a key (static keys, auth off)."""

_COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "cost_nanousd", "errors", "estimated",
             "cache_read_tokens", "cache_write_tokens")
_FIELDS = tuple(f.name for f in fields(UsageRecord))
_PRUNE_CHUNK = 50_000  # rows deleted per transaction, so writers are never held off for long
_IN_CHUNK = 500  # key ids per IN (...) list


def hour_start(at: datetime) -> datetime:
    """The UTC hour ``at`` falls in."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: usage times must be timezone-aware")
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def nanousd(cost_usd: float) -> int:
    """A cost in whole nano-dollars (what the rollups add up)."""
    if not math.isfinite(cost_usd) or cost_usd <= 0:
        return 0
    return round(cost_usd * 1e9)


def format_usd(nanos: int) -> str:
    """Exact decimal USD of a nano-dollar amount: 1500 -> '0.000001500'."""
    whole, frac = divmod(nanos, 10**9)
    return f"{whole}.{frac:09d}"


@dataclass(slots=True)
class _Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nanousd: int = 0
    errors: int = 0
    estimated: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def add(self, record: UsageRecord) -> None:
        self.requests += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.cost_nanousd += nanousd(record.cost_usd)
        self.errors += record.status >= 400
        self.estimated += bool(record.estimated)
        self.cache_read_tokens += record.cache_read_tokens
        self.cache_write_tokens += record.cache_write_tokens


def rollup(records: Iterable[UsageRecord]) -> dict[tuple[datetime, str, str], _Totals]:
    """The rollup increments of a batch: per (hour, key id or '', model)."""
    out: dict[tuple[datetime, str, str], _Totals] = {}
    for record in records:
        group = (hour_start(record.created_at), record.key_id or NO_KEY, record.model)
        totals = out.get(group)
        if totals is None:
            totals = out[group] = _Totals()
        totals.add(record)
    return out


def _upsert(dialect: str) -> Any:
    """INSERT into the rollups that adds to the row already there (SQLite 3.24+ and PostgreSQL)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # the dialect in use is loaded already; not the other

        stmt: Any = postgresql.insert(_r)
    elif dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        stmt = sqlite.insert(_r)
    else:
        raise RuntimeError(f"usage rollups need SQLite or PostgreSQL, not {dialect}")
    return stmt.on_conflict_do_update(
        index_elements=[_r.c.hour_start, _r.c.key_id, _r.c.model],
        set_={c: _r.c[c] + stmt.excluded[c] for c in _COUNTERS},
    )


def _day_of(dialect: str) -> sa.ColumnElement[str]:
    """hour_start's UTC date as 'YYYY-MM-DD' text."""
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", _r.c.hour_start), "YYYY-MM-DD")
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' text, already UTC
        return sa.func.substr(_r.c.hour_start, 1, 10)
    raise RuntimeError(f"usage rollups need SQLite or PostgreSQL, not {dialect}")


def _raw_period(dialect: str, unit: str) -> sa.ColumnElement[Any]:
    """A raw row's UTC hour (or day, as 'YYYY-MM-DD' text) in the form the rollups' periods take."""
    created = _u.c.created_at
    if dialect == "postgresql":
        if unit == "day":
            return sa.func.to_char(sa.func.timezone("UTC", created), "YYYY-MM-DD")
        return sa.func.timezone("UTC", sa.func.date_trunc("hour", sa.func.timezone("UTC", created)))
    if dialect == "sqlite":  # 'YYYY-MM-DD HH:MM:SS.ffffff' text, already UTC
        if unit == "day":
            return sa.func.substr(created, 1, 10)
        return sa.func.strftime("%Y-%m-%d %H:00:00.000000", created)
    raise RuntimeError(f"usage reports need SQLite or PostgreSQL, not {dialect}")


def _range(stmt: sa.Select[Any], since: datetime | None, until: datetime | None) -> sa.Select[Any]:
    if since is not None:
        stmt = stmt.where(_r.c.hour_start >= hour_start(since))
    if until is not None:
        stmt = stmt.where(_r.c.hour_start < until)
    return stmt


def _usage_row(values: Mapping[Any, Any]) -> dict[str, object]:
    counts = {c: int(values[c] or 0) for c in _COUNTERS}
    return {
        "requests": counts["requests"],
        "prompt_tokens": counts["prompt_tokens"],
        "completion_tokens": counts["completion_tokens"],
        "total_tokens": counts["prompt_tokens"] + counts["completion_tokens"],
        "cache_read_tokens": counts["cache_read_tokens"],
        "cache_write_tokens": counts["cache_write_tokens"],
        "cost_usd": counts["cost_nanousd"] / 1e9,
        "cost_nanousd": counts["cost_nanousd"],
        "errors": counts["errors"],
        "estimated": counts["estimated"],
    }


class SqlUsageStore:
    """``UsageStore`` over SQLAlchemy Core; one code path for SQLite and PostgreSQL."""

    def __init__(self, engine: AsyncEngine, *, prune_chunk: int = _PRUNE_CHUNK) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._chunk = prune_chunk

    # -- writing ----------------------------------------------------------------------------
    async def write(self, records: Sequence[UsageRecord]) -> None:
        """Insert a batch of raw rows and add it to the hourly rollups, in one transaction."""
        if not records:
            return
        increments = rollup(records)
        # one lock order for every writer (PostgreSQL): concurrent batches wait, never deadlock
        rows = [
            {"hour_start": hour, "key_id": key, "model": model,
             **{c: getattr(totals, c) for c in _COUNTERS}}
            for (hour, key, model), totals in sorted(increments.items())
        ]
        async with self._engine.begin() as conn:
            # a plain field read: dataclasses.asdict deep-copies and costs ~20x more per row
            await conn.execute(sa.insert(_u), [{f: getattr(r, f) for f in _FIELDS} for r in records])
            await conn.execute(_upsert(self._dialect), rows)

    # -- reading ----------------------------------------------------------------------------
    async def query(
        self,
        *,
        key_id: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: str | Sequence[str] = "day",
    ) -> list[dict[str, object]]:
        """Totals from the rollups, one row per group, ordered by period, key id, model.

        ``group_by``: one or more of hour, day, key, model, session (``"key,model"``). Rows carry
        ``period`` (the UTC hour or day start) and/or ``key_id`` (None for keyless requests),
        ``model`` and ``session_id`` (None for requests without one), then requests,
        prompt/completion/total tokens, cache read/write tokens (parts of the prompt tokens),
        cost_usd (and the exact cost_nanousd), errors (status >= 400) and estimated (usage not
        reported by the provider). ``key_id=""`` selects keyless requests. Grouping by session
        totals the raw rows still kept (see the module's docstring).
        """
        dims = parse_group_by(group_by)
        if "session" in dims:
            stmt = self._by_session(dims, key_id, model, since, until)
        else:
            columns: list[sa.ColumnElement[Any]] = []
            if "hour" in dims:
                columns.append(_r.c.hour_start.label("period"))
            elif "day" in dims:
                columns.append(_day_of(self._dialect).label("period"))
            if "key" in dims:
                columns.append(_r.c.key_id)
            if "model" in dims:
                columns.append(_r.c.model)
            sums = [sa.func.sum(_r.c[c]).label(c) for c in _COUNTERS]
            stmt = sa.select(*columns, *sums)
            if columns:
                stmt = stmt.group_by(*columns).order_by(*columns)
            if key_id is not None:
                stmt = stmt.where(_r.c.key_id == key_id)
            if model is not None:
                stmt = stmt.where(_r.c.model == model)
            stmt = _range(stmt, since, until)
        async with self._engine.connect() as conn:
            result = (await conn.execute(stmt)).mappings().all()
        out: list[dict[str, object]] = []
        for values in result:
            if values["requests"] is None:  # no grouping and no rows: SUM over nothing
                continue
            row: dict[str, object] = {}
            if "period" in values:
                period = values["period"]
                row["period"] = period.astimezone(UTC) if isinstance(period, datetime) else datetime.fromisoformat(
                    str(period)).replace(tzinfo=UTC)
            if "key_id" in values:
                row["key_id"] = values["key_id"] or None
            if "model" in values:
                row["model"] = values["model"]
            if "session_id" in values:
                row["session_id"] = values["session_id"]
            row.update(_usage_row(values))
            out.append(row)
        return out

    def _by_session(self, dims: Sequence[str], key_id: str | None, model: str | None,
                    since: datetime | None, until: datetime | None) -> sa.Select[Any]:
        """The totals of the raw rows per session (and the other dimensions asked for)."""
        columns: list[sa.ColumnElement[Any]] = []
        if "hour" in dims or "day" in dims:
            columns.append(_raw_period(self._dialect, "hour" if "hour" in dims else "day").label("period"))
        if "key" in dims:
            columns.append(_u.c.key_id)
        if "model" in dims:
            columns.append(_u.c.model)
        columns.append(_u.c.session_id)
        stmt = sa.select(
            *columns,
            sa.func.count().label("requests"),
            sa.func.sum(_u.c.prompt_tokens).label("prompt_tokens"),
            sa.func.sum(_u.c.completion_tokens).label("completion_tokens"),
            # each row's cost in whole nano-dollars, as the rollups add them
            sa.func.sum(sa.cast(sa.func.round(_u.c.cost_usd * 1e9), sa.BigInteger)).label("cost_nanousd"),
            sa.func.sum(sa.case((_u.c.status >= 400, 1), else_=0)).label("errors"),
            sa.func.sum(sa.case((_u.c.estimated == sa.true(), 1), else_=0)).label("estimated"),
            sa.func.sum(_u.c.cache_read_tokens).label("cache_read_tokens"),
            sa.func.sum(_u.c.cache_write_tokens).label("cache_write_tokens"),
        ).group_by(*columns).order_by(*columns)
        if key_id is not None:
            stmt = stmt.where(_u.c.key_id.is_(None) if key_id == NO_KEY else _u.c.key_id == key_id)
        if model is not None:
            stmt = stmt.where(_u.c.model == model)
        if since is not None:
            stmt = stmt.where(_u.c.created_at >= hour_start(since))
        if until is not None:
            stmt = stmt.where(_u.c.created_at < until)
        return stmt

    async def summary(self, since: datetime | None = None) -> list[dict[str, object]]:
        """Per key and model (keyless first): requests, tokens, cost, errors and estimated rows."""
        return await self.query(since=since, group_by=("key", "model"))

    async def spent(self, scope: str | None = None, since: datetime | None = None) -> float:
        """USD spent since ``since`` (whole hours, from the rollups).

        ``scope``: a key id, or ``key:<id>``, ``key:<id>|model:<alias>``, ``model:<alias>``;
        None for everything. Team budgets use :meth:`spent_by_keys`.
        """
        key_id, model = _scope(scope)
        stmt = sa.select(sa.func.coalesce(sa.func.sum(_r.c.cost_nanousd), 0))
        if key_id is not None:
            stmt = stmt.where(_r.c.key_id == key_id)
        if model is not None:
            stmt = stmt.where(_r.c.model == model)
        async with self._engine.connect() as conn:
            nanos = int((await conn.execute(_range(stmt, since, None))).scalar_one())
        return nanos / 1e9

    async def spent_by_keys(
        self, key_ids: Iterable[str], since: datetime | None = None, *, model: str | None = None
    ) -> float:
        """USD spent by a set of keys (a team) since ``since``, from the rollups."""
        ids = sorted(set(key_ids))
        nanos = 0
        async with self._engine.connect() as conn:
            for start in range(0, len(ids), _IN_CHUNK):
                stmt = sa.select(sa.func.coalesce(sa.func.sum(_r.c.cost_nanousd), 0)).where(
                    _r.c.key_id.in_(ids[start : start + _IN_CHUNK]))
                if model is not None:
                    stmt = stmt.where(_r.c.model == model)
                nanos += int((await conn.execute(_range(stmt, since, None))).scalar_one())
        return nanos / 1e9

    async def raw_count(self) -> int:
        """Raw rows held (the ring's fill)."""
        async with self._engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(_u))).scalar_one())

    # -- retention ----------------------------------------------------------------------------
    async def prune(self, max_rows: int, max_age: timedelta, now: datetime | None = None) -> int:
        """Delete raw rows older than ``max_age``, then the oldest beyond the newest ``max_rows``.

        Rollups are never touched. Deletes run in chunks of their own transactions, so the
        usage writer is not held off for long. Returns the number of rows deleted.
        """
        if max_rows < 0:
            raise ValueError("max_rows must be >= 0")
        cutoff = (now if now is not None else datetime.now(UTC)) - max_age
        deleted = 0
        while True:  # by age: created_at is indexed
            oldest = sa.select(_u.c.id).where(_u.c.created_at < cutoff).order_by(_u.c.id).limit(self._chunk)
            async with self._engine.begin() as conn:
                count = (await conn.execute(sa.delete(_u).where(_u.c.id.in_(oldest.scalar_subquery())))).rowcount
            deleted += count
            if count < self._chunk:
                break
        async with self._engine.connect() as conn:
            first, last = (await conn.execute(sa.select(sa.func.min(_u.c.id), sa.func.max(_u.c.id)))).one()
            if first is None or int(last) - int(first) < max_rows:  # ids are unique: no more rows than that
                return deleted
            # the newest row that falls outside the ring: it and every older row go
            threshold = (await conn.execute(
                sa.select(_u.c.id).order_by(_u.c.id.desc()).offset(max_rows).limit(1))).scalar_one_or_none()
        if threshold is None:
            return deleted
        upto = int(first) - 1
        while upto < threshold:  # by id ranges (the primary key), oldest first
            upto = min(upto + self._chunk, int(threshold))
            async with self._engine.begin() as conn:
                deleted += (await conn.execute(sa.delete(_u).where(_u.c.id <= upto))).rowcount
        return deleted

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        async with self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))


def _scope(scope: str | None) -> tuple[str | None, str | None]:
    """(key id, model) of a scope string or a bare key id."""
    if scope is None:
        return None, None
    if not scope.startswith(("key:", "model:", "team:")):
        return scope, None
    key_id = model = None
    for part in scope.split("|"):
        kind, _, value = part.partition(":")
        if kind == "key" and key_id is None:
            key_id = value
        elif kind == "model" and model is None:
            model = value
        else:
            raise ValueError(f"cannot total spend for scope {scope!r}; teams: use spent_by_keys")
    return key_id, model
