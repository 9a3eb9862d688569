"""Routes match exactly: no trailing-slash redirects, unknown paths are 404 and wrong methods 405
in OpenAI's shape, and for every non-public path only after authentication."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.contract.openapi import validate
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server

SLASHED = [("GET", "/health/"), ("GET", "/metrics/"), ("GET", "/ready/"), ("GET", "/v1/models/"),
           ("POST", "/v1/chat/completions/"), ("POST", "/v1/embeddings/"), ("GET", "/admin/keys/")]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[RunningServer]:
    providers = {"up": {"type": "openai", "base_url": upstream.base_url}}
    models = [{"alias": "gpt-4o-mini", "provider": "up"}]
    with run_server(tmp_path_factory.mktemp("routes"), providers=providers, models=models) as srv:
        yield srv


def error(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, (resp.request.method, resp.request.url, resp.status_code, resp.text)
    body = resp.json()
    validate(body, "ErrorResponse")
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


@pytest.mark.parametrize(("method", "path"), SLASHED)
def test_a_trailing_slash_is_never_redirected(server: RunningServer, method: str, path: str) -> None:
    with server.http() as anonymous, server.http(server.admin_key) as admin:
        without = anonymous.request(method, path, json={})
        with_key = admin.request(method, path, json={"model": "gpt-4o-mini", "input": "x"})
    assert "location" not in without.headers and "location" not in with_key.headers
    error(without, 401, "invalid_api_key")
    if path == "/v1/models/":  # /v1/models/{id} with an empty id: no such model
        error(with_key, 404, "model_not_found")
    else:
        assert error(with_key, 404, "not_found") == f"Unknown route: {method} {path}"


def test_an_unknown_path_is_401_without_a_key_and_404_with_one(server: RunningServer) -> None:
    with server.http() as anonymous, server.http(server.admin_key) as admin:
        for method in ("GET", "POST", "DELETE"):
            error(anonymous.request(method, "/v1/foo"), 401, "invalid_api_key")
            error(anonymous.request(method, "/v1/foo", headers={"Authorization": "Bearer sk-sy-wrong"}), 401,
                  "invalid_api_key")
            error(admin.request(method, "/v1/foo"), 404, "not_found")
        error(anonymous.get("/v1"), 401, "invalid_api_key")
        error(admin.get("/v1"), 404, "not_found")


def test_a_wrong_method_is_405_after_authentication(server: RunningServer) -> None:
    with server.http() as anonymous, server.http(server.admin_key) as admin:
        error(anonymous.get("/v1/chat/completions"), 401, "invalid_api_key")
        wrong = admin.get("/v1/chat/completions")
        assert error(wrong, 405, "method_not_allowed") == "Method GET is not allowed on /v1/chat/completions."
        assert wrong.headers["allow"] == "POST"
        error(anonymous.delete("/admin/keys"), 401, "invalid_api_key")
        assert error(admin.delete("/admin/keys"), 405, "method_not_allowed") == (
            "Method DELETE is not allowed on /admin/keys.")
        # a public path needs no key to be told so
        public = anonymous.post("/health")
        error(public, 405, "method_not_allowed")
        assert set(public.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_the_sdk_sees_ordinary_errors(server: RunningServer, upstream: FakeOpenAI) -> None:
    seen = len(upstream.requests)
    with openai.OpenAI(base_url=server.url + "/v1/", api_key=server.admin_key, max_retries=0) as client:
        assert client.models.list().data  # the SDK's own base URL ends in a slash; its paths do not
        with pytest.raises(openai.NotFoundError) as info:
            client.get("/foo", cast_to=object)
        assert info.value.code == "not_found"
    with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-sy-nope", max_retries=0) as client, \
            pytest.raises(openai.AuthenticationError):
        client.get("/foo", cast_to=object)
    assert len(upstream.requests) == seen


def test_public_metrics_answer_a_wrong_method_without_a_key(tmp_path: Path) -> None:
    with run_server(tmp_path, metrics_public=True) as srv, srv.http() as anonymous:
        assert anonymous.get("/metrics").status_code == 200
        error(anonymous.post("/metrics"), 405, "method_not_allowed")
        error(anonymous.get("/metrics/"), 401, "invalid_api_key")
