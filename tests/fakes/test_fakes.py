"""FakeOpenAI speaks OpenAI's real wire format: driven with the official SDK and raw HTTP,
every response and stream chunk is validated against OpenAI's OpenAPI spec."""

from __future__ import annotations

import base64
import enum
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.contract.openapi import validate
from tests.fakes import FakeOpenAI

KEY = "sk-fake-test-key-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def up() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def client(up: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=up.base_url, api_key=KEY, max_retries=0, timeout=10) as sdk:
        yield sdk


def post(up: FakeOpenAI, path: str, body: dict[str, Any], key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{up.url}{path}", json=body, headers=headers, timeout=10)


def sse(up: FakeOpenAI, path: str, body: dict[str, Any]) -> list[Any]:
    """Raw SSE events of a streamed request ('[DONE]' kept as a string)."""
    events: list[Any] = []
    with httpx.stream("POST", f"{up.url}{path}", json={**body, "stream": True},
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line:
                assert line.startswith("data: ")
                events.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
    return events


def test_chat_non_stream(up: FakeOpenAI, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO, seed=3)
    validate(raw.http_response.json(), "CreateChatCompletionResponse")
    assert raw.headers["x-request-id"].startswith("req_")
    done = raw.parse()
    assert done.model == "gpt-4o-mini" and done.object == "chat.completion"
    assert done.choices[0].message.content == "echo: hello there"
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (2, 3, 5)
    rec = up.last_request
    assert (rec.method, rec.path, rec.body["seed"]) == ("POST", "/v1/chat/completions", 3)
    assert rec.headers["Authorization"] == rec.headers["authorization"] == f"Bearer {KEY}"


def test_chat_stream_chunks_match_spec(up: FakeOpenAI) -> None:
    events = sse(up, "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO,
                                              "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert "usage" in chunk
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:4]] == ["echo:", " hello", " there"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["usage"] is None
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert len({c["id"] for c in chunks}) == 1


def test_chat_stream_without_include_usage_has_no_usage(up: FakeOpenAI) -> None:
    chunks = sse(up, "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO})[:-1]
    assert all("usage" not in c and c["choices"] for c in chunks)


def test_sdk_stream_helper(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="gpt-4o-mini", messages=HELLO,
                                        stream_options={"include_usage": True}) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert deltas == ["", "echo:", " hello", " there"]  # OpenAI's first chunk carries content ""
    assert final.choices[0].message.content == "echo: hello there"
    assert final.usage is not None and final.usage.completion_tokens == 3


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Stop(BaseModel):
    name: str
    nights: int
    rating: float


class Trip(BaseModel):
    city: str
    color: Color
    stops: list[Stop]
    note: str | None
    booked: bool


def test_sdk_parse_with_pydantic_model(up: FakeOpenAI, client: openai.OpenAI) -> None:
    done = client.chat.completions.parse(model="gpt-4o-mini", messages=HELLO, response_format=Trip)
    trip = done.choices[0].message.parsed
    assert isinstance(trip, Trip) and trip.stops and isinstance(trip.stops[0], Stop)
    assert up.last_request.body["response_format"]["type"] == "json_schema"


def test_json_object_logprobs_n_stop_and_length(up: FakeOpenAI) -> None:
    resp = post(up, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, "n": 2, "logprobs": True,
                                             "top_logprobs": 2, "response_format": {"type": "json_object"}})
    body = resp.json()
    validate(body, "CreateChatCompletionResponse")
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert json.loads(body["choices"][1]["message"]["content"])["ok"] is True
    lp = body["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in lp) == body["choices"][0]["message"]["content"]
    assert all(len(t["top_logprobs"]) == 2 for t in lp)
    stopped = post(up, "/v1/chat/completions", {"model": "m", "messages": HELLO, "stop": [" there"]}).json()
    assert stopped["choices"][0]["message"]["content"] == "echo: hello"
    capped = post(up, "/v1/chat/completions", {"model": "m", "messages": HELLO, "max_tokens": 1}).json()
    assert capped["choices"][0]["finish_reason"] == "length" and capped["usage"]["completion_tokens"] == 1
    chunks = sse(up, "/v1/chat/completions", {"model": "m", "messages": HELLO, "n": 2, "logprobs": True})[:-1]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert {c["choices"][0]["index"] for c in chunks} == {0, 1}


def test_tool_call_and_tool_result(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO, tools=[TOOL])
    validate(raw.http_response.json(), "CreateChatCompletionResponse")
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    follow = [*HELLO, {"role": "assistant", "tool_calls": [call.model_dump()]},
              {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    again = client.chat.completions.create(model="gpt-4o-mini", messages=follow, tools=[TOOL])
    assert again.choices[0].message.content == "tool said: sunny"
    none = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, tools=[TOOL], tool_choice="none")
    assert none.choices[0].message.content == "echo: hello there"


def test_tool_call_stream_reassembles(up: FakeOpenAI, client: openai.OpenAI) -> None:
    chunks = sse(up, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, "tools": [TOOL]})[:-1]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    first = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["id"].startswith("call_") and first["function"]["name"] == "get_weather"
    fragments = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1]]
    assert len(fragments) >= 3 and json.loads("".join(fragments)) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    with client.chat.completions.stream(model="gpt-4o-mini", messages=HELLO, tools=[TOOL]) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert done[0].name == "get_weather" and json.loads(done[0].arguments) == {"city": "Paris"}
    assert final.choices[0].message.tool_calls[0].function.arguments == json.dumps({"city": "Paris"})


def test_legacy_completions(up: FakeOpenAI, client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="say hi", logprobs=2)
    validate(raw.http_response.json(), "CreateCompletionResponse")
    done = raw.parse()
    assert done.choices[0].text == "echo: say hi" and done.choices[0].logprobs.tokens == ["echo:", " say", " hi"]
    events = sse(up, "/v1/completions", {"model": "m", "prompt": ["a", "b"], "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    assert all(c["object"] == "text_completion" for c in events[:-1])
    validate(events[-1 - 1], "CreateCompletionResponse")  # spec forbids null finish_reason: check the last
    assert {c["choices"][0]["index"] for c in events[:-2]} == {0, 1}


def test_embeddings_base64_default_and_float(up: FakeOpenAI, client: openai.OpenAI) -> None:
    sdk = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])
    assert up.last_request.body["encoding_format"] == "base64"  # what the SDK asks for by default
    floats = post(up, "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["alpha", "beta gamma"]}).json()
    validate(floats, "CreateEmbeddingResponse")
    assert [d.embedding for d in sdk.data] == [d["embedding"] for d in floats["data"]]
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    vec = floats["data"][0]["embedding"]
    assert len(vec) == 8 and abs(sum(v * v for v in vec) - 1) < 1e-5
    raw = post(up, "/v1/embeddings", {"model": "e", "input": "alpha", "encoding_format": "base64"}).json()
    assert list(struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))) == vec
    tokens = client.embeddings.create(model="e", input=[[1, 2, 3], [4]], dimensions=4, encoding_format="float")
    assert [len(d.embedding) for d in tokens.data] == [4, 4] and tokens.usage.prompt_tokens == 4
    one = client.embeddings.create(model="e", input=[5, 6], encoding_format="float")
    assert len(one.data) == 1
    bad = post(up, "/v1/embeddings", {"model": "e", "input": ""})
    assert bad.status_code == 400
    validate(bad.json(), "ErrorResponse")


def test_models(up: FakeOpenAI, client: openai.OpenAI) -> None:
    listed = httpx.get(f"{up.base_url}/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    validate(listed, "ListModelsResponse")
    assert [m.id for m in client.models.list()] == up.models
    got = httpx.get(f"{up.base_url}/models/gpt-4o", headers={"Authorization": f"Bearer {KEY}"}).json()
    validate(got, "Model")
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nope")
    validate(info.value.response.json(), "ErrorResponse")


@pytest.mark.parametrize(
    ("model", "status", "exc", "retry_after"),
    [
        ("error-400", 400, openai.BadRequestError, None),
        ("error-401", 401, openai.AuthenticationError, None),
        ("error-429", 429, openai.RateLimitError, "7"),
        ("error-500", 500, openai.InternalServerError, None),
        ("error-503", 503, openai.InternalServerError, "3"),
    ],
)
def test_error_models(client: openai.OpenAI, model: str, status: int, exc: type[Exception],
                      retry_after: str | None) -> None:
    with pytest.raises(exc) as info:
        client.chat.completions.create(model=model, messages=HELLO, stream=True)
    resp = info.value.response  # type: ignore[attr-defined]
    assert resp.status_code == status and resp.headers.get("retry-after") == retry_after
    validate(resp.json(), "ErrorResponse")
    if model == "error-429":
        assert resp.json()["error"]["type"] == "rate_limit_error"
    if model == "error-400":
        assert resp.json()["error"]["param"]
    if model == "error-401":
        assert resp.json()["error"]["message"].startswith("Incorrect API key provided: sk-abc...xyz")


def test_auth_and_bad_requests(up: FakeOpenAI) -> None:
    missing = post(up, "/v1/chat/completions", {"model": "m", "messages": HELLO}, key=None)
    wrong = post(up, "/v1/chat/completions", {"model": "m", "messages": HELLO}, key="sk-wrong-key-abcd")
    for resp in (missing, wrong):
        assert resp.status_code == 401
        validate(resp.json(), "ErrorResponse")
    assert "abcd" in wrong.json()["error"]["message"] and "wrong-key" not in wrong.json()["error"]["message"]
    no_messages = post(up, "/v1/chat/completions", {"model": "m"})
    assert no_messages.status_code == 400 and no_messages.json()["error"]["param"] == "messages"
    opts = post(up, "/v1/chat/completions", {"model": "m", "messages": HELLO, "stream_options": {}})
    assert opts.status_code == 400 and opts.json()["error"]["param"] == "stream_options"
    unknown = post(up, "/v1/nothing-here", {})
    assert unknown.status_code == 404
    validate(unknown.json(), "ErrorResponse")


def test_no_usage_model(up: FakeOpenAI) -> None:
    body = post(up, "/v1/chat/completions", {"model": "no-usage", "messages": HELLO}).json()
    validate(body, "CreateChatCompletionResponse")
    assert "usage" not in body
    chunks = sse(up, "/v1/chat/completions", {"model": "no-usage", "messages": HELLO,
                                              "stream_options": {"include_usage": True}})[:-1]
    assert all("usage" not in c and c["choices"] for c in chunks)


def test_cached_model_reports_a_prompt_cache_hit_as_openai_does(up: FakeOpenAI) -> None:
    short = post(up, "/v1/chat/completions", {"model": "cached", "messages": HELLO}).json()
    assert short["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # under 1024 tokens: nothing cached
    long_messages = [{"role": "system", "content": "w " * 1300}, {"role": "user", "content": "hi"}]
    body = post(up, "/v1/chat/completions", {"model": "cached", "messages": long_messages}).json()
    validate(body, "CreateChatCompletionResponse")
    assert (body["usage"]["prompt_tokens"], body["usage"]["prompt_tokens_details"]["cached_tokens"]) == (1301, 1280)
    chunks = sse(up, "/v1/chat/completions", {"model": "cached", "messages": long_messages,
                                              "stream_options": {"include_usage": True}})
    assert chunks[-2]["usage"]["prompt_tokens_details"]["cached_tokens"] == 1280


def test_custom_responder_and_tool_arguments() -> None:
    with (
        FakeOpenAI(responder=lambda body: f"{len(body['messages'])} messages", tool_arguments={"x": 1}) as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="anything", max_retries=0) as client,
    ):
        assert client.chat.completions.create(model="m", messages=HELLO).choices[0].message.content == "1 messages"
        call = client.chat.completions.create(model="m", messages=HELLO, tools=[TOOL]).choices[0].message.tool_calls
        assert json.loads(call[0].function.arguments) == {"x": 1}


def test_client_dropping_a_slow_stream_is_seen(up: FakeOpenAI, client: openai.OpenAI) -> None:
    up.reset()
    started = time.monotonic()
    with client.chat.completions.create(model="slow-stream", messages=HELLO, stream=True) as stream:
        for i, _chunk in enumerate(stream):
            if i == 2:
                break
    assert up.wait_for_disconnects(1, timeout=2.0), "the fake did not notice the client going away"
    assert up.disconnects == 1 and time.monotonic() - started < 3


def test_fail_mid_stream_cuts_the_connection(up: FakeOpenAI, client: openai.OpenAI) -> None:
    up.reset()
    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model="fail-mid-stream", messages=HELLO, stream=True):
            seen.append(chunk.choices[0].delta.content or "")
    assert seen == ["", "this", " stream", " will"]
    assert up.disconnects == 0  # the server hung up, not the client


def test_slow_model_and_client_timeout(up: FakeOpenAI) -> None:
    up.reset()
    with (
        openai.OpenAI(base_url=up.base_url, api_key=KEY, max_retries=0, timeout=0.5) as quick,
        pytest.raises(openai.APITimeoutError),
    ):
        quick.chat.completions.create(model="slow", messages=HELLO)
    assert up.wait_for_disconnects(1, timeout=2.0)


def test_stop_is_quick_with_a_stream_in_flight_and_restart_keeps_the_port() -> None:
    fake = FakeOpenAI().start()
    url = fake.base_url
    with httpx.stream("POST", f"{url}/chat/completions", timeout=10,
                      json={"model": "slow-stream", "messages": HELLO, "stream": True}) as resp:
        lines = resp.iter_lines()
        next(lines)
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(httpx.RemoteProtocolError):
            list(lines)
    assert fake.disconnects == 0  # our own shutdown is not a client disconnect
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models")
    with fake:
        assert fake.base_url == url
        assert httpx.get(f"{url}/models").status_code == 200


def test_responses_api_whole_stream_and_chain(up: FakeOpenAI, client: openai.OpenAI) -> None:
    """The fake's /v1/responses speaks OpenAI's wire shapes (checked against the published schemas)."""
    made = client.responses.with_raw_response.create(model="gpt-4o-mini", input="hello fake", max_output_tokens=2)
    body = made.http_response.json()
    validate(body, "Response")
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["content"][0]["text"] == "echo: hello"
    with httpx.stream("POST", f"{up.url}/v1/responses", headers={"Authorization": f"Bearer {KEY}"}, timeout=10,
                      json={"model": "gpt-4o-mini", "input": "more", "stream": True,
                            "previous_response_id": body["id"]}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in resp.read().decode().split("\n\n") if f]
    events = []
    for frame in frames:
        name, data = frame.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        validate(event, "ResponseStreamEvent")
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["previous_response_id"] == body["id"]
    assert final["usage"]["input_tokens"] > body["usage"]["input_tokens"]  # the chain's earlier turn counted
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-4o-mini", input="x", previous_response_id="resp_nope")
    assert err.value.code == "previous_response_not_found"
