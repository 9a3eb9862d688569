"""Two Switchyard processes on the real PostgreSQL and Redis: one global rate limit, one budget
never exceeded, a revocation through one refused by the other within a second, and one web
console sign-in limit per address."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.cli.support import ServeProcess
from tests.conftest import reset_pg_schema
from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI

ADMIN = "sk-replicas-admin-0123456789abcdef"
REDIS_URL = "redis://127.0.0.1:6379/0"
PRICE = 10_000.0  # USD per 1M tokens: a cent a token
SIGN_INS = 4  # web console sign-in attempts per address per minute


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    asyncio.run(reset_pg_schema(pg_url))
    workdir = tmp_path_factory.mktemp("replicas")
    with FakeOpenAI() as upstream:
        config = workdir / "switchyard.yaml"
        config.write_text(
            f"providers:\n  up: {{type: openai, base_url: '{upstream.base_url}', cooldown_failures: 0}}\n"
            f"models:\n  - {{alias: m, provider: up, model: gpt-4o-mini, input_cost_per_1m: {PRICE}, "
            f"output_cost_per_1m: {PRICE}}}\n")
        env = {"SWITCHYARD_DATABASE_URL": pg_url, "SWITCHYARD_SECRET_KEY": "r" * 40,
               "SWITCHYARD_REDIS_URL": REDIS_URL, "SWITCHYARD_API_KEY": ADMIN,
               # the cache's own refresh is slowed right down: a revocation must arrive by Redis
               "SWITCHYARD_KEY_REFRESH_INTERVAL": "30",
               # exactness across replicas is the point here, not a hung Redis (test_hangs.py): a
               # loaded test machine must not send a replica to its per-process limits at 50 ms
               "SWITCHYARD_LIMITS_REDIS_TIMEOUT_MS": "2000",
               "SWITCHYARD_UI_SIGN_IN_PER_MINUTE": str(SIGN_INS)}
        a = ServeProcess(workdir, workdir / "a", config=config, env=env, name="a")
        b = ServeProcess(workdir, workdir / "b", config=config, env=env, name="b")
        try:
            a.wait_ready()
            b.wait_ready()
            yield a, b
        finally:
            a.close()
            b.close()


def new_key(server: ServeProcess, **fields: Any) -> dict[str, Any]:
    with server.http(ADMIN) as http:
        resp = http.post("/admin/keys", json={"name": "replicated", **fields})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def across(servers: tuple[ServeProcess, ServeProcess], key: str, count: int, body: dict[str, Any],
           ) -> list[httpx.Response]:
    """``count`` requests at once, alternating between the two replicas."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(i: int) -> httpx.Response:
        if not hasattr(local, "clients"):
            local.clients = [s.http(key) for s in servers]
            clients.extend(local.clients)
        return local.clients[i % 2].post("/v1/chat/completions", json=body)  # type: ignore[no-any-return]

    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, range(count)))
    finally:
        for client in clients:
            client.close()


def test_a_60_rpm_key_gets_exactly_60_across_both(replicas: tuple[ServeProcess, ServeProcess]) -> None:
    key = new_key(replicas[0], limits={"rpm": 60})
    answers = across(replicas, key["key"], 100, {"model": "m", "messages": HELLO, "max_tokens": 3})
    assert Counter(a.status_code for a in answers) == {200: 60, 429: 40}
    served_by = Counter(i % 2 for i, a in enumerate(answers) if a.status_code == 200)
    assert served_by[0] > 0 and served_by[1] > 0  # both replicas served some of the 60


async def _spent(pg_url: str, key_id: str) -> tuple[int, float]:
    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(sa.text(
                "SELECT count(*), coalesce(sum(cost_usd), 0) FROM usage_records WHERE key_id = :k AND status = 200"),
                {"k": key_id})).one()
            return int(row[0]), float(row[1])
    finally:
        await engine.dispose()


def test_a_budget_is_never_exceeded_by_50_concurrent_requests_across_both(
    replicas: tuple[ServeProcess, ServeProcess], pg_url: str
) -> None:
    key = new_key(replicas[1], budget={"amount_usd": 1.0, "period": "monthly"})
    answers = across(replicas, key["key"], 50, {"model": "m", "messages": HELLO, "max_tokens": 5})
    codes = Counter(a.status_code for a in answers)
    assert set(codes) == {200, 429} and codes[200] >= 3
    assert all(a.json()["error"]["code"] == "insufficient_quota" for a in answers if a.status_code == 429)
    deadline = time.monotonic() + 10
    while (spent := asyncio.run(_spent(pg_url, key["id"])))[0] < codes[200]:
        assert time.monotonic() < deadline, "usage rows did not arrive"
        time.sleep(0.1)
    assert spent[0] == codes[200]
    assert 0 < spent[1] <= 1.0 + 1e-9  # never exceeded, not even by one request


def test_a_key_revoked_through_one_is_refused_by_the_other_within_a_second(
    replicas: tuple[ServeProcess, ServeProcess],
) -> None:
    a, b = replicas
    key = new_key(a)
    with b.http(key["key"]) as user, a.http(ADMIN) as admin:
        assert user.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "max_tokens": 3}
                         ).status_code == 200
        assert admin.delete(f"/admin/keys/{key['id']}").status_code == 200
        revoked_at = time.monotonic()
        while user.get("/v1/models").status_code != 401:
            assert time.monotonic() - revoked_at < 1.0, "replica b still accepts the revoked key after 1 s"
            time.sleep(0.02)


def test_both_replicas_report_ready(replicas: tuple[ServeProcess, ServeProcess], tmp_path: Path) -> None:
    for server in replicas:
        ready = httpx.get(server.url + "/ready", timeout=5).json()
        assert ready["status"] == "ready", ready


def _forget_sign_ins() -> None:
    """Redis keeps a minute's sign-in attempts from 127.0.0.1: a rerun starts from none."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for name in client.scan_iter(match="switchyard:rl:*sign-in:*"):
            client.delete(name)
    finally:
        client.close()


def test_sign_in_attempts_through_either_count_against_one_limit(
    replicas: tuple[ServeProcess, ServeProcess],
) -> None:
    _forget_sign_ins()
    try:
        wrong = []
        for i in range(SIGN_INS):  # alternating: each replica alone has seen only half the limit
            with replicas[i % 2].http() as http:
                wrong.append(http.post("/ui/api/session", json={"key": f"sk-guess-{i}"}).status_code)
        with replicas[0].http() as http:
            right = http.post("/ui/api/session", json={"key": ADMIN})
        with replicas[1].http() as http:
            other = http.post("/ui/api/session", json={"key": ADMIN})
        assert wrong == [401] * SIGN_INS
        for refused in (right, other):
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["type"] == "rate_limit_error"
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert "set-cookie" not in refused.headers
    finally:
        _forget_sign_ins()
