"""Model configurations managed over /admin/models.

Revision ID: 0003
Revises: 0002
Create Date: 2025-02-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "model_configs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("alias", sa.String(200), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("deleted_at", ts, nullable=True),
    )
    op.create_index("ix_model_configs_alias", "model_configs", ["alias"], unique=True)
    op.create_index("ix_model_configs_revision", "model_configs", ["revision"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_model_configs_revision", table_name="model_configs")
    op.drop_index("ix_model_configs_alias", table_name="model_configs")
    op.drop_table("model_configs")
