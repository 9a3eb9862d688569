"""The spec validator itself: it must accept real payloads and reject broken ones."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest

from tests.contract import extract_schemas, openapi
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


def test_the_bundled_schemas_are_the_closure_of_their_roots() -> None:
    doc = json.loads(openapi.SCHEMAS_PATH.read_text(encoding="utf-8"))
    assert doc["source"]["title"] == "OpenAI API" and doc["source"]["version"]
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    roots = [*extract_schemas.ROOTS, *(n for n in schemas if extract_schemas.EVENT.match(n))]
    # every $ref resolves inside the file, and nothing in it is unreachable from a root
    assert extract_schemas.closure(schemas, roots).keys() == schemas.keys()
    license_text = (openapi.SCHEMAS_PATH.parent / "openai-openapi.LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("The MIT License") and "OpenAI" in license_text


RESPONSE: dict[str, Any] = {  # shaped like the example in OpenAI's Responses API reference
    "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
    "object": "response",
    "created_at": 1741476542,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "model": "gpt-4.1-2025-04-14",
    "output": [
        {
            "type": "message",
            "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Once upon a time...", "annotations": [], "logprobs": []}],
        }
    ],
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "usage": {
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 123,
    },
    "metadata": {},
}


def test_responses_api_schemas_are_bundled() -> None:
    validate({"model": "gpt-4.1", "input": "Tell me a three sentence bedtime story about a unicorn."},
             "CreateResponse")
    validate(RESPONSE, "Response")
    with pytest.raises(jsonschema.ValidationError, match="status"):
        validate({**RESPONSE, "status": "done"}, "Response")
    delta = {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
             "delta": "Once", "sequence_number": 3, "logprobs": []}
    validate(delta, "ResponseStreamEvent")
    validate({"type": "response.completed", "response": RESPONSE, "sequence_number": 9}, "ResponseStreamEvent")
    with pytest.raises(jsonschema.ValidationError):
        validate({**delta, "delta": 7}, "ResponseStreamEvent")
