"""/v1/messages on the wire, checked against the official anthropic SDK's types in strict mode.

The SDK's models are generated from Anthropic's API definition. ``strict=True`` turns off
pydantic's coercion, so a count sent as ``"3"``, a ``stop_reason`` Anthropic does not define or
a content block of an unknown ``type`` fails. The SDK tolerates fields it does not know (its
models allow extras) and fills optional fields with ``None``, so the fields Anthropic always
sends are checked by name here as well.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from anthropic.types import ErrorResponse, Message, MessageTokensCount, RawMessageStreamEvent
from pydantic import TypeAdapter, ValidationError

from tests.harness import RunningServer

MESSAGE_FIELDS = {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def strict(kind: Any, payload: Any) -> Any:
    return TypeAdapter(kind).validate_python(payload, strict=True)


def post(gateway: RunningServer, path: str, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"x-api-key": gateway.admin_key if key is None else key, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        return http.post(path, json=body, headers=headers)


def stream_events(gateway: RunningServer, body: dict[str, Any]) -> list[tuple[str, Any]]:
    headers = {"x-api-key": gateway.admin_key, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=gateway.url, timeout=30) as http, http.stream(
        "POST", "/v1/messages", json={**body, "stream": True}, headers=headers,
    ) as resp:
        assert resp.status_code == 200, resp.read()
        raw = resp.read().decode()
    frames = [frame.split("\n") for frame in raw.split("\n\n") if frame.strip()]
    assert all(lines[0].startswith("event: ") and lines[1].startswith("data: ") for lines in frames), raw
    return [(lines[0][7:], json.loads(lines[1][6:])) for lines in frames]


def test_the_validation_is_strict() -> None:
    ok = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
          "stop_sequence": None, "content": [{"type": "text", "text": "hi"}],
          "usage": {"input_tokens": 1, "output_tokens": 2}}
    strict(Message, ok)
    for broken in ({**ok, "usage": {"input_tokens": "1", "output_tokens": 2}}, {**ok, "stop_reason": "done"},
                   {**ok, "content": [{"type": "hologram"}]}, {**ok, "role": "user"}):
        with pytest.raises(ValidationError):
            strict(Message, broken)


@pytest.mark.parametrize("tools", [False, True])
def test_a_message(gateway: RunningServer, tools: bool) -> None:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": 100, "system": "be brief",
                            "messages": [{"role": "user", "content": "weather in paris contract-msg"}]}
    if tools:
        body |= {"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}}
    resp = post(gateway, "/v1/messages", body)
    assert resp.status_code == 200, resp.text
    payload = resp.json()
    assert set(payload) == MESSAGE_FIELDS
    msg = strict(Message, payload)
    assert [block.type for block in msg.content] == (["tool_use"] if tools else ["text"])
    assert msg.stop_reason == ("tool_use" if tools else "end_turn")


@pytest.mark.parametrize("tools", [False, True])
def test_every_stream_event(gateway: RunningServer, tools: bool) -> None:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": 100,
                            "messages": [{"role": "user", "content": "stream contract-stream"}]}
    if tools:
        body["tools"] = [WEATHER]
    got = stream_events(gateway, body)
    for name, data in got:
        event = strict(RawMessageStreamEvent, data)
        assert event.type == name
    assert set(got[0][1]["message"]) == MESSAGE_FIELDS
    names = [name for name, _ in got]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    deltas = {data["delta"]["type"] for name, data in got if name == "content_block_delta"}
    assert deltas == ({"input_json_delta"} if tools else {"text_delta"})


def test_errors(gateway: RunningServer) -> None:
    hello = [{"role": "user", "content": "hi"}]
    cases = [
        (post(gateway, "/v1/messages", {"model": "gpt-4o-mini", "max_tokens": 10, "messages": hello}, key="sk-no"),
         401, "authentication_error"),
        (post(gateway, "/v1/messages", {"model": "no-such-model", "max_tokens": 10, "messages": hello}),
         404, "not_found_error"),
        (post(gateway, "/v1/messages", {"model": "gpt-4o-mini", "messages": hello}), 400, "invalid_request_error"),
    ]
    for resp, status, kind in cases:
        assert resp.status_code == status, resp.text
        error = strict(ErrorResponse, resp.json())
        assert error.type == "error" and error.error.type == kind


def test_count_tokens(gateway: RunningServer) -> None:
    resp = post(gateway, "/v1/messages/count_tokens",
                {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]})
    assert resp.status_code == 200, resp.text
    assert strict(MessageTokensCount, resp.json()).input_tokens > 0
