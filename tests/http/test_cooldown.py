"""Cooldowns through the real server, against fake upstreams on loopback that can be switched to
fail: a lone upstream that had trouble serves again with its first success (panic mode, not 30 s
of refusals), and where there is a healthy deployment the breaker still steers traffic to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import SdkFactory
from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.fakes.openai_upstream import error_response
from tests.harness import run_server


class SwitchableOpenAI(FakeOpenAI):
    """The fake OpenAI upstream, answering every chat request with a 500 while ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def _middlewares(self) -> list[Any]:
        return [*super()._middlewares(), self._failing_middleware]

    @web.middleware
    async def _failing_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.failing and request.path.endswith("/chat/completions"):
            return error_response(500, "The server had an error while processing your request.", "server_error")
        return await handler(request)

    def chats(self) -> int:
        return sum(1 for r in self.requests if r.path.endswith("/chat/completions"))


@pytest.fixture
def lone() -> Iterator[SwitchableOpenAI]:
    with SwitchableOpenAI() as fake:
        yield fake


def breakers(http: httpx.Client) -> dict[str, Any]:
    """/admin/upstreams: each upstream's breaker, and its deployments' breakers that are not closed."""
    out: dict[str, Any] = {}
    for up in http.get("/admin/upstreams").json()["data"]:
        out[up["name"]] = up["breaker"]
        out.update({d["breaker"]: d["state"] for d in up["deployment_breakers"]})
    return out


def test_a_lone_upstream_back_from_an_outage_serves_the_very_next_request(
    tmp_path: Any, lone: SwitchableOpenAI, sdk: SdkFactory,
) -> None:
    providers = {"up": {"type": "openai", "base_url": lone.base_url}}  # the default cooldown policy
    models = [{"alias": "m", "provider": "up", "model": "gpt-4o-mini"}]
    with run_server(tmp_path, providers=providers, models=models) as server, \
            server.http(server.admin_key) as http:
        lone.failing = True
        failed = [http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO}) for _ in range(12)]
        assert {r.status_code for r in failed} == {502}  # the upstream's failure, never a refusal of our own
        assert all(r.json()["error"]["code"] != "upstream_cooldown" for r in failed)
        assert lone.chats() == 12  # nothing else could serve them: each was still sent (panic mode)
        assert breakers(http)["up"] == "panic"
        metrics = http.get("/metrics").text
        assert 'switchyard_upstream_cooling_down{provider="up"} 1.0' in metrics
        assert 'switchyard_upstream_panic{provider="up"} 1.0' in metrics
        assert 'switchyard_upstream_panic_requests_total{provider="up"} 7.0' in metrics  # the 5 that cooled it

        lone.failing = False  # back, well within the 30 s cooldown
        client = sdk(server.v1, server.admin_key)
        for _ in range(20):
            assert client.chat.completions.create(model="m", messages=HELLO).choices[0].message.content
        assert lone.chats() == 32
        assert breakers(http)["up"] == "closed"
        metrics = http.get("/metrics").text
        assert 'switchyard_upstream_cooling_down{provider="up"} 0.0' in metrics
        assert 'switchyard_upstream_panic{provider="up"} 0.0' in metrics


def test_the_breaker_still_steers_away_from_a_failing_deployment_while_another_is_healthy(
    tmp_path: Any, lone: SwitchableOpenAI, sdk: SdkFactory,
) -> None:
    with SwitchableOpenAI() as healthy:
        providers = {"sick": {"type": "openai", "base_url": lone.base_url, "cooldown_failures": 2},
                     "well": {"type": "openai", "base_url": healthy.base_url}}
        models = [{"alias": "m", "routing": "ordered", "deployments": [
            {"provider": "sick", "model": "gpt-4o-mini"}, {"provider": "well", "model": "gpt-4o-mini"}]}]
        with run_server(tmp_path, providers=providers, models=models) as server, \
                server.http(server.admin_key) as http:
            lone.failing = True
            client = sdk(server.v1, server.admin_key)
            for _ in range(10):
                raw = client.chat.completions.with_raw_response.create(model="m", messages=HELLO)
                assert raw.parse().choices[0].message.content
                assert raw.headers["x-switchyard-deployment"] == "well/gpt-4o-mini"
            assert (lone.chats(), healthy.chats()) == (2, 10)  # two failures cooled it down: then skipped
            assert breakers(http)["sick/gpt-4o-mini"] == "open"
            assert "switchyard_upstream_panic_requests_total{" not in http.get("/metrics").text  # no panic
