"""The SQL schema (SQLAlchemy Core) shared by SQLite and PostgreSQL.

Migrations in ``migrations/versions`` must produce exactly this schema; keep them in step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = ["UtcDateTime", "api_keys", "credentials", "metadata", "model_configs", "usage_records"]


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    Values are converted to UTC before they are stored (SQLite keeps no offset, so every
    stored value must share one), naive datetimes are refused, and values read back are
    always tz-aware UTC (SQLite returns naive ones).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: store timezone-aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(64), nullable=False),
    sa.Column("key_hash", sa.String(128), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("last_used_at", UtcDateTime(), nullable=True),
    sa.Column("use_count", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    sa.Column("expires_at", UtcDateTime(), nullable=True),
    sa.Column("active", sa.Boolean(), nullable=False),
    # none_as_null: Python None is SQL NULL ("every model"), not the JSON literal null.
    sa.Column("allowed_models", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("is_admin", sa.Boolean(), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Index("ix_api_keys_key_hash", "key_hash", unique=True),
    sa.Index("ix_api_keys_updated_at", "updated_at"),
)

usage_records = sa.Table(
    "usage_records",
    metadata,
    # BIGINT on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=True),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("prompt_tokens", sa.Integer(), nullable=False),
    sa.Column("completion_tokens", sa.Integer(), nullable=False),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("streamed", sa.Boolean(), nullable=False),
    sa.Column("estimated", sa.Boolean(), nullable=False),
    sa.Index("ix_usage_records_created_at", "created_at"),
    sa.Index("ix_usage_records_key_id", "key_id"),
)

credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("base_url", sa.String(2048), nullable=True),
    # AES-256-GCM: scrypt salt and nonce of this one encryption, and the ciphertext with its tag.
    sa.Column("salt", sa.LargeBinary(), nullable=False),
    sa.Column("nonce", sa.LargeBinary(), nullable=False),
    sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
    sa.Column("key_version", sa.String(64), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("last4", sa.String(8), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("last_used_at", UtcDateTime(), nullable=True),
    sa.Column("use_count", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("last_checked_at", UtcDateTime(), nullable=True),
    sa.Column("last_check_ok", sa.Boolean(), nullable=True),
    sa.Column("last_check_error", sa.String(500), nullable=True),
    sa.Index("ix_credentials_name", "name", unique=True),
)

# Models added over /admin/models (merged with the YAML file's; the file wins). ``config`` is the
# API record (without alias/active/default, which are columns). A delete is a tombstone: alias
# NULL (unique indexes allow many NULLs, so the alias is free again) and deleted_at set. Every
# write takes ``revision`` = max + 1 (unique, so concurrent writers retry), which makes
# ``SELECT max(revision)`` a change marker that also sees deletions.
model_configs = sa.Table(
    "model_configs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("alias", sa.String(200), nullable=True),
    sa.Column("config", sa.JSON(), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("is_default", sa.Boolean(), nullable=False),
    sa.Column("revision", sa.BigInteger(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("deleted_at", UtcDateTime(), nullable=True),
    sa.Index("ix_model_configs_alias", "alias", unique=True),
    sa.Index("ix_model_configs_revision", "revision", unique=True),
)
