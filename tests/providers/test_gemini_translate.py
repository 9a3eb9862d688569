"""The Gemini translation: pure functions, tested as tables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchyard.core.chat import ChatRequest, GenerationKind
from switchyard.core.embeddings import EmbeddingRequest
from switchyard.core.models import Target
from switchyard.core.redaction import Redactor
from switchyard.errors import (
    BadRequestError,
    GatewayError,
    NotFoundError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamRateLimitError,
)
from switchyard.providers.gemini.requests import chat_body, chat_path, embed_body
from switchyard.providers.gemini.translate import StreamConverter, chat_result, error_from_response, model_names
from tests.contract.openapi import validate

TARGET = Target(alias="alias", provider="g", provider_type="gemini", upstream_model="gemini-2.0-flash", timeout=5)
SECRET = "AIzaSy-secret-key-0123456789"
REDACTOR = Redactor()  # as the upstream client redacts every read before a provider sees it
REDACTOR.add(SECRET)
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"], "additionalProperties": False}}}


def chat(body: dict[str, Any], *, stream: bool = False, usage: bool = False,
         kind: GenerationKind = GenerationKind.CHAT) -> ChatRequest:
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    return ChatRequest(kind=kind, model="alias", body={"model": "alias", **body}, stream=stream,
                       include_usage=usage, max_tokens=max_tokens)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# ------------------------------------------------------------------------------- requests
@pytest.mark.parametrize(("body", "expected"), [
    pytest.param({"messages": [{"role": "system", "content": "be brief"}, user("hi")]},
                 {"systemInstruction": {"parts": [{"text": "be brief"}]},
                  "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, id="system"),
    pytest.param({"messages": [user("hi"), {"role": "assistant", "content": "hello"},
                               {"role": "developer", "content": [{"type": "text", "text": "rules"}]}, user("more")]},
                 {"systemInstruction": {"parts": [{"text": "rules"}]},
                  "contents": [{"role": "user", "parts": [{"text": "hi"}]},
                               {"role": "model", "parts": [{"text": "hello"}]},
                               {"role": "user", "parts": [{"text": "more"}]}]}, id="developer-anywhere"),
    pytest.param({"messages": [user("hi")], "temperature": 0.3, "top_p": 0.9, "max_tokens": 50, "stop": "END",
                  "seed": 7, "n": 2, "presence_penalty": 0.5, "frequency_penalty": -0.5},
                 {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                  "generationConfig": {"temperature": 0.3, "topP": 0.9, "maxOutputTokens": 50, "stopSequences": ["END"],
                                       "seed": 7, "candidateCount": 2, "presencePenalty": 0.5,
                                       "frequencyPenalty": -0.5}}, id="generation-config"),
    pytest.param({"messages": [user("hi")], "max_completion_tokens": 9, "stop": ["a", "b"], "n": 1,
                  "response_format": {"type": "json_object"}},
                 {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                  "generationConfig": {"maxOutputTokens": 9, "stopSequences": ["a", "b"],
                                       "responseMimeType": "application/json"}}, id="json-object"),
    pytest.param({"messages": [user("hi")], "response_format": {"type": "json_schema", "json_schema": {
                      "name": "c", "schema": {"type": "object", "properties": {"c": {"type": "string"}}}}}},
                 {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                  "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": {
                      "type": "object", "properties": {"c": {"type": "string"}}}}}, id="json-schema"),
    pytest.param({"messages": [{"role": "user", "content": [
                      {"type": "text", "text": "what is this"},
                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                      {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                      {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}]}]},
                 {"contents": [{"role": "user", "parts": [
                     {"text": "what is this"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                     {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                     {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}]}]}, id="media"),
    pytest.param({"messages": [user("hi")], "tools": [WEATHER], "tool_choice": "required"},
                 {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                  "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather for a city",
                                                       "parametersJsonSchema": WEATHER["function"]["parameters"]}]}],
                  "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}, id="tools-required"),
])
def test_request_bodies(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert chat_body(chat(body), TARGET) == expected


@pytest.mark.parametrize(("choice", "config"), [
    (None, None),
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
])
def test_tool_choice_becomes_function_calling_config(choice: Any, config: dict[str, Any] | None) -> None:
    body = chat_body(chat({"messages": [user("hi")], "tools": [WEATHER], "tool_choice": choice}), TARGET)
    assert body.get("toolConfig") == (None if config is None else {"functionCallingConfig": config})


def test_tool_history_becomes_function_call_and_merged_response_turns() -> None:
    messages = [
        user("weather in Paris and Lyon?"),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a__thought__c2lnbmF0dXJl", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"city": "Lyon"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
        {"role": "tool", "tool_call_id": "call_a__thought__c2lnbmF0dXJl", "content": '{"sky": "sunny"}'},
        {"role": "assistant", "content": "Sunny, and noon."},
        user("thanks"),
    ]
    contents = chat_body(chat({"messages": messages}), TARGET)["contents"]
    assert contents == [
        {"role": "user", "parts": [{"text": "weather in Paris and Lyon?"}]},
        {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmF0dXJl"},
            {"functionCall": {"name": "get_time", "args": {"city": "Lyon"}}},
        ]},
        {"role": "user", "parts": [  # both answers in one turn, named after the calls they answer
            {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
            {"functionResponse": {"name": "get_weather", "response": {"sky": "sunny"}}},
        ]},
        {"role": "model", "parts": [{"text": "Sunny, and noon."}]},
        {"role": "user", "parts": [{"text": "thanks"}]},
    ]


def test_legacy_completion_prompt_becomes_one_user_turn() -> None:
    req = chat({"prompt": "once upon", "max_tokens": 5}, kind=GenerationKind.COMPLETION)
    assert chat_body(req, TARGET) == {"contents": [{"role": "user", "parts": [{"text": "once upon"}]}],
                                      "generationConfig": {"maxOutputTokens": 5}}


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [user("hi")], "logprobs": True}, "logprobs"),
    ({"messages": [user("hi")], "top_logprobs": 3}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "https://example.com/cat.png"}}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
     "messages[0].content"),
    ({"messages": [user("hi"), {"role": "tool", "tool_call_id": "call_missing", "content": "x"}]},
     "messages[1].tool_call_id"),
    ({"messages": [user("hi"), {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]}]},
     "messages[1].tool_calls"),
    ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:x;base64,AA"}}]},
                   user("hi")]}, "messages[0].content"),
    ({"messages": [user("hi")], "tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
])
def test_refused_requests_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as info:
        chat_body(chat(body), TARGET)
    assert info.value.param == param and info.value.status_code == 400


def test_prompts_and_names_gemini_cannot_take_are_400() -> None:
    with pytest.raises(BadRequestError) as info:
        chat_body(chat({"prompt": ["a", "b"]}, kind=GenerationKind.COMPLETION), TARGET)
    assert info.value.param == "prompt"
    for name in ("../files/x", "a?key=1", "models/x:y", ""):
        with pytest.raises(BadRequestError) as bad:
            chat_path(Target(alias="a", provider="g", provider_type="gemini", upstream_model=name, timeout=1), False)
        assert bad.value.param == "model"
    assert chat_path(TARGET, True) == "/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    tuned = Target(alias="a", provider="g", provider_type="gemini", upstream_model="tunedModels/mine", timeout=1)
    assert chat_path(tuned, False) == "/tunedModels/mine:generateContent"


def test_embed_body_and_token_arrays() -> None:
    req = EmbeddingRequest(model="e", inputs=["a", "b"], dimensions=16)
    target = Target(alias="e", provider="g", provider_type="gemini", upstream_model="text-embedding-004", timeout=1)
    assert embed_body(req, target) == {"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 16},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 16},
    ]}
    with pytest.raises(BadRequestError) as info:
        embed_body(EmbeddingRequest(model="e", inputs=[[1, 2, 3]]), target)
    assert info.value.param == "input"
    assert model_names({"models": [{"name": "models/gemini-2.0-flash"}, {"name": "models/text-embedding-004"}]}) == [
        "gemini-2.0-flash", "text-embedding-004"]


# ------------------------------------------------------------------------------ responses
def candidate(parts: list[dict[str, Any]] | None, reason: str | None, index: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index}
    if parts is not None:
        out["content"] = {"role": "model", "parts": parts}
    if reason is not None:
        out["finishReason"] = reason
    return out


USAGE = {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10}
CALL = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}


@pytest.mark.parametrize(("parts", "reason", "finish"), [
    ([{"text": "hi"}], "STOP", "stop"),
    ([CALL], "STOP", "tool_calls"),
    ([{"text": "cut"}], "MAX_TOKENS", "length"),
    (None, "SAFETY", "content_filter"),
    ([{"text": "partial"}], "RECITATION", "content_filter"),
    (None, "BLOCKLIST", "content_filter"),
    (None, "PROHIBITED_CONTENT", "content_filter"),
    (None, "SPII", "content_filter"),
    (None, "IMAGE_SAFETY", "content_filter"),
    ([{"text": "hi"}], "OTHER", "stop"),
    ([{"text": "hi"}], "LANGUAGE", "stop"),
])
def test_every_finish_reason(parts: list[dict[str, Any]] | None, reason: str, finish: str) -> None:
    payload = {"candidates": [candidate(parts, reason)], "usageMetadata": USAGE, "responseId": "r1"}
    result, usage = chat_result(payload, chat({"messages": [user("hi")]}), TARGET)
    validate(result, "CreateChatCompletionResponse")
    choice = result["choices"][0]
    assert choice["finish_reason"] == finish and result["model"] == "alias" and result["id"] == "chatcmpl-r1"
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 3) and not usage.estimated
    if finish == "tool_calls":
        call = choice["message"]["tool_calls"][0]
        assert call["id"].startswith("call_") and call["type"] == "function"
        assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
        assert choice["message"]["content"] is None
    else:
        assert isinstance(choice["message"]["content"], str) and "tool_calls" not in choice["message"]


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"])
def test_malformed_function_call_is_a_502_never_stop(reason: str) -> None:
    payload = {"candidates": [candidate([{"text": "Let me check."}], reason)], "usageMetadata": USAGE}
    with pytest.raises(UpstreamError) as info:
        chat_result(payload, chat({"messages": [user("hi")]}), TARGET)
    assert info.value.status_code == 502 and info.value.code == "malformed_function_call"
    assert "malformed function call" in info.value.message


def test_blocked_prompt_is_one_filtered_choice() -> None:
    payload = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    result, usage = chat_result(payload, chat({"messages": [user("hi")]}), TARGET)
    validate(result, "CreateChatCompletionResponse")
    assert result["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "", "refusal": None},
                                  "logprobs": None, "finish_reason": "content_filter"}]
    assert (usage.prompt_tokens, usage.completion_tokens) == (4, 0)
    with pytest.raises(UpstreamError):
        chat_result({"usageMetadata": USAGE}, chat({"messages": [user("hi")]}), TARGET)


def test_thoughts_signatures_candidates_and_usage_details() -> None:
    payload = {"candidates": [
        candidate([{"text": "pondering", "thought": True}, {"text": "B"}], "STOP", index=1),
        candidate([{"text": "A", "thoughtSignature": "ignored-on-text"},
                   {**CALL, "thoughtSignature": "sig+/="},
                   {"functionCall": {"id": "fc-7", "name": "get_time"}}], "STOP", index=0),
    ], "usageMetadata": {**USAGE, "thoughtsTokenCount": 5, "cachedContentTokenCount": 2}}
    result, usage = chat_result(payload, chat({"messages": [user("hi")], "n": 2}), TARGET)
    validate(result, "CreateChatCompletionResponse")
    first, second = result["choices"]
    assert first["index"] == 0 and second["index"] == 1 and second["message"]["content"] == "B"
    assert second["message"]["reasoning_content"] == "pondering" and "reasoning_content" not in first["message"]
    calls = first["message"]["tool_calls"]
    assert calls[0]["id"].endswith("__thought__sig+/=") and calls[1]["id"] == "fc-7"
    assert calls[1]["function"]["arguments"] == "{}" and first["message"]["content"] == "A"
    assert usage.completion_tokens == 8
    assert result["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}
    assert result["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}


def test_legacy_completion_result() -> None:
    payload = {"candidates": [candidate([{"text": "the end"}], "MAX_TOKENS")], "usageMetadata": USAGE}
    result, _ = chat_result(payload, chat({"prompt": "x"}, kind=GenerationKind.COMPLETION), TARGET)
    validate(result, "CreateCompletionResponse")
    assert result["choices"][0] == {"index": 0, "text": "the end", "logprobs": None, "finish_reason": "length"}


# --------------------------------------------------------------------------------- stream
def sse(obj: dict[str, Any], crlf: bool = True) -> bytes:
    end = b"\r\n\r\n" if crlf else b"\n\n"
    return b"data: " + json.dumps(obj).encode() + end


def text_event(text: str, reason: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    out: dict[str, Any] = {"candidates": [candidate([{"text": text}], reason)], "responseId": "r"}
    out["usageMetadata"] = usage or {"promptTokenCount": 7, "totalTokenCount": 7}
    return sse(out)


STREAM = (text_event("Hel") + text_event("lo ") + sse({"candidates": [candidate([
    {"text": "thinking", "thought": True}, CALL, {"functionCall": {"name": "get_time", "args": {}}}], None)]})
    + text_event("there", "STOP", USAGE))


def run(translator: StreamConverter, data: bytes, split: int) -> tuple[list[Any], int]:
    out = b""
    events = 0
    for i in range(0, len(data), split):
        piece = translator.feed(data[i : i + split])
        if piece is not None:
            out += piece.data
            events += piece.events
    last = translator.finish()
    out += last.data
    assert last.done
    return [json.loads(e[6:]) if e != b"data: [DONE]" else "[DONE]" for e in out.split(b"\n\n") if e], events


@pytest.mark.parametrize("split", [1, 2, 3, 7, 31, 64, len(STREAM)])
def test_stream_reassembles_events_split_anywhere(split: int) -> None:
    req = chat({"messages": [user("hi")]}, stream=True, usage=True)
    translator = StreamConverter(req, TARGET)
    events, count = run(translator, STREAM, split)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert chunk["model"] == "alias" and chunk["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello there"  # the thought summary is not part of the answer
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert reasoning == "thinking"  # it is the reasoning
    calls = [t for c in chunks if c["choices"] for t in c["choices"][0]["delta"].get("tool_calls") or []]
    # as OpenAI streams them: each call's id and name first, then its arguments
    seen = [(t["index"], t.get("id", "")[:5], t["function"].get("name"), t["function"]["arguments"]) for t in calls]
    assert seen == [
        (0, "call_", "get_weather", ""), (0, "", None, '{"city":"Paris"}'),
        (1, "call_", "get_time", ""), (1, "", None, "{}")]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls" and chunks[-2]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert count == 8 and translator.usage is not None and translator.usage.completion_tokens == 3


def test_stream_without_include_usage_hides_usage_but_reports_it() -> None:
    translator = StreamConverter(chat({"messages": [user("hi")]}, stream=True), TARGET)
    events, _ = run(translator, text_event("Hi", "STOP", USAGE).replace(b"\r\n", b"\n"), 5)
    assert all(e == "[DONE]" or (e["choices"] and "usage" not in e) for e in events)
    assert [e["choices"][0].get("finish_reason") for e in events[:-1]] == [None, None, "stop"]
    assert translator.usage is not None and translator.usage.prompt_tokens == 7


def test_stream_candidates_legacy_and_blocked() -> None:
    two = sse({"candidates": [candidate([{"text": "a"}], None, 0), candidate([{"text": "b"}], None, 1)]}) + sse(
        {"candidates": [candidate([], "STOP", 0), candidate([{"text": "!"}], "MAX_TOKENS", 1)], "usageMetadata": USAGE})
    events, _ = run(StreamConverter(chat({"messages": [user("hi")], "n": 2}, stream=True), TARGET), two, 9)
    finishes = {c["choices"][0]["index"]: c["choices"][0]["finish_reason"] for c in events[:-1]
                if c["choices"][0]["finish_reason"]}
    assert finishes == {0: "stop", 1: "length"}
    legacy = StreamConverter(chat({"prompt": "x"}, stream=True, kind=GenerationKind.COMPLETION), TARGET)
    events, _ = run(legacy, text_event("once") + text_event(" more", "STOP", USAGE), 4)
    validate(events[-2], "CreateCompletionResponse")  # the spec forbids the null finish_reason of earlier chunks
    assert all(c["object"] == "text_completion" and c["choices"][0]["finish_reason"] is None for c in events[:-2])
    assert "".join(c["choices"][0]["text"] for c in events[:-1]) == "once more"
    blocked = sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 3}})
    events, count = run(StreamConverter(chat({"messages": [user("hi")]}, stream=True), TARGET), blocked, 100)
    assert [c["choices"][0]["finish_reason"] for c in events[:-1]] == [None, "content_filter"] and count == 0


@pytest.mark.parametrize("data", [
    text_event("Hel") + text_event("lo"),  # no finishReason: the connection was cut
    b"",
    sse({"candidates": [candidate([{"text": "a"}], None, 0), candidate([{"text": "b"}], "STOP", 1)]}),
])
def test_stream_that_ends_early_raises(data: bytes) -> None:
    translator = StreamConverter(chat({"messages": [user("hi")]}, stream=True), TARGET)
    if data:
        translator.feed(data)
    with pytest.raises(UpstreamError):
        translator.finish()


def test_stream_errors_mid_stream() -> None:
    malformed = text_event("Let me") + sse({"candidates": [candidate(None, "MALFORMED_FUNCTION_CALL")]})
    translator = StreamConverter(chat({"messages": [user("hi")]}, stream=True), TARGET)
    first = translator.feed(malformed[:40])
    assert first is None
    with pytest.raises(UpstreamError) as info:
        translator.feed(malformed[40:])
    assert info.value.code == "malformed_function_call"
    failed = sse({"error": {"code": 500, "message": f"boom {SECRET}", "status": "INTERNAL"}})
    with pytest.raises(UpstreamError) as err:
        StreamConverter(chat({"messages": [user("hi")]}, stream=True), TARGET).feed(REDACTOR.redact_bytes(failed))
    assert SECRET not in err.value.message and "boom" in err.value.message


# --------------------------------------------------------------------------------- errors
def google(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        err["details"] = details
    return json.dumps({"error": err}).encode()


KEY_INVALID = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com"}]
RETRY = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]


@pytest.mark.parametrize(("status", "raw", "headers", "kind", "code", "retry"), [
    (400, google(400, "INVALID_ARGUMENT", f"API key not valid: {SECRET}", KEY_INVALID), {}, UpstreamError,
     "upstream_auth_error", None),
    (403, google(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers"), {}, UpstreamError,
     "upstream_auth_error", None),
    (400, google(400, "INVALID_ARGUMENT", f"Unknown name \"foo\" ({SECRET})"), {}, BadRequestError,
     "upstream_bad_request", None),
    (429, google(429, "RESOURCE_EXHAUSTED", "quota", RETRY), {}, UpstreamRateLimitError, "upstream_rated_limited",
     7.0),
    (429, google(429, "RESOURCE_EXHAUSTED", "quota", RETRY), {"Retry-After": "3"}, UpstreamRateLimitError,
     "upstream_rated_limited", 3.0),
    (500, google(500, "INTERNAL", "internal"), {}, UpstreamError, "upstream_error", None),
    (503, google(503, "UNAVAILABLE", "overloaded"), {}, ServiceUnavailableError, "service_unavailable", None),
    (404, b'[{"error": {"code": 404, "message": "models/x is not found", "status": "NOT_FOUND"}}]', {},
     NotFoundError, "upstream_not_found", None),
    (502, b"<html>bad gateway</html>", {}, UpstreamError, "upstream_error", None),
])
def test_google_errors(status: int, raw: bytes, headers: dict[str, str], kind: type[GatewayError], code: str,
                       retry: float | None) -> None:
    err = error_from_response(status, REDACTOR.redact_bytes(raw), headers)  # redacted where it came in
    assert type(err) is kind
    assert err.code == (code if code != "upstream_rated_limited" else "upstream_rate_limited")
    assert err.retry_after == retry
    assert SECRET not in err.message and SECRET not in json.dumps(err.to_dict())
