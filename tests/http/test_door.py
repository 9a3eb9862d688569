"""Requests no model can honour are refused at the door: a 400 naming the parameter, and the
upstream never called. Through the real server, with the official openai and anthropic SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.contract.openapi import validate
from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
CLAUDE_TOOL = {"name": "f", "input_schema": {"type": "object", "properties": {}}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[RunningServer]:
    providers = {"up": {"type": "openai", "base_url": upstream.base_url, "cooldown_failures": 0}}
    models = [
        {"alias": "unknown-context", "provider": "up", "model": "gpt-4o-mini"},
        {"alias": "known-context", "provider": "up", "model": "gpt-4o-mini",
         "capabilities": {"context_length": 8192, "n": 2, "max_stop": 6}},
        {"alias": "small", "provider": "up", "model": "gpt-4o-mini", "capabilities": {"context_length": 100},
         "context_window_fallbacks": ["unknown-context"]},
    ]
    # the ceiling and the tool cap keep their defaults (1,048,576 tokens, 512 tools); the message
    # cap is lowered from 100,000 so that the test does not spend seconds building bodies
    with run_server(tmp_path_factory.mktemp("door"), providers=providers, models=models,
                    max_messages_per_request=1000) as srv:
        yield srv


@pytest.fixture
def client(server: RunningServer, upstream: FakeOpenAI) -> Iterator[openai.OpenAI]:
    upstream.reset()
    with openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=60) as sdk:
        yield sdk


@pytest.fixture
def claude(server: RunningServer, upstream: FakeOpenAI) -> Iterator[anthropic.Anthropic]:
    upstream.reset()
    with anthropic.Anthropic(base_url=server.url, api_key=server.admin_key, max_retries=0, timeout=60) as sdk:
        yield sdk


def chat_calls(upstream: FakeOpenAI) -> list[Any]:
    return [r for r in upstream.requests if r.path.endswith("/chat/completions")]


def refused(client: openai.OpenAI, upstream: FakeOpenAI, **request: Any) -> dict[str, Any]:
    """The error body of a request the door refuses, streamed and not; the upstream saw neither."""
    errors = []
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(**{"messages": HELLO, **request}, stream=stream)
        assert info.value.status_code == 400
        validate({"error": info.value.body}, "ErrorResponse")
        errors.append(info.value.body)
    assert errors[0] == errors[1]
    assert chat_calls(upstream) == []
    return dict(errors[0])


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_an_output_limit_beyond_the_ceiling_is_refused(client: openai.OpenAI, upstream: FakeOpenAI,
                                                       field: str) -> None:
    err = refused(client, upstream, model="unknown-context", **{field: 1_000_000_000_000})
    assert (err["param"], err["code"], err["type"]) == (field, "invalid_value", "invalid_request_error")
    assert "1048576" in err["message"]
    # the ceiling itself is accepted
    client.chat.completions.create(model="unknown-context", messages=HELLO, **{field: 1_048_576})
    assert chat_calls(upstream)[-1].body[field] == 1_048_576


def test_an_output_limit_beyond_a_known_context_is_refused(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    err = refused(client, upstream, model="known-context", max_tokens=8193)
    assert (err["param"], err["code"]) == ("max_tokens", "context_length_exceeded")
    assert "8192" in err["message"]


def test_a_float_output_limit_is_checked_too(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    err = refused(client, upstream, model="unknown-context", extra_body={"max_tokens": 1e12})
    assert (err["param"], err["code"]) == ("max_tokens", "invalid_value")


def test_a_context_window_fallback_still_serves_an_output_limit_its_alias_cannot(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    client.chat.completions.create(model="small", messages=HELLO, max_tokens=5000)
    assert [r.body["max_tokens"] for r in chat_calls(upstream)] == [5000]


def test_n_above_the_models_max_n_is_refused(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    err = refused(client, upstream, model="known-context", n=3)
    assert (err["param"], err["code"]) == ("n", "unsupported_parameter")
    err = refused(client, upstream, model="known-context", extra_body={"n": 3.0})
    assert err["param"] == "n"


def test_a_stop_list_longer_than_the_model_takes_is_refused(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    err = refused(client, upstream, model="unknown-context", stop=["a", "b", "c", "d", "e"])
    assert (err["param"], err["code"]) == ("stop", "invalid_value")
    assert "at most 4" in err["message"]
    # a model whose capabilities say it takes six gets six
    client.chat.completions.create(model="known-context", messages=HELLO, stop=list("abcdef"))
    assert chat_calls(upstream)[-1].body["stop"] == list("abcdef")


def test_too_many_tools_or_messages_are_refused(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    err = refused(client, upstream, model="unknown-context", tools=[TOOL] * 513)
    assert (err["param"], err["code"]) == ("tools", "invalid_value")
    assert "512" in err["message"]
    many = [{"role": "user", "content": "x"}] * 1001
    err = refused(client, upstream, model="unknown-context", messages=many)
    assert (err["param"], err["code"]) == ("messages", "invalid_value")
    assert "1000" in err["message"]
    client.chat.completions.create(model="unknown-context", messages=many[:1000])
    assert len(chat_calls(upstream)[-1].body["messages"]) == 1000


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model": "unknown-context", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}',
     "temperature"),
    (b'{"model": "unknown-context", "messages": [{"role": "user", "content": "hi"}], "top_p": NaN}', "top_p"),
    (b'{"model": "unknown-context", "messages": [{"role": "user", "content": "hi"}], '
     b'"logit_bias": {"50256": -Infinity}}', "logit_bias.50256"),
    (b'{"model": "unknown-context", "messages": [{"role": "user", "content": "hi"}], '
     b'"presence_penalty": 1' + b"0" * 400 + b"}", "presence_penalty"),
])
def test_non_finite_numbers_are_refused_by_name(server: RunningServer, upstream: FakeOpenAI, raw: bytes,
                                                param: str) -> None:
    # (the SDKs cannot send these: Python's json refuses them with allow_nan=False, so raw bytes)
    upstream.reset()
    headers = {"content-type": "application/json"}
    with server.http(server.admin_key) as http:
        resp = http.post("/v1/chat/completions", content=raw, headers=headers)
        claude = http.post("/v1/messages", content=raw.replace(b'"messages"', b'"max_tokens": 5, "messages"'),
                           headers={**headers, "anthropic-version": "2023-06-01"})
    assert resp.status_code == 400, resp.text
    validate(resp.json(), "ErrorResponse")
    assert (resp.json()["error"]["param"], resp.json()["error"]["code"]) == (param, "invalid_value")
    assert claude.status_code == 400 and claude.json()["type"] == "error"
    assert param in claude.json()["error"]["message"]
    assert chat_calls(upstream) == []


def claude_refused(claude: anthropic.Anthropic, upstream: FakeOpenAI, **request: Any) -> str:
    """The error message of a /v1/messages request the door refuses, streamed and not."""
    messages = []
    for stream in (False, True):
        with pytest.raises(anthropic.BadRequestError) as info:
            claude.messages.create(**{"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **request},
                                   stream=stream)
        body = info.value.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        messages.append(str(body["error"]["message"]))
    assert chat_calls(upstream) == []
    return messages[0]


def test_the_messages_api_is_stopped_at_the_same_door(claude: anthropic.Anthropic, upstream: FakeOpenAI) -> None:
    assert "max_tokens" in claude_refused(claude, upstream, model="unknown-context", max_tokens=1_000_000_000_000)
    assert "8192" in claude_refused(claude, upstream, model="known-context", max_tokens=9000)
    assert "stop sequences" in claude_refused(claude, upstream, model="unknown-context",
                                              stop_sequences=["a", "b", "c", "d", "e"])
    assert "tools" in claude_refused(claude, upstream, model="unknown-context", tools=[CLAUDE_TOOL] * 513)
    turns = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}] * 500 + [
        {"role": "user", "content": "z"}]
    assert "messages" in claude_refused(claude, upstream, model="unknown-context", messages=turns)
    answer = claude.messages.create(model="known-context", max_tokens=10, stop_sequences=list("abcdef"),
                                    messages=[{"role": "user", "content": "hi"}])
    assert answer.type == "message"
    assert json.loads(chat_calls(upstream)[-1].raw_body)["stop"] == list("abcdef")


def test_max_stop_is_a_capability_operators_can_override() -> None:
    from switchyard.core.capabilities import defaults_for

    with pytest.raises(ValueError, match="max_stop"):
        defaults_for("openai").merged({"max_stop": 0})
    assert defaults_for("openai").merged({"max_stop": 16}).as_json()["max_stop"] == 16
    assert defaults_for("openai").intersect(defaults_for("ollama").merged({"max_stop": 2})).max_stop == 2


def test_the_door_settings_default_and_validate() -> None:
    from pydantic import ValidationError

    from switchyard.settings import Settings

    defaults = Settings()
    assert (defaults.max_tokens_ceiling, defaults.max_tools_per_request, defaults.max_messages_per_request) == (
        1_048_576, 512, 100_000)
    with pytest.raises(ValidationError):
        Settings(max_tools_per_request=0)
