"""Rate limits and budgets through the real server, with real parallel requests: exact limits,
budgets never overshot, and what the client and the admin API see of them. How a request's hold
is settled (released on error, paid for what a client that left got, a parallel slot held until
a stream ends) is tested in-process, in tests/service/test_gateway.py."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import SdkFactory
from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server

PRICE = 10_000.0  # USD per 1M tokens, in and out: one cent a token, so costs are easy to read


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[RunningServer]:
    priced = {"input_cost_per_1m": PRICE, "output_cost_per_1m": PRICE}
    with run_server(
        tmp_path_factory.mktemp("governance"),
        providers={"up": {"type": "openai", "base_url": upstream.base_url, "cooldown_failures": 0}},
        models=[
            {"alias": "m", "provider": "up", "model": "gpt-4o-mini", **priced},
            {"alias": "free", "provider": "up", "model": "gpt-4o-mini"},
            {"alias": "model-capped", "provider": "up", "model": "gpt-4o-mini", "rate_limits": {"rpm": 3}},
        ],
    ) as srv:
        yield srv


def new_key(server: RunningServer, **fields: Any) -> dict[str, Any]:
    with server.http(server.admin_key) as http:
        resp = http.post("/admin/keys", json={"name": "gov", **fields})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def chat(http: httpx.Client, model: str = "m", **extra: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": HELLO, **extra})


def in_parallel(server: RunningServer, key: str, count: int, body: dict[str, Any], workers: int = 16,
                ) -> list[httpx.Response]:
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(_: int) -> httpx.Response:
        if not hasattr(local, "http"):
            local.http = server.http(key)
            clients.append(local.http)
        return local.http.post("/v1/chat/completions", json=body)  # type: ignore[no-any-return]

    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, range(count)))
    finally:
        for client in clients:
            client.close()


def test_a_limit_is_exact_and_speaks_openais_headers(server: RunningServer) -> None:
    key = new_key(server, limits={"rpm": 5, "tpm": 100_000})
    with server.http(key["key"]) as http:
        answers = [chat(http, "free") for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    ok, refused = answers[0], answers[-1]
    assert ok.headers["x-ratelimit-limit-requests"] == "5" and ok.headers["x-ratelimit-remaining-requests"] == "4"
    assert ok.headers["x-ratelimit-limit-tokens"] == "100000"
    assert answers[4].headers["x-ratelimit-remaining-requests"] == "0"
    err = refused.json()["error"]
    assert (err["type"], err["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert key["id"] in err["message"] and "5 requests per minute" in err["message"]
    assert 55 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")


def test_a_limit_holds_exactly_under_parallel_requests(server: RunningServer, upstream: FakeOpenAI) -> None:
    key = new_key(server, limits={"rpm": 20})
    seen = len(upstream.requests)
    answers = in_parallel(server, key["key"], 60, {"model": "free", "messages": HELLO})
    assert Counter(a.status_code for a in answers) == {200: 20, 429: 40}
    assert len(upstream.requests) - seen == 20  # refused requests never reached the upstream


def test_per_model_limits_of_a_key_and_of_a_model(server: RunningServer) -> None:
    key = new_key(server, model_limits={"free": {"rpm": 2}})
    with server.http(key["key"]) as http:
        assert [chat(http, "free").status_code for _ in range(3)] == [200, 200, 429]
        assert chat(http, "m", max_tokens=5).status_code == 200  # other models are not limited
    other = new_key(server)
    statuses = []
    for k in (key, other):
        with server.http(k["key"]) as http:
            statuses += [chat(http, "model-capped").status_code for _ in range(2)]
    assert statuses == [200, 200, 200, 429]  # 3 per minute on that model, whoever asks


def test_a_budget_is_never_overshot_under_parallel_requests(server: RunningServer) -> None:
    key = new_key(server, budget={"amount_usd": 1.0, "period": "monthly"})
    answers = in_parallel(server, key["key"], 60, {"model": "m", "messages": HELLO, "max_tokens": 5})
    codes = Counter(a.status_code for a in answers)
    assert codes[200] > 0 and codes[429] > 0 and set(codes) == {200, 429}
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.json()["error"]["code"] == "insufficient_quota"
        assert refused.headers["x-should-retry"] == "false"
    with server.http(key["key"]) as http:  # then one by one until the budget says no
        more = 0
        while chat(http, max_tokens=5).status_code == 200:
            more += 1
            assert more < 100
    deadline = time.monotonic() + 10
    while len(rows := [r for r in server.usage_rows(wait_for=0) if r["key_id"] == key["id"] and r["status"] == 200]
              ) < codes[200] + more:
        assert time.monotonic() < deadline, "usage rows missing"
        time.sleep(0.1)
    assert len(rows) == codes[200] + more
    spent = sum(r["cost_usd"] for r in rows)
    assert spent <= 1.0 + 1e-9  # never overshot, not even by one request
    assert spent > 1.0 - 0.25  # and used up to less than one worst case (prompt at a token a byte + 5)


def test_the_sdk_does_not_retry_an_exhausted_budget(
    server: RunningServer, upstream: FakeOpenAI, sdk: SdkFactory
) -> None:
    key = new_key(server, budget={"amount_usd": 0.0001, "period": "total"})
    client = openai.OpenAI(base_url=server.v1, api_key=key["key"], max_retries=3)
    try:
        seen = len(upstream.requests)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="m", messages=HELLO)
        assert info.value.code == "insufficient_quota"
        assert info.value.response.headers["x-should-retry"] == "false"
        assert len(upstream.requests) == seen
    finally:
        client.close()


def test_a_team_budget_binds_every_key_in_it(server: RunningServer) -> None:
    with server.http(server.admin_key) as http:
        team = http.post("/admin/teams", json={"name": "thrifty", "budget": {"amount_usd": 0.3, "period": "daily"}})
        assert team.status_code == 201, team.text
    rich = new_key(server, team="thrifty", budget={"amount_usd": 100.0, "period": "daily"})
    other = new_key(server, team="thrifty")
    with server.http(rich["key"]) as a, server.http(other["key"]) as b:
        results = [chat(c, "m", max_tokens=5) for c in (a, b, a, b, a, b, a, b)]
    codes = [r.status_code for r in results]
    assert 200 in codes and codes[-1] == 429
    assert "team" in results[-1].json()["error"]["message"]


def test_a_keys_budget_status_shows_what_it_spent_and_what_is_left(server: RunningServer) -> None:
    from datetime import UTC, datetime

    key = new_key(server, budget={"amount_usd": 2.0, "period": "monthly"})
    with server.http(key["key"]) as http:
        for _ in range(3):
            assert chat(http, max_tokens=5).status_code == 200
    deadline = time.monotonic() + 10
    while len(rows := [r for r in server.usage_rows(wait_for=0) if r["key_id"] == key["id"]]) < 3:
        assert time.monotonic() < deadline, "usage rows missing"
        time.sleep(0.1)
    spent = sum(r["cost_usd"] for r in rows)  # rows and rollups are written in one transaction
    assert spent > 0
    now = datetime.now(UTC)
    with server.http(server.admin_key) as admin:
        status = admin.get(f"/admin/keys/{key['id']}").json()["budget_status"]
        assert status["period"] == "monthly"
        assert status["period_start"] == datetime(now.year, now.month, 1, tzinfo=UTC).isoformat()
        assert datetime.fromisoformat(status["period_end"]) > now
        assert status["spent_usd"] == pytest.approx(spent, abs=1e-9)
        assert status["remaining_usd"] == pytest.approx(2.0 - spent, abs=1e-9)
        unbudgeted = new_key(server)
        assert "budget_status" not in admin.get(f"/admin/keys/{unbudgeted['id']}").json()
        # the list stays one query: no per-key spend there
        listed = {k["id"]: k for k in admin.get("/admin/keys").json()["data"]}
        assert "budget_status" not in listed[key["id"]] and listed[key["id"]]["budget"]["amount_usd"] == 2.0


def test_a_teams_budget_status_counts_every_key_in_it(server: RunningServer) -> None:
    from datetime import UTC, datetime

    with server.http(server.admin_key) as admin:
        team = admin.post("/admin/teams", json={"name": "counted", "budget": {"amount_usd": 5.0, "period": "daily"}})
        assert team.status_code == 201, team.text
        idle = admin.post("/admin/teams", json={"name": "unbudgeted"}).json()
    first, second = new_key(server, team="counted"), new_key(server, team="counted")
    outsider = new_key(server)
    for key, calls in ((first, 2), (second, 1), (outsider, 2)):
        with server.http(key["key"]) as http:
            for _ in range(calls):
                assert chat(http, max_tokens=5).status_code == 200
    members = {first["id"], second["id"]}
    deadline = time.monotonic() + 10
    while len(rows := [r for r in server.usage_rows(wait_for=0) if r["key_id"] in members]) < 3:
        assert time.monotonic() < deadline, "usage rows missing"
        time.sleep(0.1)
    spent = sum(r["cost_usd"] for r in rows)
    assert spent > 0
    with server.http(server.admin_key) as admin:
        assert admin.post(f"/admin/keys/{second['id']}/revoke").status_code == 200  # what it spent still counts
        status = admin.get(f"/admin/teams/{team.json()['id']}").json()["budget_status"]
        today = datetime.now(UTC).date()
        assert status["period"] == "daily"
        assert datetime.fromisoformat(status["period_start"]).date() == today
        assert (datetime.fromisoformat(status["period_end"]) - datetime.fromisoformat(status["period_start"])).days == 1
        assert status["spent_usd"] == pytest.approx(spent, abs=1e-9)  # the outsider's spend is not in it
        assert status["remaining_usd"] == pytest.approx(5.0 - spent, abs=1e-9)
        assert "budget_status" not in admin.get(f"/admin/teams/{idle['id']}").json()
