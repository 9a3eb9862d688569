"""The Anthropic Messages API inbound (/v1/messages), through the real server with the official anthropic SDK."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.fakes import FakeOllama, FakeOpenAI
from tests.harness import RunningServer

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
def claude(gateway: RunningServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=gateway.admin_key, max_retries=0, timeout=30) as c:
        yield c


def rid() -> str:
    return f"anth-{uuid.uuid4().hex[:12]}"


def sent(fake: FakeOpenAI, marker: str) -> dict[str, Any]:
    """The last chat body the fake OpenAI upstream got whose messages mention ``marker``."""
    bodies = [r.body for r in fake.requests
              if r.path == "/v1/chat/completions" and marker in json.dumps(r.body.get("messages"))]
    assert bodies, f"no upstream request mentions {marker!r}"
    return dict(bodies[-1])


def events(gateway: RunningServer, body: dict[str, Any], request_id: str | None = None) -> list[tuple[str, Any]]:
    """POST a streaming /v1/messages and return (event name, data JSON) pairs as they came."""
    out: list[tuple[str, Any]] = []
    headers = {"x-api-key": gateway.admin_key, "anthropic-version": "2023-06-01", "x-request-id": request_id or rid()}
    with httpx.Client(base_url=gateway.url, timeout=30) as http, http.stream(
        "POST", "/v1/messages", json={**body, "stream": True}, headers=headers,
    ) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read().decode()
    for frame in raw.split("\n\n"):
        if not frame.strip():
            continue
        lines = frame.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        name, data = lines[0][7:], json.loads(lines[1][6:])
        assert data["type"] == name
        out.append((name, data))
    return out


# ------------------------------------------------------------------------- text
def test_text_message(claude: anthropic.Anthropic, gateway: RunningServer, fake_openai: FakeOpenAI) -> None:
    request_id = rid()
    raw = claude.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=100, system="be brief",
        messages=[{"role": "user", "content": "hello text-1"}], extra_headers={"x-request-id": request_id},
    )
    assert raw.http_response.headers["x-request-id"] == request_id
    payload = raw.http_response.json()
    assert set(payload) == {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
    msg = raw.parse()
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == "gpt-4o-mini"
    assert [(b.type, b.text) for b in msg.content if b.type == "text"] == [("text", "echo: hello text-1")]
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    # the fake counts words: "be brief hello text-1" in, "echo:" "hello" "text-1" out
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (4, 3)
    upstream = sent(fake_openai, "hello text-1")
    assert upstream["model"] == "gpt-4o-mini" and upstream["max_tokens"] == 100
    assert upstream["messages"] == [{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "hello text-1"}]
    assert "stream" not in upstream and "system" not in upstream
    row = gateway.usage_row(request_id)
    assert row["endpoint"] == "chat" and row["model"] == "gpt-4o-mini" and row["status"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"]) == (4, 3)
    assert not row["streamed"] and not row["estimated"] and row["key_id"] is not None


def test_max_tokens_and_parameters(claude: anthropic.Anthropic, fake_openai: FakeOpenAI) -> None:
    msg = claude.messages.create(
        model="gpt-4o-mini", max_tokens=2, stop_sequences=["END", "STOP"], metadata={"user_id": "user-42"},
        messages=[{"role": "user", "content": "one two three params"}],
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 40},  # this SDK version has no sampling arguments
    )
    assert msg.stop_reason == "max_tokens"
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: one"
    upstream = sent(fake_openai, "one two three params")
    assert upstream["max_tokens"] == 2 and upstream["temperature"] == 0.5 and upstream["top_p"] == 0.9
    assert upstream["top_k"] == 40 and upstream["stop"] == ["END", "STOP"]
    # metadata.user_id goes upstream only as a stable hash
    assert upstream["user"] == "uid-" + hashlib.sha256(b"user-42").hexdigest()[:32]
    assert "metadata" not in upstream and "stop_sequences" not in upstream


def test_ollama_model_through_messages(claude: anthropic.Anthropic, fake_ollama: FakeOllama) -> None:
    msg = claude.messages.create(model="llama", max_tokens=50, messages=[{"role": "user", "content": "hi llama"}])
    assert msg.model == "llama" and msg.content[0].type == "text" and msg.content[0].text == "echo: hi llama"
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0
    with claude.messages.stream(model="llama", max_tokens=50,
                                messages=[{"role": "user", "content": "hi streamed llama"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hi streamed llama" and final.stop_reason == "end_turn"
    assert fake_ollama.last_request.path == "/api/chat"


# ---------------------------------------------------------------------- streaming
def test_stream_text_with_sdk(claude: anthropic.Anthropic, gateway: RunningServer, fake_openai: FakeOpenAI) -> None:
    request_id = rid()
    with claude.messages.stream(model="gpt-4o-mini", max_tokens=100, system="sys prompt",
                                messages=[{"role": "user", "content": "stream me please"}],
                                extra_headers={"x-request-id": request_id}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream me please"
    assert [b.type for b in final.content] == ["text"] and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.model == "gpt-4o-mini"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 4)
    upstream = sent(fake_openai, "stream me please")
    assert upstream["stream"] is True and upstream["stream_options"] == {"include_usage": True}
    row = gateway.usage_row(request_id)
    assert row["streamed"] and row["status"] == 200 and not row["estimated"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 4)


def test_stream_event_order(gateway: RunningServer) -> None:
    got = events(gateway, {"model": "gpt-4o-mini", "max_tokens": 100,
                           "messages": [{"role": "user", "content": "order of events"}]})
    names = [name for name, _ in got]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[2:-3] == ["content_block_delta"] * 4
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = got[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["role"] == "assistant"
    assert start["usage"] == {"input_tokens": 0, "output_tokens": 0} and start["model"] == "gpt-4o-mini"
    assert got[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert [d["delta"] for _, d in got[2:6]] == [{"type": "text_delta", "text": t}
                                                  for t in ["echo:", " order", " of", " events"]]
    assert got[-3][1] == {"type": "content_block_stop", "index": 0}
    assert got[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                          "usage": {"input_tokens": 3, "cache_creation_input_tokens": 0,
                                    "cache_read_input_tokens": 0, "output_tokens": 4}}


def test_client_leaving_closes_the_upstream(claude: anthropic.Anthropic, gateway: RunningServer,
                                            fake_openai: FakeOpenAI) -> None:
    before, request_id = fake_openai.disconnects, rid()
    with claude.messages.stream(model="slow-stream", max_tokens=100, messages=[{"role": "user", "content": "go"}],
                                extra_headers={"x-request-id": request_id}) as stream:
        for i, _ in enumerate(stream.text_stream):
            if i == 1:
                break
    assert fake_openai.wait_for_disconnects(before + 1, timeout=5)
    assert gateway.usage_row(request_id)["status"] == 499


# ----------------------------------------------------------------------- tool use
def test_tool_use(claude: anthropic.Anthropic, fake_openai: FakeOpenAI) -> None:
    msg = claude.messages.create(
        model="gpt-4o-mini", max_tokens=100, tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "weather in paris tool-1"}],
    )
    assert msg.stop_reason == "tool_use"
    [block] = msg.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "Paris"}
    assert block.id.startswith("call_")
    upstream = sent(fake_openai, "tool-1")
    assert upstream["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER["input_schema"]}}]
    assert upstream["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert upstream["parallel_tool_calls"] is False


@pytest.mark.parametrize(("choice", "expected"), [({"type": "auto"}, "auto"), ({"type": "any"}, "required"),
                                                  ({"type": "none"}, "none")])
def test_tool_choice_modes(claude: anthropic.Anthropic, fake_openai: FakeOpenAI, choice: Any, expected: str) -> None:
    marker = f"choice-{choice['type']}"
    msg = claude.messages.create(model="gpt-4o-mini", max_tokens=100, tools=[WEATHER], tool_choice=choice,
                                 messages=[{"role": "user", "content": marker}])
    upstream = sent(fake_openai, marker)
    assert upstream["tool_choice"] == expected and "parallel_tool_calls" not in upstream
    assert msg.stop_reason == ("end_turn" if expected == "none" else "tool_use")


def test_stream_tool_use_keeps_every_fragment(claude: anthropic.Anthropic, gateway: RunningServer,
                                              fake_openai: FakeOpenAI) -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 100, "tools": [WEATHER],
            "messages": [{"role": "user", "content": "stream tool-2"}]}
    got = events(gateway, body)
    fragments = [d["delta"]["partial_json"] for n, d in got if n == "content_block_delta"]
    assert len(fragments) > 1  # the fake really streams the arguments in pieces
    assert "".join(fragments) == json.dumps(fake_openai.tool_arguments)
    starts = [d for n, d in got if n == "content_block_start"]
    assert len(starts) == 1 and starts[0]["index"] == 0
    block = starts[0]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "get_weather" and block["input"] == {}
    assert all(d["index"] == 0 and d["delta"]["type"] == "input_json_delta" for n, d in got
               if n == "content_block_delta")
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use" and got[-1][0] == "message_stop"

    with claude.messages.stream(**body) as stream:
        partials = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    assert "".join(partials) == json.dumps(fake_openai.tool_arguments)
    [tool] = final.content
    assert tool.type == "tool_use" and tool.input == {"city": "Paris"} and final.stop_reason == "tool_use"


def test_tool_result_follow_up(claude: anthropic.Anthropic, fake_openai: FakeOpenAI) -> None:
    msg = claude.messages.create(
        model="gpt-4o-mini", max_tokens=100, tools=[WEATHER],
        messages=[
            {"role": "user", "content": "weather tool-3 in paris and rome"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "call_paris", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_rome", "name": "get_weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_paris", "content": "22C sunny"},
                {"type": "tool_result", "tool_use_id": "call_rome", "is_error": True,
                 "content": [{"type": "text", "text": "service down"}]},
            ]},
        ],
    )
    assert msg.stop_reason == "end_turn"
    assert msg.content[0].type == "text" and msg.content[0].text == "tool said: Error: service down"
    upstream = sent(fake_openai, "tool-3")
    assert upstream["messages"][1:] == [
        {"role": "assistant", "content": "Checking both.", "tool_calls": [
            {"id": "call_paris", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_rome", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_paris", "content": "22C sunny"},
        {"role": "tool", "tool_call_id": "call_rome", "content": "Error: service down"},
    ]


def test_system_blocks_and_images_reach_upstream(claude: anthropic.Anthropic, fake_openai: FakeOpenAI) -> None:
    claude.messages.create(
        model="gpt-4o-mini", max_tokens=100,
        system=[{"type": "text", "text": "You are terse."},
                {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "describe image-1"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ]}],
    )
    upstream = sent(fake_openai, "image-1")
    assert upstream["messages"] == [
        {"role": "system", "content": "You are terse.\n\nAnswer in French."},
        {"role": "user", "content": [
            {"type": "text", "text": "describe image-1"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]},
    ]


def test_structured_output(claude: anthropic.Anthropic, fake_openai: FakeOpenAI) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    msg = claude.messages.create(model="gpt-4o-mini", max_tokens=100,
                                 output_config={"format": {"type": "json_schema", "schema": schema}},
                                 messages=[{"role": "user", "content": "structured-1"}])
    assert msg.content[0].type == "text" and set(json.loads(msg.content[0].text)) == {"answer"}
    upstream = sent(fake_openai, "structured-1")
    assert upstream["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


# -------------------------------------------------------------------------- errors
def error_of(exc: anthropic.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["request_id"] == exc.response.headers["x-request-id"]
    return dict(body["error"])


def test_bad_key(gateway: RunningServer) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="sk-wrong", max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError) as info:
            bad.messages.create(model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert error_of(info.value) == {"type": "authentication_error", "message": "Invalid or missing API key."}
        with pytest.raises(anthropic.AuthenticationError):
            bad.messages.count_tokens(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_unknown_and_out_of_scope_models(claude: anthropic.Anthropic, gateway: RunningServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert error_of(info.value)["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):  # a stream fails before its first byte, as plain HTTP
        with claude.messages.stream(model="no-such-model", max_tokens=10,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            stream.get_final_message()
    with gateway.http(gateway.admin_key) as http:
        secret = http.post("/admin/keys", json={"name": "anth-scoped", "models": ["llama"]}).json()["key"]
    with anthropic.Anthropic(base_url=gateway.url, api_key=secret, max_retries=0) as scoped:
        assert scoped.messages.create(model="llama", max_tokens=10,
                                      messages=[{"role": "user", "content": "hi"}]).content
        with pytest.raises(anthropic.NotFoundError):
            scoped.messages.create(model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(anthropic.NotFoundError):
            scoped.messages.count_tokens(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_bad_requests(claude: anthropic.Anthropic, gateway: RunningServer) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="gpt-4o-mini", max_tokens=None,  # type: ignore[arg-type]
                               messages=[{"role": "user", "content": "hi"}])
    err = error_of(info.value)
    # Anthropic's shape and wording, which clients' own fallbacks look for
    assert err == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="gpt-4o-mini", max_tokens=10, messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "hologram", "data": "x"}]}])
    assert error_of(info.value)["message"].startswith(
        "messages.0.content.1.type: Input tag 'hologram' found using 'type' does not match any of the expected "
        "tags: 'text', 'image'")
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="gpt-4o-mini", max_tokens=10,
                               messages=[{"role": "tool", "content": "hi"}])  # type: ignore[typeddict-item]
    assert error_of(info.value)["message"] == ("messages.0.role: Input tag 'tool' found using 'role' does not "
                                               "match any of the expected tags: 'user', 'assistant', 'system'")
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="gpt-4o-mini", max_tokens=10, stop_sequences=["a", "b", "c", "d", "e"],
                               messages=[{"role": "user", "content": "hi"}])
    assert "stop sequences" in error_of(info.value)["message"]  # (how many: the model's max_stop)
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                               extra_body={"api_base": "http://evil.example"})
    assert "api_base" in error_of(info.value)["message"]
    with gateway.http() as http:
        resp = http.post("/v1/messages", content=b"{not json", headers={"x-api-key": gateway.admin_key})
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_upstream_rate_limit_and_overload(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        claude.messages.create(model="error-429", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert error_of(info.value)["type"] == "rate_limit_error"
    assert info.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.RateLimitError):
        with claude.messages.stream(model="error-429", max_tokens=10,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            stream.get_final_message()
    with pytest.raises(anthropic.APIStatusError) as status:
        claude.messages.create(model="error-503", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert status.value.status_code == 503 and error_of(status.value)["type"] == "overloaded_error"
    assert status.value.response.headers["retry-after"] == "3"


def test_mid_stream_failure(claude: anthropic.Anthropic, gateway: RunningServer) -> None:
    body = {"model": "fail-mid-stream", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    request_id = rid()
    got = events(gateway, body, request_id)
    names = [name for name, _ in got]
    assert names[0] == "message_start" and "content_block_delta" in names
    assert names[-1] == "error" and "message_stop" not in names and "message_delta" not in names
    assert got[-1][1]["error"]["type"] == "api_error" and got[-1][1]["error"]["message"]
    row = gateway.usage_row(request_id)  # accounted as the upstream failure it was, not as a client that left
    assert row["status"] == 502 and row["streamed"]
    with pytest.raises(anthropic.APIStatusError) as info:
        with claude.messages.stream(**body) as stream:  # type: ignore[arg-type]
            for _ in stream.text_stream:
                pass
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


# ---------------------------------------------------------------------- count_tokens
def test_count_tokens_is_an_estimate(claude: anthropic.Anthropic) -> None:
    hello = [{"role": "user", "content": "hello there"}]
    assert claude.messages.count_tokens(model="gpt-4o-mini", messages=hello).input_tokens == 2  # 11 chars / 4
    longer = claude.messages.count_tokens(model="gpt-4o-mini", messages=hello, system="x" * 400)
    assert longer.input_tokens == (400 + 11) // 4
    tools = claude.messages.count_tokens(model="gpt-4o-mini", messages=hello, tools=[WEATHER])
    assert tools.input_tokens > 2 + 30  # the schema counts too
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="no-such-model", messages=hello)
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.count_tokens(model="gpt-4o-mini", messages=[])
