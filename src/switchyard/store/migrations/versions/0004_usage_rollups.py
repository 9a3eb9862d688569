"""Cost on every usage row, and hourly usage rollups per key and model.

Rows written before this revision keep cost 0 and are not in the rollups: the rollups are
filled from the raw rows still stored, so reports over older periods stay complete.

Revision ID: 0004
Revises: 0003
Create Date: 2025-03-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _hour_start(dialect: str, created_at: sa.ColumnElement[object]) -> sa.ColumnElement[object] | None:
    """created_at truncated to its UTC hour, in the form each backend stores timestamps."""
    if dialect == "sqlite":  # 'YYYY-MM-DD HH:MM:SS.ffffff' text, in UTC
        return sa.func.strftime("%Y-%m-%d %H:00:00.000000", created_at)
    if dialect == "postgresql":  # timestamptz: truncate in UTC whatever the session's time zone
        return sa.func.timezone("UTC", sa.func.date_trunc("hour", sa.func.timezone("UTC", created_at)))
    return None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("cost_usd", sa.Float(), nullable=False, server_default=sa.text("0")))
    op.create_table(
        "usage_rollups",
        sa.Column("hour_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("estimated", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour_start", "key_id", "model"),
    )
    op.create_index("ix_usage_rollups_key_id_hour_start", "usage_rollups", ["key_id", "hour_start"])
    # Rows already stored go into the rollups (their cost was not recorded: 0).
    records = sa.table("usage_records", *(sa.column(c) for c in (
        "created_at", "key_id", "model", "prompt_tokens", "completion_tokens", "status", "estimated")))
    rollups = sa.table("usage_rollups", *(sa.column(c) for c in (
        "hour_start", "key_id", "model", "requests", "prompt_tokens", "completion_tokens", "cost_nanousd",
        "errors", "estimated")))
    hour = _hour_start(op.get_bind().dialect.name, records.c.created_at)
    if hour is None:
        return
    key = sa.func.coalesce(records.c.key_id, "")
    select = sa.select(
        hour, key, records.c.model, sa.func.count(), sa.func.sum(records.c.prompt_tokens),
        sa.func.sum(records.c.completion_tokens), sa.literal(0),
        sa.func.sum(sa.case((records.c.status >= 400, 1), else_=0)),
        sa.func.sum(sa.case((records.c.estimated == sa.true(), 1), else_=0)),
    ).group_by(hour, key, records.c.model)
    op.execute(rollups.insert().from_select(list(rollups.c.keys()), select))


def downgrade() -> None:
    op.drop_index("ix_usage_rollups_key_id_hour_start", table_name="usage_rollups")
    op.drop_table("usage_rollups")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("cost_usd")
