"""A latency histogram and the key's team in the usage rollups; the team on usage rows.

``usage_rollups`` gains ``lat_00``..``lat_61``, the counts of the requests that succeeded per
latency bucket (three an octave from 1 ms to 2^20 ms; see ``core.latency``), and ``team_id``
joins its primary key: the key's team when the request was made ('' for none). Hours written
before this revision have no latency counts (their percentiles are empty); their team is the
key's team at the upgrade, the best there is to know. ``usage_records`` gains ``team_id`` too,
filled the same way.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.sql.schema import SchemaItem

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LATENCY = tuple(f"lat_{i:02d}" for i in range(62))  # fixed here: the buckets of this revision
_COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "cost_nanousd", "errors", "estimated",
             "cache_read_tokens", "cache_write_tokens")
_INDEX = "ix_usage_rollups_key_id_hour_start"


def _key_team(key_id: sa.ColumnElement[object]) -> sa.ScalarSelect[object]:
    keys = sa.table("api_keys", sa.column("id"), sa.column("team_id"))
    return sa.select(keys.c.team_id).where(keys.c.id == key_id).scalar_subquery()


def _rollups(name: str, *, teams: bool) -> None:
    """A rollups table of the 0007 schema (``teams``: of this one's) under ``name``."""
    zero = sa.text("0")
    items: list[SchemaItem] = [
        sa.Column("hour_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in _COUNTERS[:6]),
        *(sa.Column(c, sa.BigInteger(), nullable=False, server_default=zero) for c in _COUNTERS[6:]),
    ]
    if teams:
        items.append(sa.Column("team_id", sa.String(64), nullable=False, server_default=sa.text("''")))
        items += [sa.Column(c, sa.Integer(), nullable=False, server_default=zero) for c in _LATENCY]
    items.append(sa.PrimaryKeyConstraint("hour_start", "key_id", "model", *(("team_id",) if teams else ())))
    op.create_table(name, *items)


def _replace_rollups(built: str) -> None:
    """``built`` becomes ``usage_rollups`` (its index and, on PostgreSQL, its key's name too)."""
    op.drop_index(_INDEX, table_name="usage_rollups")
    op.drop_table("usage_rollups")
    op.rename_table(built, "usage_rollups")
    op.create_index(_INDEX, "usage_rollups", ["key_id", "hour_start"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE usage_rollups RENAME CONSTRAINT {built}_pkey TO usage_rollups_pkey")


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("team_id", sa.String(64), nullable=True))
    records = sa.table("usage_records", sa.column("key_id"), sa.column("team_id"))
    op.execute(records.update().where(records.c.key_id.is_not(None)).values(team_id=_key_team(records.c.key_id)))

    # a new primary key: the rows are copied into a table that has it (SQLite cannot alter one)
    _rollups("usage_rollups_0008", teams=True)
    old = sa.table("usage_rollups", *(sa.column(c) for c in ("hour_start", "key_id", "model", *_COUNTERS)))
    new = sa.table("usage_rollups_0008", *(sa.column(c) for c in ("hour_start", "key_id", "model", *_COUNTERS,
                                                                  "team_id")))
    team = sa.case((old.c.key_id == "", ""), else_=sa.func.coalesce(_key_team(old.c.key_id), ""))
    op.execute(new.insert().from_select(
        ["hour_start", "key_id", "model", *_COUNTERS, "team_id"],
        sa.select(old.c.hour_start, old.c.key_id, old.c.model, *(old.c[c] for c in _COUNTERS), team)))
    _replace_rollups("usage_rollups_0008")


def downgrade() -> None:
    _rollups("usage_rollups_0007", teams=False)
    cur = sa.table("usage_rollups", *(sa.column(c) for c in ("hour_start", "key_id", "model", *_COUNTERS)))
    old = sa.table("usage_rollups_0007", *(sa.column(c) for c in ("hour_start", "key_id", "model", *_COUNTERS)))
    # one row per hour, key and model again: a key's rows under several teams are added up
    op.execute(old.insert().from_select(
        ["hour_start", "key_id", "model", *_COUNTERS],
        sa.select(cur.c.hour_start, cur.c.key_id, cur.c.model, *(sa.func.sum(cur.c[c]) for c in _COUNTERS))
        .group_by(cur.c.hour_start, cur.c.key_id, cur.c.model)))
    _replace_rollups("usage_rollups_0007")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("team_id")
