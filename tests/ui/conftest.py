"""A server with a priced model behind a fake OpenAI upstream, and console sessions over httpx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server

PRICE = 10_000.0  # USD per 1M tokens, in and out: one cent a token


@pytest.fixture(scope="package")
def ui_upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def priced_config(upstream: FakeOpenAI) -> dict[str, Any]:
    priced = {"input_cost_per_1m": PRICE, "output_cost_per_1m": PRICE}
    return {
        "providers": {"up": {"type": "openai", "base_url": upstream.base_url, "cooldown_failures": 0}},
        "models": [{"alias": "m", "provider": "up", "model": "gpt-4o-mini", **priced},
                   {"alias": "other", "provider": "up", "model": "gpt-4o-mini", **priced}],
    }


@pytest.fixture(scope="package")
def ui_server(tmp_path_factory: pytest.TempPathFactory, ui_upstream: FakeOpenAI) -> Iterator[RunningServer]:
    # every test signs in from 127.0.0.1: the sign-in limit is tested on a server of its own
    with run_server(tmp_path_factory.mktemp("ui"), ui_sign_in_per_minute=1000, **priced_config(ui_upstream)) as srv:
        yield srv


class Console:
    """A browser-like client: the session cookie, and the CSRF token kept in memory."""

    def __init__(self, server: RunningServer, key: str) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=30)
        resp = self.http.post("/ui/api/session", json={"key": key})
        assert resp.status_code == 200, resp.text
        self.who: dict[str, Any] = resp.json()
        self.csrf: str = self.who["csrf_token"]

    def change(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, headers={"x-csrf-token": self.csrf}, **kwargs)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def console() -> Iterator[Any]:
    made: list[Console] = []

    def sign_in(server: RunningServer, key: str) -> Console:
        made.append(Console(server, key))
        return made[-1]

    yield sign_in
    for c in made:
        c.close()
