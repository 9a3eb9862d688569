"""The gemini provider end to end: the openai SDK -> Switchyard -> a fake Gemini API, and back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.contract.openapi import validate
from tests.contract.test_chat import HELLO, WEATHER_TOOL, sse_events
from tests.fakes.gemini_upstream import FakeGemini
from tests.harness import RunningServer, run_server

KEY = "AIzaSyFAKE-gemini-upstream-key-0123456789"
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "Local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as gemini:
        yield gemini


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeGemini) -> Iterator[RunningServer]:
    provider = {"type": "gemini", "base_url": fake.base_url, "api_key": KEY, "cooldown_failures": 0}
    with run_server(
        tmp_path_factory.mktemp("gemini"),
        providers={"gem": {**provider, "prefix_routing": True}},
        models=[
            {"alias": "gemini", "provider": "gem", "model": "gemini-2.0-flash"},
            {"alias": "gemini-embed", "provider": "gem", "model": "text-embedding-004"},
            {"alias": "gemini-bad-key", "provider": "gem", "model": "gemini-2.0-flash", "api_key": "AIzaSy-wrong-key"},
        ],
    ) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=30) as sdk:
        yield sdk


def sent(fake: FakeGemini, method: str) -> Any:
    return [r for r in fake.requests if r.path.endswith(f":{method}")][-1]


def post(server: RunningServer, body: dict[str, Any], path: str = "/v1/chat/completions") -> Any:
    with server.http(server.admin_key) as http:
        return http.post(path, json=body)


def test_chat_translates_both_ways(client: openai.OpenAI, fake: FakeGemini) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gemini", messages=[{"role": "system", "content": "be brief"}, *HELLO],
        temperature=0.3, max_tokens=50, stop=["END"], seed=11,
    )
    payload = raw.http_response.json()
    validate(payload, "CreateChatCompletionResponse")
    assert payload["model"] == "gemini" and payload["object"] == "chat.completion"
    assert payload["choices"][0]["message"]["content"] == "echo: hello there"
    assert payload["choices"][0]["finish_reason"] == "stop"
    assert payload["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    request = sent(fake, "generateContent")
    assert request.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert request.headers["x-goog-api-key"] == KEY and "key" not in request.query
    assert "authorization" not in request.headers
    assert request.body == {
        "contents": [{"role": "user", "parts": [{"text": "hello there"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"temperature": 0.3, "maxOutputTokens": 50, "stopSequences": ["END"], "seed": 11},
    }


def test_stream_with_usage_becomes_openai_chunks(server: RunningServer, fake: FakeGemini) -> None:
    events = sse_events(server, {"model": "gemini", "messages": HELLO, "stream": True,
                                 "stream_options": {"include_usage": True}}, request_id="gemini-stream-1")
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert chunk["model"] == "gemini"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "echo: hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    request = sent(fake, "streamGenerateContent")
    assert request.query == {"alt": "sse"} and request.headers["x-goog-api-key"] == KEY
    row = server.usage_row("gemini-stream-1")
    assert row["provider"] == "gem" and row["model"] == "gemini" and row["streamed"]
    assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"], row["status"]) == (2, 3, False, 200)


def test_stream_without_include_usage_still_records_usage(server: RunningServer) -> None:
    events = sse_events(server, {"model": "gemini", "messages": HELLO, "stream": True}, request_id="gemini-stream-2")
    assert events[-1] == "[DONE]" and all(c["choices"] and "usage" not in c for c in events[:-1])
    row = server.usage_row("gemini-stream-2")
    assert (row["completion_tokens"], row["estimated"]) == (3, False)


def test_sdk_stream_helper_assembles_the_message(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="gemini", messages=HELLO) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "echo: hello there" and final.model == "gemini"


def test_tool_calls_round_trip(client: openai.OpenAI, fake: FakeGemini) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gemini", messages=HELLO, tools=[WEATHER_TOOL],
                                                           tool_choice={"type": "function",
                                                                        "function": {"name": "get_weather"}})
    validate(raw.http_response.json(), "CreateChatCompletionResponse")
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    first = sent(fake, "generateContent").body
    assert first["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Weather for a city",
        "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"]}]}]
    assert first["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    follow = client.chat.completions.create(model="gemini", tools=[WEATHER_TOOL], messages=[
        *HELLO,
        {"role": "assistant", "tool_calls": [{"id": call.id, "type": "function", "function": {
            "name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ])
    assert follow.choices[0].message.content == "tool said: sunny"
    assert sent(fake, "generateContent").body["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}]},
    ]


def test_parallel_streamed_tool_calls_and_merged_answers(server: RunningServer, client: openai.OpenAI) -> None:
    events = sse_events(server, {"model": "gem/gemini-parallel", "messages": HELLO, "stream": True,
                                 "tools": [WEATHER_TOOL, TIME_TOOL]})
    assert events[-1] == "[DONE]"
    for chunk in events[:-1]:
        validate(chunk, "CreateChatCompletionStreamResponse")
    calls: dict[int, dict[str, str]] = {}
    for event in events[:-1]:
        for delta in event["choices"][0]["delta"].get("tool_calls") or []:
            call = calls.setdefault(delta["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.get("id") or ""
            call["name"] += delta["function"].get("name") or ""
            call["arguments"] += delta["function"].get("arguments") or ""
    assert [(i, c["name"], json.loads(c["arguments"])) for i, c in sorted(calls.items())] == [
        (0, "get_weather", {"city": "Paris"}), (1, "get_time", {"city": "Paris"})]
    assert calls[0]["id"] != calls[1]["id"] and events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    follow = client.chat.completions.create(model="gem/gemini-parallel", tools=[WEATHER_TOOL, TIME_TOOL], messages=[
        *HELLO,
        {"role": "assistant", "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls.values()]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "noon"},
    ])
    assert follow.choices[0].message.content == "tool said: sunny; noon"  # one turn with both answers


def test_thought_signatures_survive_the_round_trip(client: openai.OpenAI, fake: FakeGemini) -> None:
    first = client.chat.completions.create(model="gem/gemini-thinking", messages=HELLO, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    signature = call.id.split("__thought__")[1]
    assert signature in fake.signatures
    assert first.usage is not None and first.usage.completion_tokens == 3 + 12  # thoughts count as output
    history: list[Any] = [*HELLO, {"role": "assistant", "tool_calls": [call.model_dump()]},
                          {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'}]
    follow = client.chat.completions.create(model="gem/gemini-thinking", messages=history, tools=[WEATHER_TOOL])
    assert follow.choices[0].message.content == 'tool said: {"sky": "clear"}'  # no thought summary in the answer
    replayed = sent(fake, "generateContent").body["contents"][1]["parts"][0]
    assert replayed["thoughtSignature"] == signature
    # the fake, like Gemini, refuses a replayed call whose signature was lost
    history[1]["tool_calls"][0]["id"] = "call_plain"
    history[2]["tool_call_id"] = "call_plain"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gem/gemini-thinking", messages=history, tools=[WEATHER_TOOL])
    assert "thought_signature" in info.value.message


def test_candidates_json_schema_and_finish_reasons(client: openai.OpenAI, fake: FakeGemini) -> None:
    two = client.chat.completions.create(model="gemini", messages=HELLO, n=2)
    assert [c.index for c in two.choices] == [0, 1] and two.choices[1].message.content == "echo: hello there"
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    structured = client.chat.completions.create(model="gemini", messages=HELLO, response_format={
        "type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    assert json.loads(structured.choices[0].message.content or "") == {"city": "text"}
    assert sent(fake, "generateContent").body["generationConfig"] == {
        "responseMimeType": "application/json", "responseJsonSchema": schema}
    for model, finish, content in [("gem/max-tokens", "length", "echo: hello"),
                                   ("gem/safety", "content_filter", ""),
                                   ("gem/recitation", "content_filter", "echo: hello"),
                                   ("gem/blocked-prompt", "content_filter", "")]:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
        validate(raw.http_response.json(), "CreateChatCompletionResponse")
        choice = raw.parse().choices[0]
        assert (choice.finish_reason, choice.message.content) == (finish, content), model


def test_blocked_prompt_streams_a_filtered_finish(server: RunningServer) -> None:
    events = sse_events(server, {"model": "gem/blocked-prompt", "messages": HELLO, "stream": True})
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["finish_reason"] for e in events[:-1]] == [None, "content_filter"]


def test_malformed_function_call_is_a_clear_502(server: RunningServer, client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gem/malformed-call", messages=HELLO, tools=[WEATHER_TOOL])
    assert info.value.status_code == 502
    assert info.value.body["code"] == "malformed_function_call"  # type: ignore[index]
    assert "malformed function call" in info.value.message
    events = sse_events(server, {"model": "gem/malformed-call", "messages": HELLO, "stream": True,
                                 "tools": [WEATHER_TOOL]})
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "malformed_function_call"
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])  # never a "stop"


def test_malformed_calls_do_not_cool_gemini_down(tmp_path: Path, fake: FakeGemini) -> None:
    """A malformed tool call is the model's doing: the upstream stays in rotation."""
    provider = {"type": "gemini", "base_url": fake.base_url, "api_key": KEY, "cooldown_failures": 1}
    with run_server(tmp_path, providers={"gem": provider},
                    models=[{"alias": "m", "provider": "gem", "model": "malformed-call"},
                            {"alias": "ok", "provider": "gem", "model": "gemini-2.0-flash"}]) as srv, \
            srv.http(srv.admin_key) as http:
        for _ in range(3):
            resp = http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "tools": [WEATHER_TOOL]})
            assert resp.status_code == 502 and resp.json()["error"]["code"] == "malformed_function_call"
        assert http.post("/v1/chat/completions", json={"model": "ok", "messages": HELLO}).status_code == 200


def test_upstream_errors(server: RunningServer) -> None:
    limited = post(server, {"model": "gem/rate-limited", "messages": HELLO})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"  # from Google's RetryInfo
    assert post(server, {"model": "gem/server-error", "messages": HELLO}).status_code == 502
    assert post(server, {"model": "gem/overloaded", "messages": HELLO}).status_code == 503
    bad_key = post(server, {"model": "gemini-bad-key", "messages": HELLO})
    assert bad_key.status_code == 502 and bad_key.json()["error"]["code"] == "upstream_auth_error"
    assert "wrong-key" not in bad_key.text and KEY not in bad_key.text
    events = sse_events(server, {"model": "gem/cut-mid-stream", "messages": HELLO, "stream": True})
    assert "[DONE]" not in events and "error" in events[-1]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == "this stream will"


@pytest.mark.parametrize(("extra", "param"), [
    ({"logprobs": True}, "logprobs"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                 "image_url": {"url": "http://127.0.0.1/cat.png"}}]}]},
     "messages[0].content"),
])
def test_unsupported_requests_are_clear_400s(server: RunningServer, extra: dict[str, Any], param: str) -> None:
    resp = post(server, {"model": "gemini", "messages": HELLO, **extra})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param


def test_images_go_inline(client: openai.OpenAI, fake: FakeGemini) -> None:
    client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert sent(fake, "generateContent").body["contents"][0]["parts"] == [
        {"text": "what is this"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]


def test_legacy_completion(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model="gemini", prompt="once upon a time")
    validate(raw.http_response.json(), "CreateCompletionResponse")
    assert raw.parse().choices[0].text == "echo: once upon a time"


def test_embeddings(server: RunningServer, client: openai.OpenAI, fake: FakeGemini) -> None:
    raw = client.embeddings.with_raw_response.create(model="gemini-embed", input=["a", "b c"], dimensions=4,
                                                     encoding_format="float", extra_headers={"x-request-id": "gem-emb"})
    validate(raw.http_response.json(), "CreateEmbeddingResponse")
    result = raw.parse()
    assert [len(d.embedding) for d in result.data] == [4, 4] and result.model == "gemini-embed"
    assert sent(fake, "batchEmbedContents").body == {"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 4},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b c"}]}, "outputDimensionality": 4}]}
    assert server.usage_row("gem-emb")["estimated"]  # Gemini reports no embedding token counts
    tokens = post(server, {"model": "gemini-embed", "input": [[1, 2, 3]]}, "/v1/embeddings")
    assert tokens.status_code == 400 and tokens.json()["error"]["param"] == "input"


def test_models_are_listed_without_the_models_prefix(client: openai.OpenAI, server: RunningServer) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"gem/gemini-2.0-flash", "gem/gemini-2.5-flash", "gem/text-embedding-004"} <= set(ids)
    with server.http(server.admin_key) as http:
        upstream = {u["name"]: u for u in http.get("/admin/upstreams").json()["data"]}["gem"]
    assert upstream["reachable"] is True and upstream["type"] == "gemini"


def test_the_fake_rejects_requests_google_would(fake: FakeGemini) -> None:
    url = f"{fake.base_url}/models/gemini-2.0-flash:generateContent"
    good = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    answer = {"functionResponse": {"name": "f", "response": {"output": "x"}}}
    with httpx.Client(timeout=5) as http:
        anonymous = http.post(url, json=good)
        wrong = http.post(url, json=good, headers={"x-goog-api-key": "AIza-wrong"})
        keyed = {"x-goog-api-key": KEY}
        snake = http.post(url, json={**good, "generationConfig": {"max_tokens": 5}}, headers=keyed)
        orphan = http.post(url, json={"contents": [{"role": "user", "parts": [answer]}]}, headers=keyed)
        ok = http.post(url, params={"key": KEY}, json=good)
    assert anonymous.status_code == 403 and anonymous.json()["error"]["status"] == "PERMISSION_DENIED"
    assert wrong.status_code == 400 and wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert snake.status_code == 400 and 'Unknown name "max_tokens"' in snake.json()["error"]["message"]
    assert orphan.status_code == 400 and "function response turn" in orphan.json()["error"]["message"]
    assert ok.status_code == 200 and ok.json()["candidates"][0]["finishReason"] == "STOP"
