"""Schema migrations (Alembic, shipped inside the package; no alembic.ini needed).

Alembic is imported only when the schema is behind: :func:`ensure_schema` on an up-to-date
database reads ``alembic_version`` with plain SQLAlchemy, so a normal server start pays
neither Alembic's import time nor its memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from switchyard.store.database import Database
from switchyard.store.engine import AsyncEngine
from switchyard.store.tables import metadata

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD_REVISION",
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "ensure_schema",
    "upgrade",
]

HEAD_REVISION = "0010"
"""The newest revision in ``migrations/versions``. Bump it with every new migration."""

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")

# Serialises concurrent upgrades of one PostgreSQL database (several replicas starting).
_PG_MIGRATION_LOCK = 0x5357_5944  # "SWYD"


def alembic_config() -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations (imports Alembic)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade_sync(connection: Connection, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def _upgrade_engine(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        await conn.run_sync(_upgrade_sync, revision)


async def upgrade(url: str | URL | AsyncEngine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. A SQLite file's folder is created if missing."""
    if isinstance(url, AsyncEngine):
        await _upgrade_engine(url, revision)
        return
    database = Database.create(url)
    try:
        await _upgrade_engine(database.engine, revision)
    finally:
        await database.dispose()


def _read_revision(connection: Connection) -> str | None:
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    rows = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    if not rows:
        return None
    if len(rows) > 1:
        raise RuntimeError(f"several alembic heads in the database: {sorted(rows)}")
    return str(rows[0])


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's Alembic revision, or None for an empty database."""
    async with engine.connect() as conn:
        return await conn.run_sync(_read_revision)


def _create_fresh_sync(connection: Connection) -> bool:
    """On an empty database: create the tables and stamp the head revision, as Alembic's
    cookbook recommends for new databases. Returns False when the database is not empty."""
    inspector = sa.inspect(connection)
    if inspector.has_table("alembic_version") or any(inspector.has_table(t) for t in metadata.tables):
        return False
    metadata.create_all(connection)
    version = sa.Table("alembic_version", sa.MetaData(),
                       sa.Column("version_num", sa.String(32), primary_key=True, nullable=False))
    version.create(connection)
    connection.execute(version.insert().values(version_num=HEAD_REVISION))
    return True


async def _ensure(engine: AsyncEngine) -> None:
    if await current_revision(engine) == HEAD_REVISION:
        return
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # replicas starting together: one creates, the rest wait
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        created = await conn.run_sync(_create_fresh_sync)
    if not created and await current_revision(engine) != HEAD_REVISION:
        await _upgrade_engine(engine, "head")  # an older schema: migrate with Alembic


async def ensure_schema(url_or_engine: str | URL | AsyncEngine) -> None:
    """Bring the schema to :data:`HEAD_REVISION`.

    An up-to-date database costs one query. An empty one gets ``create_all`` plus a head stamp.
    Only an older schema imports Alembic and runs the migrations, so a normal start never pays
    Alembic's import time and memory.
    """
    if isinstance(url_or_engine, AsyncEngine):
        await _ensure(url_or_engine)
        return
    database = Database.create(url_or_engine)
    try:
        await _ensure(database.engine)
    finally:
        await database.dispose()
