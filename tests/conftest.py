"""Shared fixtures: fake upstreams on loopback, and a real Switchyard server in front of them."""

from __future__ import annotations

import asyncio
import atexit
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.fakes import FakeOllama, FakeOpenAI
from tests.harness import RunningServer, free_port, run_server

PG_ADMIN_URL = os.environ.get("SWITCHYARD_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
SdkFactory = Callable[..., openai.OpenAI]
UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"
FAKE_MODELS = [
    "gpt-4o-mini", "slow-stream", "fail-mid-stream", "no-usage", "slow",
    "error-400", "error-401", "error-429", "error-500", "error-503",
]


class _ExitFilters(Warning):
    """The one warning :func:`_judge_exit_warnings_by_pythons_filters` checks (and ignores)."""


@atexit.register
def _judge_exit_warnings_by_pythons_filters() -> None:
    """Let the interpreter's shut-down judge warnings by Python's filters, not the suite's.

    Once the warnings module is torn down at exit, CPython falls back to the filter list it last
    checked a warning against, which after a pytest run is the suite's ``error`` list: the
    /dev/null files that llama-cpp-python opens at import and never closes then print
    "Exception ignored ... ResourceWarning" after pytest's summary. Checking one ignored warning
    here, after pytest has put Python's filters back, makes those the list that is kept.
    """
    warnings.filterwarnings("ignore", category=_ExitFilters)
    warnings.warn("the test session is over", _ExitFilters, stacklevel=1)


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


def gateway_config(fake_openai: FakeOpenAI, fake_ollama: FakeOllama) -> dict[str, Any]:
    models: list[dict[str, Any]] = [{"alias": m, "provider": "fake"} for m in FAKE_MODELS]
    models += [
        {"alias": "embed", "provider": "fake", "model": "text-embedding-3-small"},
        {"alias": "capped", "provider": "fake", "model": "slow-stream", "max_concurrent": 1, "max_queue": 0},
        {"alias": "queued", "provider": "fake", "model": "slow-stream", "max_concurrent": 1, "max_queue": 1,
         "queue_timeout": 0.5},
        {"alias": "orderly", "provider": "fake", "model": "gpt-4o-mini", "max_concurrent": 1, "max_queue": 16},
        {"alias": "impatient", "provider": "fake", "model": "slow", "timeout": 0.5},
        {"alias": "dead", "provider": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1"},
        {"alias": "disabled", "provider": "fake", "enabled": False},
        {"alias": "llama", "provider": "ollama", "model": "llama3.2:1b"},
        {"alias": "ollama-embed", "provider": "ollama", "model": "nomic-embed-text"},
    ]
    return {
        "providers": {
            # these upstreams fail on purpose in many tests: no cooldowns here (tests/service/test_gateway.py)
            "fake": {"type": "openai", "base_url": fake_openai.base_url, "api_key": UPSTREAM_KEY,
                     "cooldown_failures": 0},
            "ollama": {"type": "ollama", "base_url": fake_ollama.base_url, "prefix_routing": True,
                       "cooldown_failures": 0},
        },
        "models": models,
    }


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI, fake_ollama: FakeOllama
) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("gateway")
    with run_server(data_dir, **gateway_config(fake_openai, fake_ollama)) as server:
        yield server


@pytest.fixture
def client(gateway: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.v1, api_key=gateway.admin_key, max_retries=0, timeout=30) as sdk_client:
        yield sdk_client


@pytest.fixture
def sdk() -> Iterator[Callable[..., openai.OpenAI]]:
    """Makes openai SDK clients (no retries) and closes them all when the test ends."""
    made: list[openai.OpenAI] = []

    def make(base_url: str, api_key: str, **kwargs: Any) -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, **kwargs))
        return made[-1]

    yield make
    for sdk_client in made:
        sdk_client.close()


async def _pg_admin(*statements: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this test session."""
    name = f"sy_test_{uuid.uuid4().hex[:12]}"
    problem = None
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, sa.exc.DBAPIError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:  # failed outside the except block, so no chained traceback
        pytest.fail(
            f"PostgreSQL is required for the store tests and is not usable at {PG_ADMIN_URL!r} "
            f"({problem}). Start it (CI does), or set SWITCHYARD_TEST_PG_URL.",
            pytrace=False,
        )
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def reset_pg_schema(url: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            await conn.execute(sa.text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


STORES = ["sqlite", "postgresql"]


def server_store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings naming the store of a test server, for a fixture parametrized with ``STORES``:
    nothing for SQLite (the data dir's file), or the session's PostgreSQL database, emptied first,
    with a fixed server secret."""
    if request.param == "sqlite":
        return {}
    url: str = request.getfixturevalue("pg_url")
    asyncio.run(reset_pg_schema(url))
    return {"database_url": url, "secret_key": "server-store-test-secret-0123456789abcdef"}
