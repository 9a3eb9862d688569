"""Daily usage totals: ``usage_daily``, the hourly rollups added up per UTC day.

Same dimensions and counters as ``usage_rollups`` (the latency histogram too), keyed by the
day's 00:00 UTC. Filled here from the hourly rows already written; from then on the usage
writer adds to both tables in one transaction.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LATENCY = tuple(f"lat_{i:02d}" for i in range(62))  # fixed here: the buckets of revision 0008
_COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "cost_nanousd", "errors", "estimated",
             "cache_read_tokens", "cache_write_tokens")
_DIMS = ("key_id", "model", "team_id")


def upgrade() -> None:
    zero = sa.text("0")
    op.create_table(
        "usage_daily",
        sa.Column("day_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False, server_default=sa.text("''")),
        *(sa.Column(c, sa.BigInteger(), nullable=False, server_default=zero) for c in _COUNTERS),
        *(sa.Column(c, sa.Integer(), nullable=False, server_default=zero) for c in _LATENCY),
        sa.PrimaryKeyConstraint("day_start", "key_id", "model", "team_id"),
    )
    op.create_index("ix_usage_daily_key_id_day_start", "usage_daily", ["key_id", "day_start"])
    hourly = sa.table("usage_rollups", *(sa.column(c) for c in ("hour_start", *_DIMS, *_COUNTERS, *_LATENCY)))
    daily = sa.table("usage_daily", *(sa.column(c) for c in ("day_start", *_DIMS, *_COUNTERS, *_LATENCY)))
    if op.get_bind().dialect.name == "postgresql":
        utc = sa.func.timezone("UTC", hourly.c.hour_start)
        day: sa.ColumnElement[Any] = sa.func.timezone("UTC", sa.func.date_trunc("day", utc))
    else:  # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' text, already UTC
        day = sa.func.substr(hourly.c.hour_start, 1, 10).concat(" 00:00:00.000000")
    op.execute(daily.insert().from_select(
        ["day_start", *_DIMS, *_COUNTERS, *_LATENCY],
        sa.select(day.label("day_start"), *(hourly.c[c] for c in _DIMS),
                  *(sa.func.sum(hourly.c[c]) for c in (*_COUNTERS, *_LATENCY)))
        .group_by(day, *(hourly.c[c] for c in _DIMS))))


def downgrade() -> None:
    op.drop_index("ix_usage_daily_key_id_day_start", table_name="usage_daily")
    op.drop_table("usage_daily")
