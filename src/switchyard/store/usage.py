"""Usage in SQL: the ``UsageStore`` port.

Three tables. ``usage_records`` holds one raw row per request, a capped ring (:meth:`prune` deletes
by age and keeps at most ``max_rows``). ``usage_rollups`` holds totals per UTC hour, key, model
and the key's team at the time (so a key that moves team leaves its past usage with the old one),
with a latency histogram of the requests that succeeded (``core.latency``), written in the same
transaction as the raw rows and never pruned: every report and budget reads
the rollups, so they stay exact however little raw data is kept. The one exception is grouping
by agent session, which the rollups do not keep (a client names as many sessions as it likes):
it totals the raw rows, so it covers what the retention settings still hold.

Rollup cost is an integer in nano-USD (USD x 1e9; each request's cost rounded to the nearest
nano-dollar), so sums are exact on every backend and in every order. Time filters select whole
hours: a rollup counts when its hour overlaps ``[since, until)``.

``usage_daily`` holds the same totals per UTC day, added to by the same upsert. Reports by day,
key, team or model, and spend totals, read it for the whole UTC days of a range and the hourly
rollups for the part days at its edges (``store.usage_days``): the same sums from about a
twenty-fourth of the rows. Reports by hour read the hourly rollups alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from switchyard.core.latency import BOUNDS_MS, bucket, percentile
from switchyard.core.usage import GROUP_BY, UsageRecord, parse_group_by
from switchyard.store.bulk import BulkInsert
from switchyard.store.engine import AsyncEngine
from switchyard.store.tables import LATENCY_COLUMNS, usage_daily, usage_records, usage_rollups
from switchyard.store.usage_days import Span, daily_rows, spans

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
_d = usage_daily

NO_KEY = ""
"""``usage_rollups.key_id`` of requests made without a key (static keys, auth off); ``team_id``
of requests whose key had no team."""

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


def _no_latency() -> list[int]:
    return [0] * len(LATENCY_COLUMNS)


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
    latency: list[int] = field(default_factory=_no_latency)

    def add(self, record: UsageRecord) -> None:
        self.requests += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.cost_nanousd += nanousd(record.cost_usd)
        self.errors += record.status >= 400
        self.estimated += bool(record.estimated)
        self.cache_read_tokens += record.cache_read_tokens
        self.cache_write_tokens += record.cache_write_tokens
        if record.status < 400:
            self.latency[bucket(record.latency_ms)] += 1


def rollup(records: Iterable[UsageRecord]) -> dict[tuple[datetime, str, str, str], _Totals]:
    """The rollup increments of a batch: per (hour, key id or '', model, team id or '')."""
    out: dict[tuple[datetime, str, str, str], _Totals] = {}
    for record in records:
        group = (hour_start(record.created_at), record.key_id or NO_KEY, record.model, record.team_id or NO_KEY)
        totals = out.get(group)
        if totals is None:
            totals = out[group] = _Totals()
        totals.add(record)
    return out


def _upsert(dialect: str, table: sa.Table) -> Any:
    """INSERT into a rollup table that adds to the row already there (SQLite 3.24+ and PostgreSQL)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # the dialect in use is loaded already; not the other

        stmt: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        stmt = sqlite.insert(table)
    else:
        raise RuntimeError(f"usage rollups need SQLite or PostgreSQL, not {dialect}")
    return stmt.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={c: table.c[c] + stmt.excluded[c] for c in (*_COUNTERS, *LATENCY_COLUMNS)},
    )


def _start(span: Span) -> sa.Column[Any]:
    """The period start column of the table a span reads."""
    return _d.c.day_start if span.daily else _r.c.hour_start


def _day_of(dialect: str, start: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """A rollup's UTC date as 'YYYY-MM-DD' text."""
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", start), "YYYY-MM-DD")
    if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' text, already UTC
        return sa.func.substr(start, 1, 10)
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


def _within(stmt: sa.Select[Any], span: Span) -> sa.Select[Any]:
    start = _start(span)
    if span.low is not None:
        stmt = stmt.where(start >= span.low)
    if span.high is not None:
        stmt = stmt.where(start < span.high)
    return stmt


def _usage_row(values: Mapping[Any, Any]) -> dict[str, object]:
    counts = {c: int(values[c] or 0) for c in _COUNTERS}
    out: dict[str, object] = {
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
    if LATENCY_COLUMNS[0] in values:
        latency = tuple(int(values[c] or 0) for c in LATENCY_COLUMNS)
        out.update(p50_ms=percentile(latency, 0.5), p95_ms=percentile(latency, 0.95), latency_counts=latency)
    return out


def _raw_latency() -> list[sa.ColumnElement[Any]]:
    """The latency histogram of raw rows that succeeded, one sum per bucket."""
    ok, ms = _u.c.status < 400, _u.c.latency_ms
    lows, highs = [None, *BOUNDS_MS], [*BOUNDS_MS, None]  # bucket 0 has no floor, the last no ceiling
    out: list[sa.ColumnElement[Any]] = []
    for name, low, high in zip(LATENCY_COLUMNS, lows, highs, strict=True):
        test = sa.and_(ok, *(() if low is None else (ms >= low,)), *(() if high is None else (ms < high,)))
        out.append(sa.func.sum(sa.case((test, 1), else_=0)).label(name))
    return out


class SqlUsageStore:
    """``UsageStore`` over SQLAlchemy Core; one code path for SQLite and PostgreSQL."""

    def __init__(self, engine: AsyncEngine, *, prune_chunk: int = _PRUNE_CHUNK) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._chunk = prune_chunk
        # the raw insert and the two rollup upserts (70 SET clauses each), compiled on first use
        self._inserts: tuple[BulkInsert, BulkInsert, BulkInsert] | None = None

    # -- writing ----------------------------------------------------------------------------
    async def write(self, records: Sequence[UsageRecord]) -> None:
        """Insert a batch of raw rows and add it to the hourly and daily rollups, in one transaction."""
        if not records:
            return
        increments = rollup(records)
        # one lock order for every writer (PostgreSQL): concurrent batches wait, never deadlock
        rows = [
            {"hour_start": hour, "key_id": key, "model": model, "team_id": team,
             **{c: getattr(totals, c) for c in _COUNTERS}, **dict(zip(LATENCY_COLUMNS, totals.latency, strict=True))}
            for (hour, key, model, team), totals in sorted(increments.items())
        ]
        raw, hourly, daily = self._inserts or self._compile()
        async with self._engine.begin() as conn:
            await raw.run(conn, records)
            await hourly.run(conn, rows)
            await daily.run(conn, daily_rows(rows, (*_COUNTERS, *LATENCY_COLUMNS)))

    def _compile(self) -> tuple[BulkInsert, BulkInsert, BulkInsert]:
        dialect = self._engine.dialect
        self._inserts = (
            BulkInsert(sa.insert(_u), _u, _FIELDS, dialect, read="attributes"),
            BulkInsert(_upsert(self._dialect, _r), _r, [c.name for c in _r.columns], dialect, read="items"),
            BulkInsert(_upsert(self._dialect, _d), _d, [c.name for c in _d.columns], dialect, read="items"),
        )
        return self._inserts

    # -- reading ----------------------------------------------------------------------------
    async def query(
        self,
        *,
        key_id: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: str | Sequence[str] = "day",
        latency: bool = True,
    ) -> list[dict[str, object]]:
        """Totals from the rollups, one row per group, ordered by period, key id, model.

        ``group_by``: one or more of hour, day, key, team, model, session (``"key,model"``). Rows
        carry ``period`` (the UTC hour or day start) and/or ``key_id`` (None for keyless requests),
        ``team_id`` (the key's team when the requests were made; None for none), ``model`` and
        ``session_id`` (None for requests without one), then requests, prompt/completion/total
        tokens, cache read/write tokens (parts of the prompt tokens), cost_usd (and the exact
        cost_nanousd), errors (status >= 400), estimated (usage not reported by the provider),
        and the latency of the requests that succeeded: ``p50_ms``, ``p95_ms`` (None when none
        did) and ``latency_counts``, the histogram they come from (``core.latency``; add two to
        merge them); ``latency=False`` leaves those three out, and their 62 sums (a query over a
        year of rollups takes about a third of the time). ``key_id=""`` selects keyless requests.
        Grouping by session totals the raw rows still kept (see the module's docstring).
        """
        dims = parse_group_by(group_by)
        if "session" in dims:
            stmt = self._by_session(dims, key_id, model, since, until, latency)
        else:
            # hours come from the hourly rows only; days and totals from the daily rows for whole
            # UTC days and the hourly rows for the part days at the edges (``store.usage_days``)
            parts = [Span(False, None if since is None else hour_start(since), until)] if "hour" in dims else (
                spans(since, until))
            counted = (*_COUNTERS, *(LATENCY_COLUMNS if latency else ()))
            selects = [self._rollup_totals(dims, span, key_id, model, counted) for span in parts]
            if len(selects) == 1:
                stmt, columns = selects[0]
                stmt = stmt.order_by(*columns)
            else:
                both = sa.union_all(*(select for select, _ in selects)).subquery()
                keys = [both.c[name] for name in ("period", "key_id", "team_id", "model") if name in both.c]
                stmt = sa.select(*keys, *(sa.func.sum(both.c[c]).label(c) for c in counted))
                if keys:
                    stmt = stmt.group_by(*keys).order_by(*keys)
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
            if "team_id" in values:
                row["team_id"] = values["team_id"] or None
            if "model" in values:
                row["model"] = values["model"]
            if "session_id" in values:
                row["session_id"] = values["session_id"]
            row.update(_usage_row(values))
            out.append(row)
        return out

    def _rollup_totals(self, dims: Sequence[str], span: Span, key_id: str | None, model: str | None,
                       counted: Sequence[str]) -> tuple[sa.Select[Any], list[sa.ColumnElement[Any]]]:
        """The sums of ``counted`` over one span's rollup rows, grouped by the dimensions asked
        for (the grouping columns come second)."""
        table, start = (_d if span.daily else _r), _start(span)
        columns: list[sa.ColumnElement[Any]] = []
        if "hour" in dims:
            columns.append(start.label("period"))
        elif "day" in dims:
            columns.append(_day_of(self._dialect, start).label("period"))
        columns += [table.c[c] for d, c in (("key", "key_id"), ("team", "team_id"), ("model", "model")) if d in dims]
        stmt = sa.select(*columns, *(sa.func.sum(table.c[c]).label(c) for c in counted))
        if columns:
            stmt = stmt.group_by(*columns)
        if key_id is not None:
            stmt = stmt.where(table.c.key_id == key_id)
        if model is not None:
            stmt = stmt.where(table.c.model == model)
        return _within(stmt, span), columns

    async def _cost(self, since: datetime | None, key_ids: Sequence[str] | None, key_id: str | None,
                    model: str | None) -> int:
        """Nano-USD spent since ``since`` (whole hours) by a key, a set of keys or anyone, on a model or any."""
        nanos = 0
        async with self._engine.connect() as conn:
            for span in spans(since, None):
                table = _d if span.daily else _r
                chunks = [None] if key_ids is None else [
                    key_ids[start : start + _IN_CHUNK] for start in range(0, len(key_ids), _IN_CHUNK)]
                for chunk in chunks:
                    stmt = sa.select(sa.func.coalesce(sa.func.sum(table.c.cost_nanousd), 0))
                    if chunk is not None:
                        stmt = stmt.where(table.c.key_id.in_(chunk))
                    if key_id is not None:
                        stmt = stmt.where(table.c.key_id == key_id)
                    if model is not None:
                        stmt = stmt.where(table.c.model == model)
                    nanos += int((await conn.execute(_within(stmt, span))).scalar_one())
        return nanos

    def _by_session(self, dims: Sequence[str], key_id: str | None, model: str | None,
                    since: datetime | None, until: datetime | None, latency: bool) -> sa.Select[Any]:
        """The totals of the raw rows per session (and the other dimensions asked for)."""
        columns: list[sa.ColumnElement[Any]] = []
        if "hour" in dims or "day" in dims:
            columns.append(_raw_period(self._dialect, "hour" if "hour" in dims else "day").label("period"))
        if "key" in dims:
            columns.append(_u.c.key_id)
        if "team" in dims:
            columns.append(_u.c.team_id)
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
            *(_raw_latency() if latency else ()),
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
        return await self._cost(since, None, key_id, model) / 1e9

    async def spent_by_keys(
        self, key_ids: Iterable[str], since: datetime | None = None, *, model: str | None = None
    ) -> float:
        """USD spent by a set of keys (a team) since ``since``, from the rollups."""
        return await self._cost(since, sorted(set(key_ids)), None, model) / 1e9

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
