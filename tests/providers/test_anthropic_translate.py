"""The Anthropic translation: pure functions, tested as tables (requests, responses, streams, errors)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from switchyard.core.chat import ChatRequest, GenerationKind, StreamPiece
from switchyard.core.models import Target
from switchyard.core.redaction import Redactor
from switchyard.errors import (
    BadRequestError,
    GatewayError,
    NotFoundError,
    RequestTooLargeError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamRateLimitError,
)
from switchyard.providers.anthropic.requests import messages_body
from switchyard.providers.anthropic.translate import (
    StreamConverter,
    chat_result,
    embeddings_refused,
    error_from_response,
    model_page,
)
from tests.contract.openapi import validate

TARGET = Target(alias="claude", provider="anth", provider_type="anthropic", upstream_model="claude-sonnet-4-5",
                timeout=5)
SECRET = "sk-ant-api03-secret-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
WEATHER_OUT = {"name": "get_weather", "description": "Weather for a city",
               "input_schema": WEATHER["function"]["parameters"]}  # type: ignore[index]
TIME = {"type": "function", "function": {"name": "get_time"}}
TIME_OUT = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


def chat(body: dict[str, Any], *, stream: bool = False, include_usage: bool = False) -> ChatRequest:
    full = {"model": "claude", **body}
    return ChatRequest(kind=GenerationKind.CHAT, model="claude", body=full, stream=stream,
                       include_usage=include_usage,
                       max_tokens=full.get("max_completion_tokens") or full.get("max_tokens"))


def legacy(body: dict[str, Any], *, stream: bool = False, include_usage: bool = False) -> ChatRequest:
    full = {"model": "claude", **body}
    return ChatRequest(kind=GenerationKind.COMPLETION, model="claude", body=full, stream=stream,
                       include_usage=include_usage, max_tokens=full.get("max_tokens"))


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


BASE = {"model": "claude-sonnet-4-5", "max_tokens": 4096}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}

# ------------------------------------------------------------------------------------------ requests
REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("minimal, max_tokens defaults to 4096", {"messages": HELLO},
     {**BASE, "messages": [user(text("hello there"))]}),
    ("one system message becomes a string",
     {"messages": [{"role": "system", "content": "be brief"}, *HELLO]},
     {**BASE, "system": "be brief", "messages": [user(text("hello there"))]}),
    ("system and developer messages, wherever they are, become text blocks in order",
     {"messages": [{"role": "system", "content": [{"type": "text", "text": "rule one"}]}, *HELLO,
                   {"role": "developer", "content": "rule two"}]},
     {**BASE, "system": [text("rule one"), text("rule two")], "messages": [user(text("hello there"))]}),
    ("consecutive same-role messages are merged, empty ones dropped",
     {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}]},
                   {"role": "assistant", "content": ""}, {"role": "user", "content": "c"},
                   {"role": "assistant", "content": "x"},
                   {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
                   {"role": "user", "content": "d"}]},
     {**BASE, "messages": [user(text("a"), text("b"), text("c")), assistant(text("x"), text("no")),
                           user(text("d"))]}),
    ("images: data URLs go as base64, http(s) URLs as url sources",
     {"messages": [{"role": "user", "content": [
         {"type": "text", "text": "compare"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
         {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]},
     {**BASE, "messages": [user(text("compare"),
                                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                             "data": "iVBORw0KGgo="}},
                                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}})]}),
    ("tools, tool_choice auto", {"messages": HELLO, "tools": [WEATHER, TIME], "tool_choice": "auto"},
     {**BASE, "messages": [user(text("hello there"))], "tools": [WEATHER_OUT, TIME_OUT],
      "tool_choice": {"type": "auto"}}),
    ("tool_choice required -> any", {"messages": HELLO, "tools": [WEATHER], "tool_choice": "required"},
     {**BASE, "messages": [user(text("hello there"))], "tools": [WEATHER_OUT], "tool_choice": {"type": "any"}}),
    ("tool_choice named function -> tool, parallel_tool_calls false -> disable_parallel_tool_use",
     {"messages": HELLO, "tools": [WEATHER], "parallel_tool_calls": False,
      "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     {**BASE, "messages": [user(text("hello there"))], "tools": [WEATHER_OUT],
      "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}}),
    ("tool_choice none", {"messages": HELLO, "tools": [WEATHER], "tool_choice": "none", "parallel_tool_calls": False},
     {**BASE, "messages": [user(text("hello there"))], "tools": [WEATHER_OUT], "tool_choice": {"type": "none"}}),
    ("parallel_tool_calls false alone -> auto without parallel use",
     {"messages": HELLO, "tools": [WEATHER], "parallel_tool_calls": False},
     {**BASE, "messages": [user(text("hello there"))], "tools": [WEATHER_OUT],
      "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
    ("tool_choice auto/none without tools is simply left out",
     {"messages": HELLO, "tool_choice": "none"}, {**BASE, "messages": [user(text("hello there"))]}),
    ("strict function tools stay strict",
     {"messages": HELLO, "tools": [{"type": "function", "function": {**WEATHER["function"], "strict": True}}]},  # type: ignore[dict-item]
     {**BASE, "messages": [user(text("hello there"))], "tools": [{**WEATHER_OUT, "strict": True}]}),
    ("tool calls become tool_use; consecutive tool results merge into one user turn with what follows",
     {"messages": [*HELLO,
                   {"role": "assistant", "content": "checking", "tool_calls": [
                       CALL, {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                   {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                   {"role": "user", "content": "thanks"}]},
     {**BASE, "messages": [
         user(text("hello there")),
         assistant(text("checking"), {"type": "tool_use", "id": "call_1", "name": "get_weather",
                                      "input": {"city": "Paris"}},
                   {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}),
         user({"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
              {"type": "tool_result", "tool_use_id": "call_2", "content": [text("noon")]}, text("thanks"))]}),
    ("assistant tool call without content; empty tool result has no content",
     {"messages": [*HELLO, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                   {"role": "tool", "tool_call_id": "call_1", "content": ""}]},
     {**BASE, "messages": [
         user(text("hello there")),
         assistant({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}),
         user({"type": "tool_result", "tool_use_id": "call_1"})]}),
    ("sampling, stop, limits and user",
     {"messages": HELLO, "stop": "END", "max_completion_tokens": 50, "max_tokens": 99, "temperature": 0.2,
      "top_p": 0.9, "top_k": 40, "user": "user-42"},
     {**BASE, "max_tokens": 50, "messages": [user(text("hello there"))], "stop_sequences": ["END"],
      "temperature": 0.2, "top_p": 0.9, "top_k": 40, "metadata": {"user_id": "user-42"}}),
    ("stop list; safety_identifier stands in for user",
     {"messages": HELLO, "stop": ["a", "b"], "max_tokens": 7, "safety_identifier": "hash-1"},
     {**BASE, "max_tokens": 7, "messages": [user(text("hello there"))], "stop_sequences": ["a", "b"],
      "metadata": {"user_id": "hash-1"}}),
    ("json_schema -> structured outputs",
     {"messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {
         "name": "city", "schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                    "required": ["city"], "additionalProperties": False}}}},
     {**BASE, "messages": [user(text("hello there"))], "output_config": {"format": {
         "type": "json_schema", "schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                           "required": ["city"], "additionalProperties": False}}}}),
    ("neutral values and metadata are accepted and not sent",
     {"messages": HELLO, "n": 1, "logprobs": False, "top_logprobs": 0, "presence_penalty": 0,
      "frequency_penalty": 0.0, "logit_bias": {}, "seed": 7, "store": False, "metadata": {"k": "v"},
      "service_tier": "auto", "prompt_cache_key": "p", "response_format": {"type": "text"},
      "modalities": ["text"], "keep_alive": "5m", "stream_options": None, "functions": None},
     {**BASE, "messages": [user(text("hello there"))]}),
]


@pytest.mark.parametrize(("body", "expected"), [(b, e) for _, b, e in REQUESTS], ids=[n for n, _, _ in REQUESTS])
def test_chat_requests_translate(body: dict[str, Any], expected: dict[str, Any]) -> None:
    request = chat(body)
    before = json.dumps(request.body, sort_keys=True)
    assert messages_body(request, TARGET) == expected
    assert json.dumps(request.body, sort_keys=True) == before  # the client's body is not mutated


def test_streams_ask_for_a_stream() -> None:
    assert messages_body(chat({"messages": HELLO}, stream=True), TARGET)["stream"] is True
    assert "stream" not in messages_body(chat({"messages": HELLO}), TARGET)


def test_legacy_completion_sends_the_prompt_as_one_user_message() -> None:
    body = messages_body(legacy({"prompt": ["once upon"], "max_tokens": 20, "stop": ["\n"], "echo": False,
                                 "best_of": 1, "suffix": None}), TARGET)
    assert body == {**BASE, "max_tokens": 20, "messages": [user(text("once upon"))], "stop_sequences": ["\n"]}


def calling(arguments: str, call_id: str | None = "c") -> dict[str, Any]:
    call = {"type": "function", "function": {"name": "f", "arguments": arguments}}
    return {"messages": [*HELLO, {"role": "assistant", "tool_calls": [{**call, "id": call_id} if call_id else call]}]}


REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": -1}, "frequency_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
    ({"temperature": 1.5}, "temperature"),
    ({"reasoning_effort": "high"}, "reasoning_effort"),
    ({"verbosity": "low"}, "verbosity"),
    ({"repetition_penalty": 1.1}, "repetition_penalty"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    (calling("{not json"), "messages[1].tool_calls"),
    (calling("[1, 2]"), "messages[1].tool_calls"),
    (calling("{}", call_id=None), "messages[1].tool_calls"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.png"}}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2Zz4="}}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}]}]}, "messages[0].content"),
    ({"messages": [{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}, *HELLO]}, "messages[0].content"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
]


@pytest.mark.parametrize(("extra", "param"), REFUSED, ids=[p for _, p in REFUSED])
def test_what_anthropic_cannot_honour_is_a_400_naming_the_field(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as info:
        messages_body(chat({"messages": HELLO, **extra}), TARGET)
    assert info.value.status_code == 400 and info.value.param == param
    assert "anthropic" in info.value.message.lower()


@pytest.mark.parametrize(("extra", "param"), [
    ({"prompt": ["one", "two"]}, "prompt"), ({"prompt": [1, 2, 3]}, "prompt"), ({"prompt": ""}, "prompt"),
    ({"prompt": "x", "echo": True}, "echo"), ({"prompt": "x", "best_of": 2}, "best_of"),
    ({"prompt": "x", "logprobs": 0}, "logprobs"), ({"prompt": "x", "suffix": "end"}, "suffix"),
    ({"prompt": "x", "tools": [WEATHER]}, "tools"),
])
def test_legacy_completion_refusals(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as info:
        messages_body(legacy(extra), TARGET)
    assert info.value.param == param


def test_embeddings_are_refused_on_the_model() -> None:
    err = embeddings_refused()
    assert err.status_code == 400 and err.param == "model" and "embeddings" in err.message


# ----------------------------------------------------------------------------------------- responses
def message(content: list[dict[str, Any]], stop_reason: str | None = "end_turn", **usage: int) -> dict[str, Any]:
    return {"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, **usage}}


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length"),
    (None, "stop"),
])
def test_stop_reasons_map_to_finish_reasons(stop_reason: str | None, finish: str) -> None:
    body, usage = chat_result(message([text("Hi"), text(" there")], stop_reason), chat({"messages": HELLO}), TARGET)
    validate(body, "CreateChatCompletionResponse")
    assert body["choices"][0]["finish_reason"] == finish
    assert body["choices"][0]["message"]["content"] == "Hi there"
    assert body["model"] == "claude" and body["object"] == "chat.completion"
    assert body["id"] == "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL"
    assert (usage.prompt_tokens, usage.completion_tokens) == (10, 5)


def test_tool_use_blocks_become_tool_calls_with_their_ids() -> None:
    payload = message([text("Let me check."),
                       {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
                       {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {}}], "tool_use")
    body, _ = chat_result(payload, chat({"messages": HELLO}), TARGET)
    validate(body, "CreateChatCompletionResponse")
    msg = body["choices"][0]["message"]
    assert msg["content"] == "Let me check."
    assert [(c["id"], c["type"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in msg["tool_calls"]] == [("toolu_01A", "function", "get_weather", {"city": "Paris"}),
                                            ("toolu_01B", "function", "get_time", {})]
    only_tools, _ = chat_result(message(payload["content"][1:], "tool_use"), chat({"messages": HELLO}), TARGET)
    assert only_tools["choices"][0]["message"]["content"] is None
    empty, _ = chat_result(message([], "end_turn"), chat({"messages": HELLO}), TARGET)
    assert empty["choices"][0]["message"]["content"] == ""


def test_prompt_tokens_count_cache_writes_and_reads() -> None:
    payload = message([text("ok")], cache_creation_input_tokens=20, cache_read_input_tokens=100)
    body, usage = chat_result(payload, chat({"messages": HELLO}), TARGET)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (130, 5, False)
    assert body["usage"] == {"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135,
                             "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20}}
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (100, 20)


def test_legacy_completion_answers_in_text_completion_shape() -> None:
    body, _ = chat_result(message([text("once upon a time")], "max_tokens"), legacy({"prompt": "x"}), TARGET)
    validate(body, "CreateCompletionResponse")
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "once upon a time"
    assert body["choices"][0]["finish_reason"] == "length"


def test_a_message_without_content_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError):
        chat_result({"type": "message"}, chat({"messages": HELLO}), TARGET)


# -------------------------------------------------------------------------------------------- streams
def ev(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


ARGS_1 = json.dumps({"city": "Paris", "note": 'say "hi"\n\tété \\ 東京'}, ensure_ascii=False)
ARGS_2 = '{"tz": "Europe/Paris"}'


def fragments(value: str, size: int) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)]


def delta(index: int, kind: str, key: str, value: str) -> bytes:
    return ev("content_block_delta", {"type": "content_block_delta", "index": index,
                                      "delta": {"type": kind, key: value}})


START = ev("message_start", {"type": "message_start", "message": {
    "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [], "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 472, "cache_creation_input_tokens": 8, "cache_read_input_tokens": 20,
              "output_tokens": 2}}})
TOOL_STREAM = b"".join([
    START,
    ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text",
                                                                                            "text": ""}}),
    ev("ping", {"type": "ping"}),
    *(delta(0, "text_delta", "text", t) for t in ["Let me", " check", " the weather."]),
    ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ev("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}}),
    delta(1, "input_json_delta", "partial_json", ""),
    *(delta(1, "input_json_delta", "partial_json", f) for f in fragments(ARGS_1, 3)),
    ev("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ev("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}}),
    *(delta(2, "input_json_delta", "partial_json", f) for f in fragments(ARGS_2, 4)),
    ev("content_block_stop", {"type": "content_block_stop", "index": 2}),
    ev("content_block_start", {"type": "content_block_start", "index": 3, "content_block": {
        "type": "tool_use", "id": "toolu_03", "name": "get_time", "input": {}}}),
    ev("content_block_stop", {"type": "content_block_stop", "index": 3}),
    ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                         "usage": {"output_tokens": 89}}),
    ev("message_stop", {"type": "message_stop"}),
])
TEXT_STREAM = b"".join([
    START,
    ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text",
                                                                                            "text": ""}}),
    ev("ping", {"type": "ping"}),
    *(delta(0, "text_delta", "text", t) for t in ["Hello", ", wörld", " \"quoted\"\n", "!"]),
    ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "stop_sequence",
                                                            "stop_sequence": "END"}, "usage": {"output_tokens": 6}}),
    ev("message_stop", {"type": "message_stop"}),
])


def feed_all(translator: StreamConverter, reads: list[bytes]) -> list[StreamPiece]:
    pieces = []
    for data in reads:
        piece = translator.feed(data)
        if piece is not None:
            pieces.append(piece)
        translator.check()
    translator.finish()
    return pieces


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def split_randomly(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), 40))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def openai_events(pieces: list[StreamPiece]) -> list[Any]:
    raw = b"".join(p.data for p in pieces)
    assert raw.endswith(b"\n\n")
    out: list[Any] = []
    for event in raw.split(b"\n\n")[:-1]:
        assert event.startswith(b"data: ")
        data = event[6:]
        out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return out


SPLITS = [pytest.param(split_every(TOOL_STREAM, n), id=f"every-{n}") for n in (1, 2, 7, 64, 10**7)]
SPLITS += [pytest.param(split_randomly(TOOL_STREAM, seed), id=f"random-{seed}") for seed in (1, 2, 3)]
SPLITS += [pytest.param(split_every(TOOL_STREAM.replace(b"\n", b"\r\n"), 5), id="crlf")]


@pytest.mark.parametrize("reads", SPLITS)
def test_tool_stream_reassembles_exactly_whatever_the_read_boundaries(reads: list[bytes]) -> None:
    translator = StreamConverter(chat({"messages": HELLO}, stream=True, include_usage=True), TARGET)
    pieces = feed_all(translator, reads)
    events = openai_events(pieces)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert chunk["id"] == "chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U" and chunk["model"] == "claude"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me check the weather."
    calls: dict[int, dict[str, str]] = {}
    fragments_seen = 0
    for d in deltas:
        for call in d.get("tool_calls") or []:
            entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            if "id" in call:
                assert not entry["id"], "a tool call was started twice"
                entry["id"], entry["name"] = call["id"], call["function"]["name"]
                assert call["type"] == "function" and call["function"]["arguments"] == ""
            else:
                fragments_seen += 1
            entry["arguments"] += call["function"]["arguments"]
    assert calls == {
        0: {"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "arguments": ARGS_1},
        1: {"id": "toolu_02", "name": "get_time", "arguments": ARGS_2},
        2: {"id": "toolu_03", "name": "get_time", "arguments": "{}"},  # no input at all still parses
    }
    assert fragments_seen == len(fragments(ARGS_1, 3)) + len(fragments(ARGS_2, 4)) + 1  # every fragment arrived
    finish = [c for c in chunks if c["choices"]][-1]["choices"][0]
    assert finish == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 500, "completion_tokens": 89, "total_tokens": 589,
                                   "prompt_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 8}}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert sum(p.events for p in pieces) == 3 + 3 + fragments_seen
    assert pieces[-1].done and pieces[-1].usage is not None
    assert (pieces[-1].usage.prompt_tokens, pieces[-1].usage.completion_tokens) == (500, 89)
    assert all(p.usage is None and not p.done for p in pieces[:-1])


@pytest.mark.parametrize("size", [1, 3, 11, 10**7])
def test_text_stream_without_usage_requested(size: int) -> None:
    translator = StreamConverter(chat({"messages": HELLO}, stream=True), TARGET)
    chunks = openai_events(feed_all(translator, split_every(TEXT_STREAM, size)))
    assert chunks[-1] == "[DONE]"
    for chunk in chunks[:-1]:
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert "usage" not in chunk and chunk["choices"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == 'Hello, wörld "quoted"\n!'
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert translator.usage is not None and translator.usage.total_tokens == 506


def test_legacy_completion_streams_text_completion_chunks() -> None:
    translator = StreamConverter(legacy({"prompt": "x"}, stream=True, include_usage=True), TARGET)
    pieces = feed_all(translator, split_every(TEXT_STREAM, 9))
    events = openai_events(pieces)
    assert events[-1] == "[DONE]" and events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] == 6
    chunks = events[:-2]
    for chunk in chunks:
        assert chunk["object"] == "text_completion" and "delta" not in chunk["choices"][0]
        assert chunk["usage"] is None
    # the spec models whole responses only (finish_reason and usage not null): the finish chunk is one
    validate({k: v for k, v in chunks[-1].items() if k != "usage"}, "CreateCompletionResponse")
    assert "".join(c["choices"][0]["text"] for c in chunks) == 'Hello, wörld "quoted"\n!'
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


ERROR_EVENTS = [
    ("overloaded_error", ServiceUnavailableError, 503),
    ("api_error", UpstreamError, 502),
    ("rate_limit_error", UpstreamRateLimitError, 429),
    ("invalid_request_error", BadRequestError, 400),
]


@pytest.mark.parametrize(("kind", "exc", "status"), ERROR_EVENTS, ids=[k for k, _, _ in ERROR_EVENTS])
@pytest.mark.parametrize("size", [4, 10**7])
def test_an_error_event_mid_stream_raises_after_relaying_what_came_before(
    kind: str, exc: type[GatewayError], status: int, size: int
) -> None:
    stream = TEXT_STREAM.split(b"event: content_block_stop")[0] + ev(
        "error", {"type": "error", "error": {"type": kind, "message": f"trouble for {SECRET}"}})
    stream += ev("message_stop", {"type": "message_stop"})  # nothing after the error is relayed
    translator = StreamConverter(chat({"messages": HELLO}, stream=True), TARGET)
    redactor = Redactor()  # as the upstream client redacts every read before a converter sees it
    redactor.add(SECRET)
    incoming = redactor.stream()
    relayed = b""
    with pytest.raises(exc) as info:
        for data in split_every(stream, size):
            piece = translator.feed(incoming.feed(data))
            if piece is not None:
                relayed += piece.data
            translator.check()
    assert type(info.value) is exc and info.value.status_code == status
    assert SECRET not in info.value.message and kind in info.value.message
    assert b"[DONE]" not in relayed
    texts = [json.loads(e[6:])["choices"][0]["delta"].get("content") for e in relayed.split(b"\n\n")[:-1]]
    assert "".join(t or "" for t in texts) == 'Hello, wörld "quoted"\n!'
    with pytest.raises(exc):
        translator.finish()


def test_an_error_before_any_content_relays_nothing() -> None:
    translator = StreamConverter(chat({"messages": HELLO}, stream=True), TARGET)
    start = TEXT_STREAM.split(b"event: content_block_delta")[0]  # message_start, block start, ping
    assert translator.feed(start) is None
    overloaded = ev("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert translator.feed(overloaded) is None
    with pytest.raises(ServiceUnavailableError):
        translator.check()


def test_an_empty_answer_still_streams_role_finish_and_done() -> None:
    translator = StreamConverter(chat({"messages": HELLO}, stream=True), TARGET)
    stream = START + ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                          "usage": {"output_tokens": 1}}) + ev("message_stop", {"type": "message_stop"})
    events = openai_events(feed_all(translator, [stream]))
    assert [e if e == "[DONE]" else e["choices"][0]["delta"] for e in events] == [
        {"role": "assistant", "content": "", "refusal": None}, {}, "[DONE]"]


def test_a_stream_cut_before_message_stop_is_an_upstream_error() -> None:
    translator = StreamConverter(chat({"messages": HELLO}, stream=True), TARGET)
    cut = TEXT_STREAM[: TEXT_STREAM.index(b"event: message_delta") + 10]
    piece = translator.feed(cut)
    assert piece is not None and b"[DONE]" not in piece.data and not piece.done
    with pytest.raises(UpstreamError) as info:
        translator.finish()
    assert info.value.status_code == 502


def test_a_malformed_event_is_an_upstream_error() -> None:
    translator = StreamConverter(chat({"messages": HELLO}, stream=True), TARGET)
    with pytest.raises(UpstreamError):
        translator.feed(b"event: message_start\ndata: {not json\n\n")


# --------------------------------------------------------------------------------------------- errors
def error_body(kind: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


ERRORS: list[tuple[int, bytes, dict[str, str], type[GatewayError], int, float | None]] = [
    (400, error_body("invalid_request_error", "messages.0.content: bad"), {}, BadRequestError, 400, None),
    (401, error_body("authentication_error", "invalid x-api-key"), {}, UpstreamError, 502, None),
    (403, error_body("permission_error", "no access"), {}, UpstreamError, 502, None),
    (404, error_body("not_found_error", "model: claude-9"), {}, NotFoundError, 404, None),
    (413, error_body("request_too_large", "Request exceeds the maximum allowed number of bytes."), {},
     RequestTooLargeError, 413, None),
    (429, error_body("rate_limit_error", "slow down"), {"retry-after": "7"}, UpstreamRateLimitError, 429, 7.0),
    (500, error_body("api_error", "Internal server error"), {}, UpstreamError, 502, None),
    (529, error_body("overloaded_error", "Overloaded"), {}, ServiceUnavailableError, 503, None),
    (529, error_body("overloaded_error", "Overloaded"), {"Retry-After": "3"}, ServiceUnavailableError, 503, 3.0),
    (502, b"<html>bad gateway</html>", {}, UpstreamError, 502, None),
]


@pytest.mark.parametrize(("status", "raw", "headers", "exc", "ours", "retry_after"), ERRORS,
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(ERRORS)])
def test_error_responses_are_mapped(status: int, raw: bytes, headers: dict[str, str], exc: type[GatewayError],
                                    ours: int, retry_after: float | None) -> None:
    err = error_from_response(status, raw, headers)
    assert type(err) is exc and err.status_code == ours and err.retry_after == retry_after
    if status == 400:
        assert err.message == "messages.0.content: bad"


def test_error_messages_never_carry_the_key() -> None:
    redactor = Redactor()  # as the upstream client redacts every body before a provider reads it
    redactor.add(SECRET)
    body = redactor.redact_bytes(error_body("invalid_request_error", f"bad key {SECRET}!"))
    err = error_from_response(400, body, {})
    assert SECRET not in err.message and "[redacted]" in err.message
    auth = error_from_response(401, error_body("authentication_error", f"invalid x-api-key {SECRET}"), {})
    assert SECRET not in auth.message and auth.code == "upstream_auth_error"


def test_model_pages() -> None:
    page = {"data": [{"type": "model", "id": "claude-a", "display_name": "A", "created_at": "2025-01-01T00:00:00Z"},
                     {"type": "model", "id": "claude-b", "display_name": "B", "created_at": "2025-01-01T00:00:00Z"}],
            "has_more": True, "first_id": "claude-a", "last_id": "claude-b"}
    assert model_page(page) == (["claude-a", "claude-b"], "claude-b")
    assert model_page({**page, "has_more": False}) == (["claude-a", "claude-b"], None)
    with pytest.raises(UpstreamError):
        model_page({"models": []})
