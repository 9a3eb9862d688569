"""The SQL schema (SQLAlchemy Core) shared by SQLite and PostgreSQL.

Migrations in ``migrations/versions`` must produce exactly this schema; keep them in step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from switchyard.core.latency import BUCKETS

__all__ = [
    "LATENCY_COLUMNS",
    "UtcDateTime",
    "api_keys",
    "audit_log",
    "credentials",
    "metadata",
    "model_configs",
    "responses",
    "teams",
    "ui_sessions",
    "usage_daily",
    "usage_records",
    "usage_rollups",
]

LATENCY_COLUMNS: tuple[str, ...] = tuple(f"lat_{i:02d}" for i in range(BUCKETS))
"""The rollups' latency histogram, one count per bucket of ``core.latency``."""


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    Values are converted to UTC before they are stored (SQLite keeps no offset, so every
    stored value must share one), naive datetimes are refused, and values read back are
    always tz-aware UTC (SQLite returns naive ones).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:  # the common case: already UTC
            return value
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
    # Owners, limits and budget (revision 0005). limits: {rpm, tpm, rph, rpd, max_parallel};
    # model_limits: {alias or pattern: {...}}; team_id: teams.id (no foreign key: a revoked key
    # may keep the id of a team deleted since).
    sa.Column("user_id", sa.String(200), nullable=True),
    sa.Column("team_id", sa.String(64), nullable=True),
    sa.Column("limits", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("model_limits", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("budget_usd", sa.Float(), nullable=True),
    sa.Column("budget_period", sa.String(16), nullable=True),
    sa.Index("ix_api_keys_key_hash", "key_hash", unique=True),
    sa.Index("ix_api_keys_updated_at", "updated_at"),
    sa.Index("ix_api_keys_team_id", "team_id"),
)

teams = sa.Table(
    "teams",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("limits", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("budget_usd", sa.Float(), nullable=True),
    sa.Column("budget_period", sa.String(16), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Index("ix_teams_name", "name", unique=True),
    sa.Index("ix_teams_updated_at", "updated_at"),
)

# Every admin action: who (the admin key's id, "static", or "cli"), what, when, on which object.
# ``details`` holds the changed fields, scrubbed of secrets before they get here.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("actor_key_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("object_type", sa.String(32), nullable=False),
    sa.Column("object_id", sa.String(200), nullable=True),
    sa.Column("details", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("client_ip", sa.String(64), nullable=True),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Index("ix_audit_log_at", "at"),
    sa.Index("ix_audit_log_object_id", "object_id"),
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
    sa.Column("cost_usd", sa.Float(), nullable=False, server_default=sa.text("0")),  # revision 0004
    # revision 0007: prompt tokens read from / written to the provider's prompt cache (parts of
    # prompt_tokens), and the client's agent session (Claude Code's, Codex's session header)
    sa.Column("cache_read_tokens", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("cache_write_tokens", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("session_id", sa.String(128), nullable=True),
    sa.Column("team_id", sa.String(64), nullable=True),  # revision 0008: the key's team at the time
    sa.Index("ix_usage_records_created_at", "created_at"),
    sa.Index("ix_usage_records_key_id", "key_id"),
)

# Hourly totals per key, model and team (revision 0004; team in 0008): the source of truth for
# reports and budgets, kept for ever while raw usage_records rows are pruned. Written in the same
# transaction as the raw rows (upsert, adding). key_id '' is "no key" and team_id '' "no team"
# (primary key columns cannot be NULL, and NULLs never conflict). team_id is the key's team when
# the request was made. Cost is in nano-USD (USD x 1e9) as an integer, so totals add up exactly.
# lat_00..lat_61 (revision 0008): the latency histogram of the requests that succeeded (status
# below 400), in the buckets of ``core.latency``.
usage_rollups = sa.Table(
    "usage_rollups",
    metadata,
    sa.Column("hour_start", UtcDateTime(), primary_key=True),
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(255), primary_key=True),
    sa.Column("requests", sa.BigInteger(), nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
    sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
    sa.Column("cost_nanousd", sa.BigInteger(), nullable=False),
    sa.Column("errors", sa.BigInteger(), nullable=False),
    sa.Column("estimated", sa.BigInteger(), nullable=False),
    sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False, server_default=sa.text("0")),  # revision 0007
    sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    sa.Column("team_id", sa.String(64), primary_key=True, server_default=sa.text("''")),
    *(sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0")) for name in LATENCY_COLUMNS),
    sa.Index("ix_usage_rollups_key_id_hour_start", "key_id", "hour_start"),
)

# The same totals per UTC day (revision 0010): each row is the sum of that day's usage_rollups
# rows of its key, model and team, written by the same upsert in the same transaction, so the
# two never disagree. Reports over long ranges read whole days here and the hours at the edges
# from usage_rollups (``store.usage_days``). day_start is the day's 00:00 UTC.
usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("day_start", UtcDateTime(), primary_key=True),
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(255), primary_key=True),
    sa.Column("team_id", sa.String(64), primary_key=True, server_default=sa.text("''")),
    *(sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0")) for name in (
        "requests", "prompt_tokens", "completion_tokens", "cost_nanousd", "errors", "estimated",
        "cache_read_tokens", "cache_write_tokens")),
    *(sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0")) for name in LATENCY_COLUMNS),
    sa.Index("ix_usage_daily_key_id_day_start", "key_id", "day_start"),
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

# Responses API responses (revision 0006), kept for previous_response_id and GET. ``ciphertext``
# holds the input items and the Response object, AES-256-GCM under a key derived from the server
# secret; the associated data binds the id and the owner, so a row copied elsewhere fails to open.
responses = sa.Table(
    "responses",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner_key_id", sa.String(64), nullable=True),
    sa.Column("previous_response_id", sa.String(64), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("nonce", sa.LargeBinary(), nullable=False),
    sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
    sa.Index("ix_responses_created_at", "created_at"),
)

# Web console sessions (revision 0009), shared by every worker and replica. ``id_digest`` is the
# sha256 of the cookie's random id (the id itself is never stored); ``key_digest`` the signed-in
# key's HMAC, checked against api_keys on every request, so revoking or rotating a key ends them.
ui_sessions = sa.Table(
    "ui_sessions",
    metadata,
    sa.Column("id_digest", sa.String(64), primary_key=True),
    sa.Column("key_digest", sa.String(128), nullable=True),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("last_seen_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
    sa.Index("ix_ui_sessions_expires_at", "expires_at"),
)
