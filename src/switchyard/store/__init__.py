"""SQL storage (SQLAlchemy async Core + Alembic) for keys and usage: SQLite or PostgreSQL.

Importing this package touches no disk, reads no environment and does not import Alembic.
"""

from switchyard.store.database import Database, sqlite_path
from switchyard.store.keys import SqlKeyStore
from switchyard.store.migrate import HEAD_REVISION, current_revision, ensure_schema, upgrade
from switchyard.store.tables import api_keys, metadata, usage_records
from switchyard.store.usage import SqlUsageStore

__all__ = [
    "HEAD_REVISION",
    "Database",
    "SqlKeyStore",
    "SqlUsageStore",
    "api_keys",
    "current_revision",
    "ensure_schema",
    "metadata",
    "sqlite_path",
    "upgrade",
    "usage_records",
]
