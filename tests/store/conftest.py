"""Fixtures that run every store test against SQLite and a real PostgreSQL.

PostgreSQL is never skipped: if it is down the tests fail with a message saying so.
Set ``SWITCHYARD_TEST_PG_URL`` to point at a server other than 127.0.0.1:5432 (user
``postgres``, existing database ``test``, used only to create and drop the test database).

Tests are plain functions that call ``asyncio.run`` (no pytest-asyncio): engines are bound
to an event loop, so each test creates and disposes its own ``Database`` inside its body.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.conftest import reset_pg_schema

from switchyard.store import upgrade

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """URL of an empty database. The SQLite file's folder does not exist yet."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'switchyard.db'}"
    url: str = request.getfixturevalue("pg_url")
    asyncio.run(reset_pg_schema(url))
    return url


@pytest.fixture
def url(empty_url: str) -> str:
    """URL of a database migrated to head."""
    asyncio.run(upgrade(empty_url))
    return empty_url
