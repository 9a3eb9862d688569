"""Stores that hang rather than fail: a Redis that accepts connections and never answers, the
real Redis and the real PostgreSQL behind a proxy that stops passing bytes. Requests are not held
up (each is bounded by the SDK's own timeout, which fails the test if one hangs), limits fall back
to this process (or 503 with ``limits_fail_closed``), /ready says so, and usage rows are written
once PostgreSQL answers again: exactly one per request.

(Redis and PostgreSQL that are down, not hung, and SQLite held locked: test_faults.py.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import SdkFactory, reset_pg_schema
from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.fakes.tcp import PausableProxy, SilentServer
from tests.harness import RunningServer, run_server

REDIS_PORT = 6379
GUARD = 10.0  # s: the SDK's timeout per request; a request that hangs fails the test


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def _config(upstream: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {"providers": {"up": {"type": "openai", "base_url": upstream.base_url}},
            "models": [{"alias": "m", "provider": "up", "model": "gpt-4o-mini",
                        "input_cost_per_1m": 1.0, "output_cost_per_1m": 1.0}], **extra}


def _limited_key(server: RunningServer, rpm: int) -> str:
    """A key whose every request goes through the limiter and the budget ledger."""
    with server.http(server.admin_key) as admin:
        made = admin.post("/admin/keys", json={"name": "hung", "limits": {"rpm": rpm},
                                               "budget": {"amount_usd": 100.0}})
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


def _ready(server: RunningServer) -> tuple[int, dict[str, Any]]:
    with server.http() as http:
        resp = http.get("/ready")
    return resp.status_code, resp.json()


def _ask(user: openai.OpenAI) -> str:
    reply = user.chat.completions.create(model="m", messages=HELLO, max_tokens=3)
    return str(reply.choices[0].message.content)


def test_a_redis_that_never_answers_falls_back_to_per_process_limits(
        tmp_path: Path, upstream: FakeOpenAI, sdk: SdkFactory) -> None:
    with SilentServer() as silent, run_server(tmp_path, redis_url=f"redis://127.0.0.1:{silent.port}/0",
                                              **_config(upstream)) as server:
        user = sdk(server.v1, _limited_key(server, rpm=3), timeout=GUARD)
        assert [_ask(user) for _ in range(3)]  # each waited for Redis at most its timeout (50 ms)
        with pytest.raises(openai.RateLimitError) as refused:  # the limit holds, counted here
            _ask(user)
        assert refused.value.status_code == 429
        assert silent.accepted > 0  # Redis was asked, and never answered
        status, ready = _ready(server)
        assert status == 200 and ready["status"] == "degraded", ready
        assert ready["checks"]["redis:limits"] == "unreachable: using per-process limits"
        assert ready["checks"]["redis:budgets"] == "unreachable: using per-process budgets"
        assert [r["status"] for r in server.usage_rows(wait_for=3) if r["status"] == 200] == [200] * 3


def test_a_redis_that_never_answers_with_fail_closed_is_a_prompt_503(
        tmp_path: Path, upstream: FakeOpenAI, sdk: SdkFactory) -> None:
    with SilentServer() as silent, run_server(tmp_path, redis_url=f"redis://127.0.0.1:{silent.port}/0",
                                              limits_fail_closed=True, limits_redis_timeout_ms=100,
                                              **_config(upstream)) as server:
        user = sdk(server.v1, _limited_key(server, rpm=100), timeout=GUARD)
        for _ in range(3):
            with pytest.raises(openai.InternalServerError) as info:
                _ask(user)
            assert info.value.status_code == 503
            assert info.value.code == "limits_unavailable"
        assert upstream.requests == []  # refused before any upstream call
        status, ready = _ready(server)
        assert status == 200 and ready["status"] == "degraded", ready


def test_the_real_redis_paused_then_back(tmp_path: Path, upstream: FakeOpenAI, sdk: SdkFactory) -> None:
    with PausableProxy(REDIS_PORT) as proxy, run_server(
            tmp_path, redis_url=f"redis://127.0.0.1:{proxy.port}/0", limits_redis_timeout_ms=1000,
            **_config(upstream)) as server:
        user = sdk(server.v1, _limited_key(server, rpm=10_000), timeout=GUARD)
        _ask(user)
        assert _ready(server)[1]["status"] == "ready"
        proxy.pause()  # Redis is there, and the bytes stop
        assert [_ask(user) for _ in range(5)]
        status, ready = _ready(server)
        assert status == 200 and ready["status"] == "degraded", ready
        proxy.resume()
        deadline = time.monotonic() + 30  # (the fallback ends at the first probe, one every 1 to 2 s)
        while _ready(server)[1]["status"] != "ready":
            assert time.monotonic() < deadline, _ready(server)
            _ask(user)  # probes go with requests
            time.sleep(0.2)
        assert _ask(user)


def _through(proxy: PausableProxy, url: str) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


async def _rows(url: str) -> list[tuple[str, int]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.text("SELECT request_id, status FROM usage_records ORDER BY id"))
            return [(str(r[0]), int(r[1])) for r in result]
    finally:
        await engine.dispose()


def _metric(server: RunningServer, name: str) -> float:
    with server.http(server.admin_key) as http:
        text = http.get("/metrics").text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_postgresql_paused_while_usage_is_written(
        tmp_path: Path, upstream: FakeOpenAI, sdk: SdkFactory, pg_url: str) -> None:
    asyncio.run(reset_pg_schema(pg_url))
    pg_port = make_url(pg_url).port or 5432
    n = 20
    with PausableProxy(pg_port) as proxy, run_server(
            tmp_path, database_url=_through(proxy, pg_url), secret_key="h" * 40, **_config(upstream)) as server:
        user = sdk(server.v1, _limited_key(server, rpm=10_000), timeout=GUARD)
        first = user.chat.completions.with_raw_response.create(model="m", messages=HELLO, max_tokens=3)
        server.usage_row(first.headers["x-request-id"])  # written, through the proxy
        proxy.pause()  # PostgreSQL is there, and the bytes stop: the writer's next write hangs
        ids = []
        for _ in range(n):
            resp = user.chat.completions.with_raw_response.create(model="m", messages=HELLO, max_tokens=3)
            assert resp.parse().choices[0].message.content
            ids.append(resp.headers["x-request-id"])
        assert asyncio.run(_rows(pg_url)) == [(first.headers["x-request-id"], 200)]  # none got through
        assert _metric(server, "switchyard_usage_pending_rows") >= 1
        assert _ready(server)[0] == 503  # the store does not answer
        proxy.resume()
        deadline = time.monotonic() + 30
        while len(rows := asyncio.run(_rows(pg_url))) < n + 1:
            assert time.monotonic() < deadline, f"{len(rows)} of {n + 1} usage rows"
            time.sleep(0.2)
        time.sleep(0.5)  # (a duplicate would land in the next flush)
        rows = asyncio.run(_rows(pg_url))
        assert sorted(rows) == sorted([(first.headers["x-request-id"], 200)] + [(i, 200) for i in ids])
        assert _metric(server, "switchyard_usage_pending_rows") == 0
        assert _metric(server, "switchyard_usage_dropped_rows_total") == 0
