"""The azure provider end to end (the openai SDK -> Switchyard -> a fake Azure OpenAI resource), its
stream normalizer as a table, and one request answered alike by Azure, Gemini and OpenAI upstreams."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from switchyard.core.chat import ChatRequest, GenerationKind
from switchyard.core.models import Target
from switchyard.errors import UpstreamError
from switchyard.providers.azure.translate import StreamConverter
from tests.contract.openapi import validate
from tests.contract.test_chat import HELLO, WEATHER_TOOL, sse_events
from tests.fakes import FakeOllama, FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.azure_upstream import MODELS, FakeAzure
from tests.fakes.gemini_upstream import FakeGemini
from tests.harness import RunningServer, run_server

KEY = "azure-upstream-key-0123456789abcdef"
OPENAI_KEY = "sk-openai-upstream-0123456789"
GEMINI_KEY = "AIzaSy-gemini-upstream-0123456789"
ANTHROPIC_KEY = "sk-ant-upstream-0123456789"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAzure]:
    with FakeAzure(api_key=KEY, api_version="2024-10-21",
                   deployments={"chat": "gpt-4o-2024-08-06", "embed": "text-embedding-3-small"}) as azure:
        yield azure


@pytest.fixture(scope="module")
def old_fake() -> Iterator[FakeAzure]:
    with FakeAzure(api_key=KEY, api_version="2024-06-01") as azure:
        yield azure


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeAzure, old_fake: FakeAzure) -> Iterator[RunningServer]:
    with FakeOpenAI(api_key=OPENAI_KEY) as openai_fake, FakeGemini(api_key=GEMINI_KEY) as gemini_fake, \
            FakeAnthropic(api_key=ANTHROPIC_KEY) as anthropic_fake, FakeOllama() as ollama_fake, run_server(
        tmp_path_factory.mktemp("azure"),
        providers={
            # no api_version: the default (2024-10-21), the only one this fake resource answers
            "az": {"type": "azure", "base_url": fake.base_url, "api_key": KEY, "prefix_routing": True,
                   "cooldown_failures": 0},
            "az-old": {"type": "azure", "base_url": old_fake.base_url + "/openai/", "api_key": KEY,
                       "api_version": "2024-06-01", "cooldown_failures": 0},
            "oa": {"type": "openai", "base_url": openai_fake.base_url, "api_key": OPENAI_KEY, "cooldown_failures": 0},
            "gem": {"type": "gemini", "base_url": gemini_fake.base_url, "api_key": GEMINI_KEY, "cooldown_failures": 0},
            "ant": {"type": "anthropic", "base_url": anthropic_fake.url + "/v1", "api_key": ANTHROPIC_KEY,
                    "cooldown_failures": 0},
            "oll": {"type": "ollama", "base_url": ollama_fake.base_url, "cooldown_failures": 0},
        },
        models=[
            {"alias": "azure-chat", "provider": "az", "model": "chat"},
            {"alias": "azure-embed", "provider": "az", "model": "embed"},
            {"alias": "azure-old", "provider": "az-old", "model": "chat"},
            {"alias": "azure-bad-key", "provider": "az", "model": "chat", "api_key": "wrong-azure-key-xyz"},
            {"alias": "gpt-4o-mini", "provider": "oa"},  # the openai pass-through relays the upstream's model name
            {"alias": "same-azure", "provider": "az", "model": "chat"},
            {"alias": "same-gemini", "provider": "gem", "model": "gemini-2.0-flash"},
            {"alias": "same-anthropic", "provider": "ant", "model": "claude-sonnet-4-5"},
            {"alias": "same-ollama", "provider": "oll", "model": "llama3.2:1b"},
        ],
    ) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=30) as sdk:
        yield sdk


def post(server: RunningServer, body: dict[str, Any], path: str = "/v1/chat/completions") -> httpx.Response:
    with server.http(server.admin_key) as http:
        return http.post(path, json=body)


def last(fake: FakeAzure, operation: str) -> Any:
    return [r for r in fake.requests if r.path.endswith(operation)][-1]


def test_chat_reaches_the_deployment_and_answers_in_openai_shape(client: openai.OpenAI, fake: FakeAzure) -> None:
    raw = client.chat.completions.with_raw_response.create(model="azure-chat", messages=HELLO, max_tokens=20,
                                                           temperature=0.2)
    payload = raw.http_response.json()
    validate(payload, "CreateChatCompletionResponse")
    assert payload["model"] == "azure-chat"  # not Azure's "gpt-4o-2024-08-06"
    assert "prompt_filter_results" not in payload and "content_filter_results" not in payload["choices"][0]
    assert payload["choices"][0]["message"]["content"] == "echo: hello there"
    assert payload["usage"]["completion_tokens"] == 3
    request = last(fake, "/chat/completions")
    assert request.path == "/openai/deployments/chat/chat/completions"
    assert request.query == {"api-version": "2024-10-21"}
    assert request.headers["api-key"] == KEY and "authorization" not in request.headers
    assert request.body["model"] == "chat" and request.body["max_tokens"] == 20


def test_stream_drops_azure_annotations_and_keeps_usage(server: RunningServer, fake: FakeAzure) -> None:
    events = sse_events(server, {"model": "azure-chat", "messages": HELLO, "stream": True,
                                 "stream_options": {"include_usage": True}}, request_id="azure-stream-1")
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert chunk["model"] == "azure-chat" and "prompt_filter_results" not in chunk
        assert all("content_filter_results" not in c for c in chunk["choices"])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"  # Azure's prompt-filter chunk is gone
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: hello there"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert last(fake, "/chat/completions").body["stream_options"] == {"include_usage": True}
    row = server.usage_row("azure-stream-1")
    assert (row["provider"], row["model"], row["completion_tokens"], row["estimated"]) == ("az", "azure-chat", 3, False)


def test_stream_without_include_usage(server: RunningServer) -> None:
    events = sse_events(server, {"model": "azure-chat", "messages": HELLO, "stream": True},
                        request_id="azure-stream-2")
    assert events[-1] == "[DONE]" and all(c["choices"] and "usage" not in c for c in events[:-1])
    assert server.usage_row("azure-stream-2")["completion_tokens"] == 3


def test_older_api_version_streams_without_stream_options(server: RunningServer, old_fake: FakeAzure) -> None:
    events = sse_events(server, {"model": "azure-old", "messages": HELLO, "stream": True}, request_id="azure-old-1")
    assert events[-1] == "[DONE]"
    request = last(old_fake, "/chat/completions")
    assert request.query == {"api-version": "2024-06-01"} and "stream_options" not in request.body
    assert request.path == "/openai/deployments/chat/chat/completions"  # a base_url ending in /openai works too
    row = server.usage_row("azure-old-1")
    assert row["estimated"] and row["completion_tokens"] > 0


def test_tool_calls_round_trip(client: openai.OpenAI, server: RunningServer) -> None:
    first = client.chat.completions.create(model="azure-chat", messages=HELLO, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {"city": "Paris"}
    follow = client.chat.completions.create(model="azure-chat", tools=[WEATHER_TOOL], messages=[
        *HELLO, {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert follow.choices[0].message.content == "tool said: sunny"
    events = sse_events(server, {"model": "azure-chat", "messages": HELLO, "stream": True, "tools": [WEATHER_TOOL]})
    for chunk in events[:-1]:
        validate(chunk, "CreateChatCompletionStreamResponse")
    args = "".join(t["function"].get("arguments") or "" for e in events[:-1]
                   for t in e["choices"][0]["delta"].get("tool_calls") or [])
    assert json.loads(args) == {"city": "Paris"} and events[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_content_filter(client: openai.OpenAI, server: RunningServer) -> None:
    raw = client.chat.completions.with_raw_response.create(model="az/filtered", messages=HELLO)
    validate(raw.http_response.json(), "CreateChatCompletionResponse")
    assert raw.parse().choices[0].finish_reason == "content_filter"
    events = sse_events(server, {"model": "az/filtered", "messages": HELLO, "stream": True,
                                 "stream_options": {"include_usage": True}})
    for chunk in events[:-1]:  # the annotation-only choice (no delta) is not relayed
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert events[-1] == "[DONE]" and events[-3]["choices"][0]["finish_reason"] == "content_filter"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="az/filtered-prompt", messages=HELLO)
    assert info.value.status_code == 400 and info.value.code == "content_filter"
    assert "content management policy" in info.value.message


def test_upstream_errors(server: RunningServer) -> None:
    limited = post(server, {"model": "az/rate-limited", "messages": HELLO})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert post(server, {"model": "az/server-error", "messages": HELLO}).status_code == 502
    overloaded = post(server, {"model": "az/overloaded", "messages": HELLO})
    assert overloaded.status_code == 503 and overloaded.headers["retry-after"] == "3"
    bad_key = post(server, {"model": "azure-bad-key", "messages": HELLO})
    assert bad_key.status_code == 502 and bad_key.json()["error"]["code"] == "upstream_auth_error"
    assert "wrong-azure-key" not in bad_key.text and KEY not in bad_key.text
    events = sse_events(server, {"model": "az/cut-mid-stream", "messages": HELLO, "stream": True})
    assert "[DONE]" not in events and "error" in events[-1]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == "this stream"
    bad_name = post(server, {"model": "az/../../models", "messages": HELLO})
    assert bad_name.status_code == 400 and bad_name.json()["error"]["param"] == "model"


def test_legacy_completions(client: openai.OpenAI, server: RunningServer) -> None:
    raw = client.completions.with_raw_response.create(model="azure-chat", prompt="once upon a time")
    payload = raw.http_response.json()
    validate(payload, "CreateCompletionResponse")
    assert payload["model"] == "azure-chat" and payload["choices"][0]["text"] == "echo: once upon a time"
    events = sse_events(server, {"model": "azure-chat", "prompt": "once", "stream": True})
    assert events[-1] == "[DONE]" and "".join(e["choices"][0]["text"] for e in events[:-1]) == "echo: once"
    validate(events[-2], "CreateCompletionResponse")  # the spec forbids the null finish_reason of earlier chunks


def test_embeddings(client: openai.OpenAI, fake: FakeAzure) -> None:
    raw = client.embeddings.with_raw_response.create(model="azure-embed", input=["a", "b"], dimensions=4,
                                                     encoding_format="float")
    validate(raw.http_response.json(), "CreateEmbeddingResponse")
    result = raw.parse()
    assert result.model == "azure-embed" and [len(d.embedding) for d in result.data] == [4, 4]
    assert result.usage.prompt_tokens == 2
    request = last(fake, "/embeddings")
    assert request.path == "/openai/deployments/embed/embeddings" and request.query == {"api-version": "2024-10-21"}


def test_models_and_readiness(client: openai.OpenAI, server: RunningServer) -> None:
    assert {f"az/{m}" for m in MODELS} <= {m.id for m in client.models.list()}
    with server.http(server.admin_key) as http:
        upstream = {u["name"]: u for u in http.get("/admin/upstreams").json()["data"]}["az"]
    assert upstream["reachable"] is True and upstream["models"] == MODELS


def test_the_fake_rejects_requests_azure_would(fake: FakeAzure) -> None:
    url = f"{fake.base_url}/openai/deployments/chat/chat/completions"
    body = {"messages": HELLO}
    with httpx.Client(timeout=5) as http:
        missing = http.post(url, json=body, headers={"api-key": KEY})
        unknown = http.post(url, params={"api-version": "2099-01-01"}, json=body, headers={"api-key": KEY})
        bearer = http.post(url, params={"api-version": "2024-10-21"}, json=body,
                           headers={"Authorization": f"Bearer {KEY}"})
    assert missing.status_code == 404 and missing.json() == {"error": {"code": "404", "message": "Resource not found"}}
    assert unknown.status_code == 400 and unknown.json()["error"]["message"] == "API version not supported"
    assert bearer.status_code == 401 and bearer.json()["error"]["code"] == "401"


# --------------------------------------------------------------------------- normalizer table
def azure_event(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\r\n\r\n"


AZ_STREAM = (
    azure_event({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                 "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]})
    + azure_event({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "usage": None,
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None,
                                "content_filter_results": {"hate": {"filtered": False}}}]})
    + azure_event({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                   "choices": [{"index": 0, "finish_reason": None, "content_filter_offsets": {"end_offset": 2},
                                "content_filter_results": {}}]})
    + azure_event({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "usage": None,
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    + azure_event({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
    + b"data: [DONE]\r\n\r\n"
)
ALIAS = Target(alias="mine", provider="az", provider_type="azure", upstream_model="chat", timeout=5)


@pytest.mark.parametrize("wants_usage", [True, False])
@pytest.mark.parametrize("split", [1, 5, 33, len(AZ_STREAM)])
def test_normalizer_split_anywhere(split: int, wants_usage: bool) -> None:
    request = ChatRequest(kind=GenerationKind.CHAT, model="mine", body={}, stream=True, include_usage=wants_usage)
    relay = StreamConverter(request, ALIAS)
    out = b""
    events = 0
    for i in range(0, len(AZ_STREAM), split):
        piece = relay.feed(AZ_STREAM[i : i + split])
        if piece is not None:
            out += piece.data
            events += piece.events
    relay.finish()
    chunks = [json.loads(e[6:]) for e in out.split(b"\n\n") if e and e != b"data: [DONE]"]
    assert out.endswith(b"data: [DONE]\n\n") and events == 2
    assert [c["choices"][0]["finish_reason"] if c["choices"] else "usage" for c in chunks] == (
        [None, "stop", "usage"] if wants_usage else [None, "stop"])
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert chunk["model"] == "mine" and ("usage" in chunk) == wants_usage
    assert relay.usage is not None and relay.usage.prompt_tokens == 5


def test_normalizer_flags_an_unfinished_stream() -> None:
    request = ChatRequest(kind=GenerationKind.CHAT, model="mine", body={}, stream=True)
    relay = StreamConverter(request, ALIAS)
    relay.feed(AZ_STREAM[: AZ_STREAM.index(b"data: [DONE]")])
    with pytest.raises(UpstreamError):
        relay.finish()


# ------------------------------------------------------------------ one request, three providers
_PROVIDER_EXTRAS = {"system_fingerprint", "service_tier", "annotations", "prompt_tokens_details",
                    "completion_tokens_details"}


def shape(value: Any) -> Any:
    """Keys and value types, recursively (lists by their first item), less provider-specific extras."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items()) if k not in _PROVIDER_EXTRAS}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def chunk_kind(chunk: dict[str, Any]) -> str:
    if not chunk["choices"]:
        return "usage"
    choice = chunk["choices"][0]
    if choice["finish_reason"]:
        return "finish"
    delta = choice["delta"]
    return "role" if "role" in delta else "tool_calls" if delta.get("tool_calls") else "content"


def stream_structure(events: list[Any]) -> list[tuple[str, Any]]:
    assert events[-1] == "[DONE]"
    out: list[tuple[str, Any]] = []
    for chunk in events[:-1]:
        validate(chunk, "CreateChatCompletionStreamResponse")
        kind = chunk_kind(chunk)
        if out and out[-1][0] == kind:  # runs of content (or argument) chunks count as one
            continue
        out.append((kind, shape({k: v for k, v in chunk.items() if k not in ("id", "created")})))
    return out


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool-call"])
def test_same_request_same_shape_from_every_provider(server: RunningServer, tools: bool) -> None:
    """The openai SDK's view: OpenAI, Azure, Gemini, Anthropic and Ollama answer in one shape."""
    base: dict[str, Any] = {"messages": HELLO, **({"tools": [WEATHER_TOOL]} if tools else {})}
    responses = {}
    streams = {}
    aliases = ("gpt-4o-mini", "same-azure", "same-gemini", "same-anthropic", "same-ollama")
    for alias in aliases:
        resp = post(server, {"model": alias, **base})
        assert resp.status_code == 200, resp.text
        payload = resp.json()
        validate(payload, "CreateChatCompletionResponse")
        assert payload["model"] == alias
        responses[alias] = shape(payload)
        events = sse_events(server, {"model": alias, **base, "stream": True, "stream_options": {"include_usage": True}})
        streams[alias] = stream_structure(events)
        assert all(e["model"] == alias for e in events[:-1])
    for alias in aliases[1:]:
        assert responses[alias] == responses["gpt-4o-mini"], alias
        assert [k for k, _ in streams[alias]] == [k for k, _ in streams["gpt-4o-mini"]], alias
    for alias in ("same-azure", "same-gemini"):  # these two even chunk their streams exactly as OpenAI does
        assert streams[alias] == streams["gpt-4o-mini"], alias
    # what the SDK assembles from each stream has one shape too
    with openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0) as sdk:
        finals = {}
        for alias in aliases:
            with sdk.chat.completions.stream(model=alias, **base) as stream:
                final = stream.get_final_completion()
            finals[alias] = shape(final.model_dump(mode="json", exclude_none=True, exclude={"id", "created"}))
            assert final.choices[0].finish_reason == ("tool_calls" if tools else "stop"), alias
    for alias in aliases[1:]:
        assert finals[alias] == finals["gpt-4o-mini"], alias
    expected = (["role", "tool_calls", "finish", "usage"] if tools else ["role", "content", "finish", "usage"])
    assert [kind for kind, _ in streams["same-gemini"]] == expected
