"""The stores' async bridge over SQLAlchemy Core: transactions, cancellation, and no ORM."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from switchyard.store import Database
from switchyard.store.engine import AsyncEngine, create_async_engine

_scratch = sa.Table("engine_scratch", sa.MetaData(), sa.Column("n", sa.Integer, primary_key=True))


async def _count(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(_scratch)))


def test_begin_commits_on_success_and_rolls_back_on_error(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            async with db.engine.begin() as conn:
                await conn.run_sync(_scratch.create)
            try:
                async with db.engine.begin() as conn:
                    await conn.execute(sa.insert(_scratch), [{"n": 1}, {"n": 2}])
                async with db.engine.begin() as conn:
                    await conn.execute(sa.insert(_scratch).values(n=3))
                    raise LookupError("abandon this transaction")
            except LookupError:
                pass
            assert await _count(db) == 2
            # A failing statement rolls back the statements before it in the same block.
            with pytest.raises(sa.exc.IntegrityError):
                async with db.engine.begin() as conn:
                    await conn.execute(sa.insert(_scratch).values(n=4))
                    await conn.execute(sa.insert(_scratch).values(n=1))
            assert await _count(db) == 2
            async with db.engine.begin() as conn:
                await conn.run_sync(_scratch.drop)

    asyncio.run(body())


def test_a_cancelled_task_hands_its_connection_back(url: str, backend: str) -> None:
    """A request cancelled while it holds a connection (client gone, timeout) must not leak it;
    on PostgreSQL the cancellation lands mid-query."""
    sleep = "SELECT pg_sleep(5)" if backend == "postgresql" else None

    async def body() -> None:
        async with Database.create(url) as db:
            pool = db.engine.sync_engine.pool
            entered = asyncio.Event()

            async def hold() -> None:
                async with db.engine.connect() as conn:
                    entered.set()
                    if sleep is not None:
                        await conn.execute(sa.text(sleep))
                    else:
                        await asyncio.sleep(5)

            task = asyncio.create_task(hold())
            await entered.wait()
            await asyncio.sleep(0.05)
            assert pool.checkedout() == 1  # type: ignore[attr-defined]
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 3)
            assert pool.checkedout() == 0  # type: ignore[attr-defined]
            await db.ping()  # the pool still serves

    asyncio.run(body())


def test_a_connection_used_outside_its_block_says_so(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            conn = db.engine.connect()
            with pytest.raises(RuntimeError, match="async with"):
                await conn.execute(sa.text("SELECT 1"))

    asyncio.run(body())


def test_a_sync_driver_is_refused() -> None:
    with pytest.raises(ValueError, match="not an async driver"):
        create_async_engine("sqlite:///:memory:")
    assert isinstance(create_async_engine("sqlite+aiosqlite://"), AsyncEngine)


def test_the_server_never_imports_the_orm(tmp_path: Path) -> None:
    """The ORM was 5.6 MB of idle memory; the gateway uses Core only, so it must stay out."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        import httpx
        from switchyard.app import create_app
        from switchyard.settings import Settings

        async def run():
            app = create_app(Settings(data_dir="{tmp_path}/data", api_keys=["sk-orm-probe"]))
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                    models = await client.get("/v1/models", headers={{"Authorization": "Bearer sk-orm-probe"}})
                    assert models.status_code == 200, models.text
                    keys = await client.get("/admin/keys", headers={{"Authorization": "Bearer sk-orm-probe"}})
                    assert keys.status_code == 200, keys.text
        asyncio.run(run())
        loaded = sorted(m for m in sys.modules if m.startswith(("sqlalchemy.orm", "sqlalchemy.ext.asyncio")))
        print(loaded)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
