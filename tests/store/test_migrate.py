from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from switchyard.store import HEAD_REVISION, Database, current_revision, ensure_schema, metadata, upgrade
from switchyard.store.migrate import alembic_config


def test_head_revision_matches_alembic_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [HEAD_REVISION], "bump HEAD_REVISION in switchyard/store/migrate.py"


def _table_names(conn: Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


def test_upgrade_from_empty_is_idempotent(empty_url: str) -> None:
    async def body() -> None:
        async with Database.create(empty_url) as db:
            assert await current_revision(db.engine) is None
            await upgrade(empty_url)
            assert await current_revision(db.engine) == HEAD_REVISION
            await upgrade(empty_url)
            await upgrade(db.engine)
            await ensure_schema(db.engine)
            assert await current_revision(db.engine) == HEAD_REVISION
            async with db.engine.connect() as conn:
                tables = await conn.run_sync(_table_names)
            assert {"api_keys", "usage_records", "alembic_version"} <= tables

    asyncio.run(body())


def test_ensure_schema_migrates_an_empty_database(empty_url: str) -> None:
    async def body() -> None:
        await ensure_schema(empty_url)
        async with Database.create(empty_url) as db:
            assert await current_revision(db.engine) == HEAD_REVISION

    asyncio.run(body())


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


def test_migrations_produce_the_tables_module_schema(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db, db.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []

    asyncio.run(body())


_PROBE = textwrap.dedent(
    """
    import asyncio, sys
    from switchyard.store import ensure_schema, upgrade
    asyncio.run((upgrade if sys.argv[2] == "upgrade" else ensure_schema)(sys.argv[1]))
    print(sorted(m for m in sys.modules if m == "alembic" or m.startswith("alembic.")))
    """
)


def _alembic_modules_after_ensure_schema(url: str, how: str = "ensure") -> str:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _PROBE, url, how], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_ensure_schema_does_not_import_alembic_when_up_to_date(url: str) -> None:
    assert _alembic_modules_after_ensure_schema(url) == "[]"


def test_ensure_schema_creates_an_empty_database_without_alembic(empty_url: str) -> None:
    assert _alembic_modules_after_ensure_schema(empty_url) == "[]"

    async def body() -> None:
        async with Database.create(empty_url) as db:
            assert await current_revision(db.engine) == HEAD_REVISION
            async with db.engine.connect() as conn:  # create_all + stamp equals what the migrations build
                assert await conn.run_sync(_diff) == []

    asyncio.run(body())


def test_the_probe_sees_alembic_when_migrations_run(empty_url: str) -> None:
    # The control for the two tests above: the probe does see Alembic when it is used.
    assert "'alembic'" in _alembic_modules_after_ensure_schema(empty_url, "upgrade")


def test_importing_the_store_touches_nothing() -> None:
    code = "import sys, switchyard.store; assert 'alembic' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr
