"""The spec validator itself: it must accept real payloads and reject broken ones."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.contract import openapi
from tests.contract.openapi import validate

COMPLETION: dict[str, Any] = {  # the example from OpenAI's API reference
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "A boardwalk.", "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

CHUNK: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1741570283,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": None, "finish_reason": None}],
    "usage": None,
}


def _broken(mutate: Any) -> dict[str, Any]:
    doc = copy.deepcopy(COMPLETION)
    mutate(doc)
    return doc


def test_accepts_a_valid_chat_completion() -> None:
    validate(COMPLETION, "CreateChatCompletionResponse")


def test_accepts_a_tool_call_completion() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    doc = _broken(lambda d: d["choices"][0].update(finish_reason="tool_calls"))
    doc["choices"][0]["message"].update(content=None, tool_calls=[call])
    validate(doc, "CreateChatCompletionResponse")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("choices"), "'choices' is a required property"),
        (lambda d: d.update(object="chat.completion.chunk"), "$.object"),
        (lambda d: d["choices"][0].update(finish_reason="done"), "$.choices[0].finish_reason"),
        (lambda d: d["choices"][0].pop("logprobs"), "'logprobs' is a required property"),
        (lambda d: d["choices"][0]["message"].update(role="user"), "$.choices[0].message.role"),
        (lambda d: d["choices"][0]["message"].update(content=42), "$.choices[0].message.content"),
        (lambda d: d["usage"].pop("total_tokens"), "'total_tokens' is a required property"),
        (lambda d: d.update(created="yesterday"), "$.created"),
        # through a $ref into ChatCompletionMessageToolCalls -> ChatCompletionMessageToolCall
        (lambda d: d["choices"][0]["message"].update(tool_calls=[{"id": "c", "type": "function"}]),
         "$.choices[0].message.tool_calls[0]"),
    ],
)
def test_rejects_an_invalid_chat_completion(mutate: Any, needle: str) -> None:
    with pytest.raises(jsonschema.ValidationError) as info:
        validate(_broken(mutate), "CreateChatCompletionResponse")
    message = str(info.value)
    assert message.startswith("CreateChatCompletionResponse")
    assert needle in message
    assert len(message) < 5000, "the message should be readable, not a schema dump"


def test_openapi_nullable_is_honoured() -> None:
    # `usage`, `finish_reason` and `logprobs` are `nullable: true` (OpenAPI 3.0 style) in the spec.
    validate(CHUNK, "CreateChatCompletionStreamResponse")
    with pytest.raises(jsonschema.ValidationError, match="finish_reason"):
        validate({**CHUNK, "choices": [{**CHUNK["choices"][0], "finish_reason": "nope"}]},
                 "CreateChatCompletionStreamResponse")
    with pytest.raises(jsonschema.ValidationError, match="usage"):
        validate({**CHUNK, "usage": {"prompt_tokens": 1}}, "CreateChatCompletionStreamResponse")


def test_error_response_schema() -> None:
    validate({"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}},
             "ErrorResponse")
    with pytest.raises(jsonschema.ValidationError, match="'code' is a required property"):
        validate({"error": {"message": "m", "type": "t", "param": None}}, "ErrorResponse")


def test_unknown_schema_name() -> None:
    with pytest.raises(KeyError, match="NoSuchSchema"):
        validate({}, "NoSuchSchema")


def test_spec_is_cached_as_json_in_the_temp_dir() -> None:
    spec = openapi.load_spec()
    assert spec["openapi"].startswith("3.1")
    caches = list(Path(tempfile.gettempdir()).glob("switchyard-openai-openapi-*.json"))
    assert caches, "no JSON cache of the spec was written"
    newest = max(caches, key=lambda p: p.stat().st_mtime)
    assert json.loads(newest.read_text())["components"]["schemas"].keys() == spec["components"]["schemas"].keys()
