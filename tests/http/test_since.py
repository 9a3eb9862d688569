"""``since`` and ``until`` over HTTP: /admin/usage and /admin/audit take the same three forms
(ISO 8601, Unix seconds, an age) and refuse anything else with a 400 naming the parameter.
(The grammar itself, form by form: tests/core/test_time.py.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import STORES, UPSTREAM_KEY, server_store
from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server

FORMS: dict[str, Callable[[timedelta], str]] = {
    "iso": lambda ago: (datetime.now(UTC) - ago).isoformat(),
    "unix": lambda ago: f"{(datetime.now(UTC) - ago).timestamp():.3f}",
    "age": lambda ago: f"{round(ago.total_seconds() / 60)}m",
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           upstream: FakeOpenAI) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("since")
    config: dict[str, Any] = {
        "providers": {"fake": {"type": "openai", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY}},
        "models": [{"alias": "chat", "provider": "fake", "model": "gpt-4o-mini"}],
        **server_store(request),
    }
    with run_server(data_dir, **config) as running, running.http(running.admin_key) as admin:
        assert admin.post("/admin/keys", json={"name": "audited"}).status_code == 201  # an audit entry
        reply = admin.post("/v1/chat/completions", json={"model": "chat", "messages": HELLO})  # a usage row
        assert reply.status_code == 200, reply.text
        running.usage_row(reply.headers["x-request-id"])  # written
        yield running


def _rows(http: httpx.Client, path: str, **params: str) -> list[dict[str, Any]]:
    reply = http.get(path, params=params)
    assert reply.status_code == 200, reply.text
    return list(reply.json()["data"])


@pytest.mark.parametrize("path", ["/admin/usage", "/admin/audit"])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_since_and_until_take_iso_unix_seconds_and_an_age(server: RunningServer, path: str, form: str) -> None:
    write = FORMS[form]
    with server.http(server.admin_key) as admin:
        assert _rows(admin, path, since=write(timedelta(hours=1)))  # what was done just now is after an hour ago
        assert _rows(admin, path, until=write(timedelta(hours=2))) == []  # and not before two hours ago
        assert _rows(admin, path, since=write(timedelta(hours=3)), until=write(timedelta(hours=2))) == []


@pytest.mark.parametrize("path", ["/admin/usage", "/admin/audit"])
@pytest.mark.parametrize("value", ["yesterday", "-1d", "1h30m", "2025-13-45"])
@pytest.mark.parametrize("param", ["since", "until"])
@pytest.mark.parametrize("server", ["sqlite"], indirect=True)  # parsing: the store plays no part
def test_anything_else_is_a_400_naming_the_parameter(server: RunningServer, path: str, value: str,
                                                       param: str) -> None:
    with server.http(server.admin_key) as admin:
        reply = admin.get(path, params={param: value})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert "ISO 8601 time, Unix seconds, or an age such as 30m, 24h or 7d" in error["message"]
