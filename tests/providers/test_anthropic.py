"""The anthropic provider end to end: the official openai SDK -> a real Switchyard -> a fake Anthropic API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.contract.openapi import validate
from tests.contract.test_chat import HELLO, WEATHER_TOOL, sse_events
from tests.fakes.anthropic_upstream import DEFAULT_MODELS, REFUSAL_TEXT, TOOL_ARGUMENTS, FakeAnthropic
from tests.harness import RunningServer, run_server

UPSTREAM_KEY = "sk-ant-api03-upstream-secret-0123456789abcdef"
WRONG_KEY = "sk-ant-api03-wrong-secret-fedcba9876543210"
KNOBS = ["overloaded", "rate-limited", "server-error", "too-large", "error-mid-stream", "cut-mid-stream",
         "slow-stream", "max-tokens", "refusal", "parallel-tools", "cached"]
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "description": "Local time in a city",
                                              "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=UPSTREAM_KEY, page_size=2) as up:
        yield up


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeAnthropic) -> Iterator[RunningServer]:
    models: list[dict[str, Any]] = [{"alias": "claude", "provider": "claude", "model": "claude-sonnet-4-5"}]
    models += [{"alias": f"claude-{knob}", "provider": "claude", "model": knob} for knob in KNOBS]
    models += [{"alias": "claude-badkey", "provider": "badkey", "model": "claude-sonnet-4-5"},
               # structured outputs exist on Claude 4.5+ only, so the operator opts a model in
               {"alias": "claude-structured", "provider": "claude", "model": "claude-sonnet-4-5",
                "capabilities": {"json_schema": True}}]
    with run_server(
        tmp_path_factory.mktemp("anthropic"),
        providers={
            "claude": {"type": "anthropic", "base_url": fake.base_url, "api_key": UPSTREAM_KEY,
                       "cooldown_failures": 0},
            "badkey": {"type": "anthropic", "base_url": fake.base_url, "api_key": WRONG_KEY,
                       "cooldown_failures": 0},
        },
        models=models,
    ) as running:
        yield running


@pytest.fixture
def oai(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=30) as sdk_client:
        yield sdk_client


def sent(fake: FakeAnthropic) -> dict[str, Any]:
    return fake.messages_requests()[-1]


def stream_chunks(stream: Any) -> list[dict[str, Any]]:
    """Each chunk the SDK parsed, as the JSON that came over the wire, validated against the spec."""
    chunks = []
    for chunk in stream:
        raw = chunk.to_dict()
        validate(raw, "CreateChatCompletionStreamResponse")
        chunks.append(raw)
    return chunks


def test_chat_round_trip(oai: openai.OpenAI, fake: FakeAnthropic, server: RunningServer) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="claude", temperature=0.5, max_tokens=50, stop=["ZZZ"], user="user-7", top_p=0.9,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"}, *HELLO],
        extra_headers={"x-request-id": "anthropic-chat-1"},
    )
    payload = raw.http_response.json()
    validate(payload, "CreateChatCompletionResponse")
    assert payload["model"] == "claude" and payload["object"] == "chat.completion"
    choice = payload["choices"][0]
    assert choice["message"]["content"] == "echo: first hello there" and choice["finish_reason"] == "stop"
    request = fake.requests[-1]
    assert request.method == "POST" and request.path == "/v1/messages"
    assert request.headers["x-api-key"] == UPSTREAM_KEY and request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json" and "authorization" not in request.headers
    assert request.body == {
        "model": "claude-sonnet-4-5", "max_tokens": 50, "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "first"},
                                                  {"type": "text", "text": "hello there"}]}],
        "stop_sequences": ["ZZZ"], "temperature": 0.5, "top_p": 0.9, "metadata": {"user_id": "user-7"},
    }
    usage = payload["usage"]
    assert usage["prompt_tokens"] == 5 and usage["completion_tokens"] == 4 and usage["total_tokens"] == 9
    row = server.usage_row("anthropic-chat-1")
    assert (row["provider"], row["status"], row["streamed"], row["estimated"]) == ("claude", 200, False, False)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 4)


def test_stream_with_usage(oai: openai.OpenAI, fake: FakeAnthropic, server: RunningServer) -> None:
    stream = oai.chat.completions.create(model="claude", messages=HELLO, stream=True,
                                         stream_options={"include_usage": True},
                                         extra_headers={"x-request-id": "anthropic-stream-1"})
    chunks = stream_chunks(stream)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == \
        "echo: hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert sent(fake)["stream"] is True
    row = server.usage_row("anthropic-stream-1")
    assert (row["status"], row["streamed"], row["estimated"]) == (200, True, False)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (2, 3)


def test_stream_without_usage_ends_with_done(server: RunningServer) -> None:
    events = sse_events(server, {"model": "claude", "messages": HELLO, "stream": True})
    assert events[-1] == "[DONE]"
    for chunk in events[:-1]:
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert chunk["choices"] and "usage" not in chunk


def test_tool_call(oai: openai.OpenAI, fake: FakeAnthropic) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="claude", messages=HELLO, tools=[WEATHER_TOOL],
                                                        tool_choice="required", parallel_tool_calls=False)
    validate(raw.http_response.json(), "CreateChatCompletionResponse")
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id.startswith("toolu_") and call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == TOOL_ARGUMENTS  # type: ignore[union-attr]
    body = sent(fake)
    assert body["tools"] == [{"name": "get_weather", "description": "Weather for a city",
                              "input_schema": WEATHER_TOOL["function"]["parameters"]}]  # type: ignore[index]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_streamed_tool_call_through_the_sdk_stream_helper(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(model="claude", messages=HELLO, tools=[WEATHER_TOOL]) as stream:  # type: ignore[list-item]
        fragments = [e.arguments_delta for e in stream if e.type == "tool_calls.function.arguments.delta"
                     and e.arguments_delta]
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert final.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments) == TOOL_ARGUMENTS  # type: ignore[union-attr]
    args = json.dumps(TOOL_ARGUMENTS, ensure_ascii=False)
    assert fragments == [args[i : i + 5] for i in range(0, len(args), 5)]  # every fragment, in order


def test_text_then_parallel_tool_calls_stream(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model="claude-parallel-tools", messages=HELLO, stream=True,
                                         tools=[WEATHER_TOOL, TIME_TOOL])  # type: ignore[list-item]
    chunks = stream_chunks(stream)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me check both."
    calls: dict[int, dict[str, str]] = {}
    for d in deltas:
        for call in d.get("tool_calls") or []:
            entry = calls.setdefault(call["index"], {"name": "", "arguments": ""})
            entry["name"] += call.get("function", {}).get("name") or ""
            entry["arguments"] += call["function"]["arguments"]
    assert sorted(calls) == [0, 1]  # tool indexes count tool blocks only, though the text block came first
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert all(json.loads(calls[i]["arguments"]) == TOOL_ARGUMENTS for i in (0, 1))
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_result_follow_up(oai: openai.OpenAI, fake: FakeAnthropic) -> None:
    first = oai.chat.completions.create(model="claude", messages=HELLO, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    follow = oai.chat.completions.create(model="claude", tools=[WEATHER_TOOL], messages=[  # type: ignore[list-item]
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]},  # type: ignore[union-attr]
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ])
    assert follow.choices[0].message.content == "tool said: sunny"
    assert follow.choices[0].finish_reason == "stop"
    messages = sent(fake)["messages"]
    assert messages[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": call.id, "name": "get_weather", "input": TOOL_ARGUMENTS}]}
    assert messages[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}


def test_stop_reasons_reach_the_client(oai: openai.OpenAI, fake: FakeAnthropic) -> None:
    stopped = oai.chat.completions.create(model="claude", messages=HELLO, stop="there")
    assert stopped.choices[0].message.content == "echo: hello " and stopped.choices[0].finish_reason == "stop"
    assert sent(fake)["stop_sequences"] == ["there"]
    cut = oai.chat.completions.create(model="claude-max-tokens", messages=[{"role": "user", "content": "a b c d e"}])
    assert cut.choices[0].message.content == "echo: a b" and cut.choices[0].finish_reason == "length"
    refused = oai.chat.completions.create(model="claude-refusal", messages=HELLO)
    assert refused.choices[0].finish_reason == "content_filter"
    assert refused.choices[0].message.content == REFUSAL_TEXT


def test_cache_tokens_count_as_prompt_tokens(oai: openai.OpenAI, server: RunningServer) -> None:
    reply = oai.chat.completions.create(model="claude-cached", messages=HELLO,
                                        extra_headers={"x-request-id": "anthropic-cached-1"})
    assert reply.usage is not None and reply.usage.prompt_tokens == 2 + 20 + 100
    assert reply.usage.prompt_tokens_details is not None and reply.usage.prompt_tokens_details.cached_tokens == 100
    row = server.usage_row("anthropic-cached-1")
    assert (row["prompt_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (122, 100, 20)
    assert reply.usage.prompt_tokens_details.cache_write_tokens == 20


def test_cache_control_in_chat_requests_reaches_the_upstream(oai: openai.OpenAI, fake: FakeAnthropic) -> None:
    """LiteLLM's and OpenRouter's spelling: cache_control on parts, tools and messages."""
    eph = {"type": "ephemeral"}
    tool = {**TIME_TOOL, "cache_control": eph}
    oai.chat.completions.create(model="claude", tools=[tool], tool_choice="none", messages=[  # type: ignore[list-item]
        {"role": "system", "content": "be brief", "cache_control": eph},  # type: ignore[misc]
        {"role": "user", "content": [{"type": "text", "text": "a"},
                                     {"type": "text", "text": "b", "cache_control": eph}]},
    ])
    body = sent(fake)
    assert body["system"] == [{"type": "text", "text": "be brief", "cache_control": eph}]
    assert body["tools"][0]["cache_control"] == eph
    assert body["messages"][0]["content"] == [{"type": "text", "text": "a"},
                                              {"type": "text", "text": "b", "cache_control": eph}]
    # what Anthropic refuses comes back as its 400 (a bad breakpoint, more than four of them)
    for content, wording in (([{"type": "text", "text": "x", "cache_control": {"type": "forever"}}], "cache_control"),
                             ([{"type": "text", "text": str(i), "cache_control": eph} for i in range(5)],
                              "maximum of 4 blocks")):
        with pytest.raises(openai.BadRequestError) as refused:
            oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": content}])  # type: ignore[misc]
        assert wording in str(refused.value), refused.value


def test_images_and_structured_output(oai: openai.OpenAI, fake: FakeAnthropic) -> None:
    oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]}])
    assert sent(fake)["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]

    class City(BaseModel):
        city: str
        population: int

    parsed = oai.chat.completions.parse(model="claude-structured", messages=HELLO, response_format=City)
    assert parsed.choices[0].message.parsed == City(city="text", population=1)
    schema = sent(fake)["output_config"]["format"]["schema"]
    assert schema["properties"].keys() == {"city", "population"} and schema["additionalProperties"] is False
    with pytest.raises(openai.BadRequestError) as info:  # not opted in: the capability contract refuses it
        oai.chat.completions.parse(model="claude", messages=HELLO, response_format=City)
    assert info.value.body["param"] == "response_format"  # type: ignore[index]


def test_legacy_completions(oai: openai.OpenAI, fake: FakeAnthropic) -> None:
    raw = oai.completions.with_raw_response.create(model="claude", prompt="once upon a time", max_tokens=30)
    validate(raw.http_response.json(), "CreateCompletionResponse")
    assert raw.parse().choices[0].text == "echo: once upon a time"
    assert sent(fake)["messages"] == [{"role": "user", "content": [{"type": "text", "text": "once upon a time"}]}]
    chunks = list(oai.completions.create(model="claude", prompt="once upon a time", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: once upon a time"
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(("model", "status", "exc", "retry_after"), [
    ("claude-overloaded", 503, openai.InternalServerError, None),
    ("claude-rate-limited", 429, openai.RateLimitError, "7"),
    ("claude-server-error", 502, openai.APIStatusError, None),
    ("claude-too-large", 413, openai.APIStatusError, None),
    ("claude-badkey", 502, openai.APIStatusError, None),
])
def test_upstream_errors_are_mapped(oai: openai.OpenAI, model: str, status: int, exc: type[Exception],
                                    retry_after: str | None) -> None:
    for stream in (False, True):
        with pytest.raises(exc) as info:
            oai.chat.completions.create(model=model, messages=HELLO, stream=stream)
        err = info.value
        assert isinstance(err, openai.APIStatusError) and err.status_code == status
        assert err.response.headers.get("retry-after") == retry_after
        validate(err.response.json(), "ErrorResponse")
        assert UPSTREAM_KEY not in err.response.text and WRONG_KEY not in err.response.text
    if model == "claude-badkey":
        assert err.body["code"] == "upstream_auth_error"  # type: ignore[index]


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"),
    ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
    ({"presence_penalty": 0.4}, "presence_penalty"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [*HELLO, {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{oops"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "x"}]}, "messages[1].tool_calls"),
])
def test_what_anthropic_cannot_honour_is_a_400(server: RunningServer, fake: FakeAnthropic,
                                                extra: dict[str, Any], param: str) -> None:
    before = len(fake.messages_requests())
    with server.http(server.admin_key) as http:
        resp = http.post("/v1/chat/completions", json={"model": "claude", "messages": HELLO, **extra})
    assert resp.status_code == 400
    validate(resp.json(), "ErrorResponse")
    assert resp.json()["error"]["param"] == param and resp.json()["error"]["type"] == "invalid_request_error"
    assert len(fake.messages_requests()) == before  # refused before anything went upstream


def test_embeddings_are_refused(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model="claude", input="hello")
    assert info.value.body["param"] == "model" and "embeddings" in info.value.message  # type: ignore[index]


def test_error_mid_stream_ends_with_an_error_event(oai: openai.OpenAI, server: RunningServer) -> None:
    events = sse_events(server, {"model": "claude-error-mid-stream", "messages": HELLO, "stream": True},
                        request_id="anthropic-mid-1")
    assert "[DONE]" not in events
    for chunk in events[:-1]:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1]) == "echo: hello"
    validate(events[-1], "ErrorResponse")
    assert events[-1]["error"]["code"] == "service_unavailable" and "overloaded" in events[-1]["error"]["message"]
    row = server.usage_row("anthropic-mid-1")
    assert row["status"] == 503 and row["streamed"] and row["estimated"]
    with pytest.raises(openai.APIError):  # the SDK turns the error event into an exception
        for _ in oai.chat.completions.create(model="claude-error-mid-stream", messages=HELLO, stream=True):
            pass


def test_cut_stream_ends_with_an_upstream_error(server: RunningServer) -> None:
    events = sse_events(server, {"model": "claude-cut-mid-stream", "messages": HELLO, "stream": True},
                        request_id="anthropic-cut-1")
    assert "[DONE]" not in events and len(events) >= 2
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    validate(events[-1], "ErrorResponse")
    assert events[-1]["error"]["type"] == "upstream_error"
    assert server.usage_row("anthropic-cut-1")["status"] == 502


def test_client_disconnect_closes_the_upstream_stream(server: RunningServer, fake: FakeAnthropic) -> None:
    before = fake.disconnects
    with server.http(server.admin_key) as http, http.stream(
        "POST", "/v1/chat/completions", json={"model": "claude-slow-stream", "messages": HELLO, "stream": True}
    ) as resp:
        next(resp.iter_lines())
    assert fake.wait_for_disconnects(before + 1, timeout=3.0)


def test_upstream_models_are_listed_across_pages(server: RunningServer, fake: FakeAnthropic) -> None:
    with server.http(server.admin_key) as http:
        data = {u["name"]: u for u in http.get("/admin/upstreams").json()["data"]}
    assert data["claude"]["reachable"] is True and data["claude"]["type"] == "anthropic"
    assert data["claude"]["models"] == DEFAULT_MODELS
    pages = [r for r in fake.requests if r.path == "/v1/models" and r.headers.get("x-api-key") == UPSTREAM_KEY]
    assert [r.query.get("after_id") for r in pages[-2:]] == [None, DEFAULT_MODELS[1]]
    assert data["badkey"]["reachable"] is False and WRONG_KEY not in json.dumps(data["badkey"])
