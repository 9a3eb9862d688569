"""Key owners (user, team), per-key limits and budgets, teams, and the admin audit log.

Revision ID: 0005
Revises: 0004
Create Date: 2025-03-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY_COLUMNS = ("user_id", "team_id", "limits", "model_limits", "budget_usd", "budget_period")


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    # Nullable columns without defaults: a plain ALTER TABLE ADD COLUMN on SQLite too.
    op.add_column("api_keys", sa.Column("user_id", sa.String(200), nullable=True))
    op.add_column("api_keys", sa.Column("team_id", sa.String(64), nullable=True))
    op.add_column("api_keys", sa.Column("limits", sa.JSON(none_as_null=True), nullable=True))
    op.add_column("api_keys", sa.Column("model_limits", sa.JSON(none_as_null=True), nullable=True))
    op.add_column("api_keys", sa.Column("budget_usd", sa.Float(), nullable=True))
    op.add_column("api_keys", sa.Column("budget_period", sa.String(16), nullable=True))
    op.create_index("ix_api_keys_team_id", "api_keys", ["team_id"])

    op.create_table(
        "teams",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("limits", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("budget_usd", sa.Float(), nullable=True),
        sa.Column("budget_period", sa.String(16), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )
    op.create_index("ix_teams_name", "teams", ["name"], unique=True)
    op.create_index("ix_teams_updated_at", "teams", ["updated_at"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", ts, nullable=False),
        sa.Column("actor_key_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(200), nullable=True),
        sa.Column("details", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_object_id", "audit_log", ["object_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_object_id", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_teams_updated_at", table_name="teams")
    op.drop_index("ix_teams_name", table_name="teams")
    op.drop_table("teams")
    op.drop_index("ix_api_keys_team_id", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch:  # SQLite rebuilds the table to drop columns
        for name in _KEY_COLUMNS:
            batch.drop_column(name)
