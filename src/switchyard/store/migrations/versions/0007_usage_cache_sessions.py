"""Prompt-cache tokens and agent sessions on usage rows; prompt-cache tokens in the rollups.

``cache_read_tokens`` and ``cache_write_tokens`` are parts of ``prompt_tokens`` (read from and
written to the provider's prompt cache, priced at their own rates); rows written before this
revision keep 0. ``session_id`` is the client's agent session (Claude Code's
``X-Claude-Code-Session-Id``, Codex's ``session-id`` header), NULL before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("cache_read_tokens", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("cache_write_tokens", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("session_id", sa.String(128), nullable=True))
    with op.batch_alter_table("usage_rollups") as batch:
        batch.add_column(sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False,
                                   server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("usage_rollups") as batch:
        batch.drop_column("cache_write_tokens")
        batch.drop_column("cache_read_tokens")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("session_id")
        batch.drop_column("cache_write_tokens")
        batch.drop_column("cache_read_tokens")
