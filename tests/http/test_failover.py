"""Routing that survives failures, through the real server: deployments, fallbacks, retries only
before the first byte, per-deployment cooldowns and timeouts, and the headers that tell."""

from __future__ import annotations

import json
import threading
from collections import Counter
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
        {"alias": "cut", "routing": "ordered", "deployments": [
            {"provider": "up", "model": "fail-mid-stream"}, {"provider": "twin", "model": "gpt-4o-mini"}]},
        {"alias": "late", "routing": "ordered", "deployments": [
            {"provider": "up", "model": "error-500"}, {"provider": "twin", "model": "gpt-4o-mini"}]},
        {"alias": "patient", "routing": "ordered", "deployments": [
            {"provider": "up", "model": "slow", "timeout": 0.3}, {"provider": "twin", "model": "gpt-4o-mini"}]},
        {"alias": "split", "deployments": [
            {"provider": "up", "model": "gpt-4o-mini", "weight": 3},
            {"provider": "twin", "model": "gpt-4o", "weight": 1}]},
        {"alias": "balanced", "routing": "least_busy", "deployments": [
            {"provider": "up", "model": "slow-stream"}, {"provider": "twin", "model": "slow-stream"}]},
        {"alias": "limited", "provider": "up", "model": "error-429", "fallbacks": ["backup"]},
        {"alias": "broken", "provider": "up", "model": "error-503", "fallbacks": ["forbidden", "backup"]},
        {"alias": "picky", "provider": "up", "model": "error-400", "fallbacks": ["backup"]},
        {"alias": "forbidden", "provider": "twin", "model": "gpt-4o"},
        {"alias": "backup", "provider": "twin", "model": "gpt-4o-mini"},
        {"alias": "small", "provider": "up", "model": "gpt-4o-mini", "capabilities": {"context_length": 20},
         "context_window_fallbacks": ["large"]},
        {"alias": "small-only", "provider": "up", "model": "gpt-4o-mini", "capabilities": {"context_length": 20}},
        {"alias": "large", "provider": "twin", "model": "gpt-4o"},
        {"alias": "no-logprobs", "provider": "up", "model": "gpt-4o-mini", "capabilities": {"logprobs": False}},
        {"alias": "drops-logprobs", "provider": "up", "model": "gpt-4o-mini", "capabilities": {"logprobs": False},
         "drop_params": ["logprobs"]},
        {"alias": "warm", "provider": "up", "model": "gpt-4o-mini", "default_temperature": 0.2},
    ]
    with run_server(tmp_path_factory.mktemp("failover"), providers=providers, models=models) as srv:
        yield srv


def chat(http: httpx.Client, model: str, **extra: object) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": HELLO, **extra})


def test_a_refused_deployment_fails_over_and_then_cools_down(server: RunningServer, upstream: FakeOpenAI) -> None:
    with server.http(server.admin_key) as http:
        for attempts in ("2", "2", "1", "1"):  # two refusals cool the dead deployment down for 60 s
            before = len(upstream.requests)
            resp = chat(http, "failover")
            assert resp.status_code == 200, resp.text
            validate(resp.json(), "CreateChatCompletionResponse")
            assert resp.headers["x-switchyard-deployment"] == "up/gpt-4o-mini"
            assert resp.headers["x-switchyard-attempts"] == attempts
            assert len(upstream.requests) == before + 1
        metrics = http.get("/metrics").text
    assert 'switchyard_upstream_cooling_down{provider="dead/gpt-4o-mini"} 1.0' in metrics


def test_the_openai_sdk_sees_one_ordinary_answer(server: RunningServer, sdk: SdkFactory) -> None:
    client = sdk(server.v1, server.admin_key)
    raw = client.chat.completions.with_raw_response.create(model="failover", messages=HELLO)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-switchyard-deployment"] == "up/gpt-4o-mini"


def test_a_stream_that_dies_after_its_first_byte_is_not_retried(server: RunningServer, upstream: FakeOpenAI) -> None:
    seen = len(upstream.requests)
    with server.http(server.admin_key) as http, http.stream(
        "POST", "/v1/chat/completions", json={"model": "cut", "messages": HELLO, "stream": True},
        headers={"x-request-id": "cut-stream-1"},
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-switchyard-attempts"] == "1"
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] != "data: [DONE]"
    assert "error" in json.loads(lines[-1].removeprefix("data: "))
    assert any(json.loads(x.removeprefix("data: ")).get("choices") for x in lines[:-1])  # content was relayed
    models = [r.body["model"] for r in upstream.requests[seen:] if r.path.endswith("/chat/completions")]
    assert models == ["fail-mid-stream"]  # the twin deployment was never asked
    row = server.usage_row("cut-stream-1")
    assert row["status"] == 502 and row["streamed"]


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


def test_weights_share_the_traffic(server: RunningServer) -> None:
    with server.http(server.admin_key) as http:
        served = Counter(chat(http, "split").headers["x-switchyard-deployment"] for _ in range(200))
    assert set(served) == {"up/gpt-4o-mini", "twin/gpt-4o"}
    assert 0.6 < served["up/gpt-4o-mini"] / 200 < 0.9  # 3:1 is 0.75


def test_least_busy_picks_the_idle_deployment(server: RunningServer) -> None:
    with server.http(server.admin_key) as http:
        holding, release = threading.Event(), threading.Event()
        held: list[str] = []

        def hold() -> None:
            with server.http(server.admin_key) as h2, h2.stream(
                "POST", "/v1/chat/completions", json={"model": "balanced", "messages": HELLO, "stream": True}
            ) as resp:
                held.append(resp.headers["x-switchyard-deployment"])
                for i, _ in enumerate(resp.iter_lines()):
                    if i == 2:
                        holding.set()
                    if release.is_set():
                        break

        thread = threading.Thread(target=hold)
        thread.start()
        try:
            assert holding.wait(5)
            with http.stream("POST", "/v1/chat/completions",
                             json={"model": "balanced", "messages": HELLO, "stream": True}) as resp:
                other = resp.headers["x-switchyard-deployment"]
        finally:
            release.set()
            thread.join(10)
    assert {held[0], other} == {"up/slow-stream", "twin/slow-stream"}


@pytest.mark.parametrize("alias", ["limited", "broken"])
def test_fallbacks_serve_what_the_alias_could_not(server: RunningServer, alias: str) -> None:
    with server.http(server.admin_key) as http:
        resp = chat(http, alias, stream=False)
    assert resp.status_code == 200
    assert resp.headers["x-switchyard-deployment"] == "twin"
    assert resp.headers["x-switchyard-attempts"] == "2"
    assert resp.json()["model"] == ("gpt-4o-mini" if alias == "limited" else "gpt-4o")  # the first fallback


def test_a_fallback_the_key_may_not_use_is_skipped(server: RunningServer, upstream: FakeOpenAI) -> None:
    with server.http(server.admin_key) as admin:
        key = admin.post("/admin/keys", json={"name": "scoped", "models": ["broken", "backup"]}).json()["key"]
    seen = len(upstream.requests)
    with server.http(key) as http:
        resp = chat(http, "broken")
    assert resp.status_code == 200 and resp.headers["x-switchyard-attempts"] == "2"
    models = [r.body["model"] for r in upstream.requests[seen:] if r.path.endswith("/chat/completions")]
    assert models == ["error-503", "gpt-4o-mini"]  # "forbidden" (gpt-4o) was not tried


def test_a_bad_request_is_not_retried_elsewhere(server: RunningServer) -> None:
    with server.http(server.admin_key) as http:
        resp = chat(http, "picky")
    assert resp.status_code == 400 and resp.headers["x-switchyard-attempts"] == "1"


def test_a_prompt_too_long_goes_to_the_context_window_fallback(server: RunningServer) -> None:
    long = [{"role": "user", "content": "word " * 200}]
    with server.http(server.admin_key) as http:
        resp = http.post("/v1/chat/completions", json={"model": "small", "messages": long})
        refused = http.post("/v1/chat/completions", json={"model": "small-only", "messages": long})
        short = http.post("/v1/chat/completions", json={"model": "small", "messages": HELLO})
    assert resp.status_code == 200 and resp.headers["x-switchyard-deployment"] == "twin"
    assert refused.status_code == 400
    err = refused.json()["error"]
    assert (err["code"], err["param"]) == ("context_length_exceeded", "messages")
    assert "maximum context length is 20 tokens" in err["message"]
    assert short.status_code == 200 and short.headers["x-switchyard-deployment"] == "up"


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


def test_default_temperature_applies_only_when_the_request_sets_none(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    with server.http(server.admin_key) as http:
        assert chat(http, "warm").status_code == 200
        assert upstream.last_request.body["temperature"] == 0.2
        assert chat(http, "warm", temperature=1.1).status_code == 200
        assert upstream.last_request.body["temperature"] == 1.1


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
