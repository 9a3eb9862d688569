"""Routing that survives failures, through the real server: what the client sees of it (the
headers that tell, streams that failed over before their first byte, the SDK's view) and the
per-deployment timeouts the provider clients keep. The pipeline's own logic (failover order,
fallbacks, cooldowns, the contract) is tested in-process, in tests/service/test_gateway.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import SdkFactory
from tests.contract.openapi import validate
from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, free_port, run_server


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[RunningServer]:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connection refused
    no_cooldown = {"cooldown_failures": 0}
    providers = {
        "up": {"type": "openai", "base_url": upstream.base_url, **no_cooldown},
        "twin": {"type": "openai", "base_url": upstream.base_url, **no_cooldown},
        "dead": {"type": "openai", "base_url": dead, "cooldown_failures": 2, "cooldown_window": 60,
                 "cooldown_seconds": 60},
    }
    models = [
        {"alias": "failover", "routing": "ordered", "deployments": [
            {"provider": "dead", "model": "gpt-4o-mini"}, {"provider": "up", "model": "gpt-4o-mini"}]},
        {"alias": "late", "routing": "ordered", "deployments": [
            {"provider": "up", "model": "error-500"}, {"provider": "twin", "model": "gpt-4o-mini"}]},
        {"alias": "patient", "routing": "ordered", "deployments": [
            {"provider": "up", "model": "slow", "timeout": 0.3}, {"provider": "twin", "model": "gpt-4o-mini"}]},
        {"alias": "picky", "provider": "up", "model": "error-400", "fallbacks": ["backup"]},
        {"alias": "backup", "provider": "twin", "model": "gpt-4o-mini"},
        {"alias": "small", "provider": "up", "model": "gpt-4o-mini", "capabilities": {"context_length": 20},
         "context_window_fallbacks": ["large"]},
        {"alias": "large", "provider": "twin", "model": "gpt-4o"},
        {"alias": "no-logprobs", "provider": "up", "model": "gpt-4o-mini", "capabilities": {"logprobs": False}},
        {"alias": "drops-logprobs", "provider": "up", "model": "gpt-4o-mini", "capabilities": {"logprobs": False},
         "drop_params": ["logprobs"]},
    ]
    with run_server(tmp_path_factory.mktemp("failover"), providers=providers, models=models) as srv:
        yield srv


def chat(http: httpx.Client, model: str, **extra: object) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": HELLO, **extra})


def test_the_openai_sdk_sees_one_ordinary_answer(server: RunningServer, sdk: SdkFactory) -> None:
    client = sdk(server.v1, server.admin_key)
    raw = client.chat.completions.with_raw_response.create(model="failover", messages=HELLO)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-switchyard-deployment"] == "up/gpt-4o-mini"


def test_a_stream_that_fails_before_its_first_byte_moves_on(server: RunningServer, upstream: FakeOpenAI) -> None:
    seen = len(upstream.requests)
    with server.http(server.admin_key) as http, http.stream(
        "POST", "/v1/chat/completions", json={"model": "late", "messages": HELLO, "stream": True}
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-switchyard-attempts"] == "2"
        assert resp.headers["x-switchyard-deployment"] == "twin/gpt-4o-mini"
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        validate(json.loads(line.removeprefix("data: ")), "CreateChatCompletionStreamResponse")
    models = [r.body["model"] for r in upstream.requests[seen:] if r.path.endswith("/chat/completions")]
    assert models == ["error-500", "gpt-4o-mini"]


def test_each_deployment_has_its_own_timeout(server: RunningServer) -> None:
    with server.http(server.admin_key) as http:
        resp = chat(http, "patient")
    assert resp.status_code == 200
    assert resp.headers["x-switchyard-attempts"] == "2"
    assert resp.elapsed.total_seconds() < 4  # the slow deployment (5 s) was given up on after 0.3 s


def test_a_capability_the_model_lacks_is_refused_or_dropped(server: RunningServer, upstream: FakeOpenAI) -> None:
    with server.http(server.admin_key) as http:
        refused = chat(http, "no-logprobs", logprobs=True)
        dropped = chat(http, "drops-logprobs", logprobs=True, top_logprobs=2)
        sent = upstream.last_request.body
        models = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert refused.status_code == 400
    assert (refused.json()["error"]["param"], refused.json()["error"]["code"]) == ("logprobs", "unsupported_parameter")
    assert dropped.status_code == 200
    assert "logprobs" not in sent and "top_logprobs" not in sent
    assert models["no-logprobs"]["capabilities"]["logprobs"] is False
    assert models["small"]["capabilities"]["context_length"] == 20
    assert models["failover"]["capabilities"]["tools"] is True
    for model in models.values():
        validate(model, "Model")


def test_unknown_fallbacks_are_a_config_error(tmp_path: Path) -> None:
    from switchyard.settings import ConfigError, load_settings

    cfg = tmp_path / "switchyard.yaml"
    cfg.write_text("providers:\n  up: {type: openai, base_url: 'http://127.0.0.1:1/v1'}\n"
                   "models:\n  - alias: a\n    provider: up\n    fallbacks: [nope]\n")
    with pytest.raises(ConfigError, match=r"line 6: models\.0\.fallbacks\.0: 'nope' is not another configured alias"):
        load_settings(cfg)


def test_sdk_errors_still_carry_the_attempts(server: RunningServer, sdk: SdkFactory) -> None:
    client = sdk(server.v1, server.admin_key)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="picky", messages=HELLO)
    assert info.value.response.headers["x-switchyard-attempts"] == "1"
