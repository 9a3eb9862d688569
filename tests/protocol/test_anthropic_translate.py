"""Pure tests of the Anthropic Messages <-> OpenAI chat translation (no server)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from switchyard.core.usage import Usage
from switchyard.errors import BadRequestError, GatewayError, UpstreamRateLimitError, UpstreamTimeoutError
from switchyard.protocol.anthropic import (
    StreamConverter,
    chat_request,
    error_body,
    error_type,
    message_from_completion,
    openai_body,
)

EVENT = TypeAdapter(RawMessageStreamEvent)
HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up"}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + json.dumps({**HEAD, "choices": choices, **extra}).encode() + b"\n\n"


def call(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        out.update(id=call_id, type="function")
        out["function"]["name"] = name
    return {"tool_calls": [out]}


def parse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in raw.decode().split("\n\n"):
        if frame:
            name_line, data_line = frame.split("\n")
            assert name_line.startswith("event: ") and data_line.startswith("data: ")
            data = json.loads(data_line[6:])
            assert data["type"] == name_line[7:]
            if data["type"] != "error":
                EVENT.validate_python(data)  # the SDK's own event models accept it
            out.append((name_line[7:], data))
    return out


ARGS_A = ['{"ci', 'ty": ', '"Par', 'is"}']
ARGS_B = ['{"tz"', ': "CET"}']
TOOL_STREAM = b"".join([
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me "}),
    chunk({"content": "check."}),
    chunk(call(0, "", "call_a", "get_weather")),
    *[chunk(call(0, frag)) for frag in ARGS_A],
    chunk(call(1, "", "call_b", "get_time")),
    *[chunk(call(1, frag)) for frag in ARGS_B],
    chunk({}, "tool_calls"),
    chunk(None, usage={"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}),
    b"data: [DONE]\n\n",
])


def convert(raw: bytes, step: int) -> bytes:
    conv = StreamConverter("my-model", message_id="msg_fixed")
    out = b"".join(conv.feed(raw[i : i + step]) for i in range(0, len(raw), step))
    return out + conv.finish()


@pytest.mark.parametrize("step", [1, 7, 64, len(TOOL_STREAM)])
def test_stream_with_text_and_two_tool_calls(step: int) -> None:
    got = parse(convert(TOOL_STREAM, step))
    assert got[0] == ("message_start", {"type": "message_start", "message": {
        "id": "msg_fixed", "type": "message", "role": "assistant", "model": "my-model", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}})
    starts = [(d["index"], d["content_block"]) for n, d in got if n == "content_block_start"]
    assert starts == [
        (0, {"type": "text", "text": ""}),
        (1, {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}),
        (2, {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}),
    ]
    deltas = [(d["index"], d["delta"]) for n, d in got if n == "content_block_delta"]
    assert [d["text"] for i, d in deltas if i == 0] == ["Let me ", "check."]
    assert [d["partial_json"] for i, d in deltas if i == 1] == ARGS_A  # every fragment, in order
    assert [d["partial_json"] for i, d in deltas if i == 2] == ARGS_B
    names = [n for n, _ in got]
    # each block starts after the previous one stopped
    assert names == ["message_start",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "content_block_start", *["content_block_delta"] * 4, "content_block_stop",
                     "content_block_start", *["content_block_delta"] * 2, "content_block_stop",
                     "message_delta", "message_stop"]
    assert [d["index"] for n, d in got if n == "content_block_stop"] == [0, 1, 2]
    assert got[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0,
                                    "cache_read_input_tokens": 0, "output_tokens": 9}}


def test_split_points_do_not_change_the_output() -> None:
    assert convert(TOOL_STREAM, 1) == convert(TOOL_STREAM, 5) == convert(TOOL_STREAM, len(TOOL_STREAM))
    assert convert(TOOL_STREAM.replace(b"\n\n", b"\r\n\r\n"), 3) == convert(TOOL_STREAM, 3)


def test_interleaved_tool_fragments_are_never_dropped() -> None:
    raw = b"".join([
        chunk(call(0, '{"a":', "call_0", "f")),
        chunk(call(1, '{"b":', "call_1", "g")),
        chunk(call(0, "1}")),
        chunk(call(1, "2}")),
        chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ])
    got = parse(convert(raw, 9))
    deltas = [(d["index"], d["delta"]["partial_json"]) for n, d in got if n == "content_block_delta"]
    assert deltas == [(0, '{"a":'), (1, '{"b":'), (0, "1}"), (1, "2}")]
    for index, whole in ((0, {"a": 1}), (1, {"b": 2})):
        assert json.loads("".join(p for i, p in deltas if i == index)) == whole


def test_whole_tool_call_in_one_chunk() -> None:  # how the Ollama provider (and some servers) send them
    raw = chunk({"tool_calls": [{"index": 0, "id": "call_x", "type": "function",
                                 "function": {"name": "f", "arguments": '{"k": 1}'}}]}, "tool_calls")
    got = parse(convert(raw + b"data: [DONE]\n\n", 1000))
    assert [d["delta"]["partial_json"] for n, d in got if n == "content_block_delta"] == ['{"k": 1}']
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert got[-2][1]["usage"] == {"output_tokens": 1}  # no usage report: counted from the deltas


@pytest.mark.parametrize(("openai_type", "anthropic_type"),
                         [("server_error", "api_error"), ("rate_limit_error", "rate_limit_error")])
def test_error_event_at_the_end(openai_type: str, anthropic_type: str) -> None:
    conv = StreamConverter("m", message_id="msg_1")
    err = {"error": {"message": "upstream broke", "type": openai_type, "param": None, "code": None}}
    raw = chunk({"content": "partial"}) + b"data: " + json.dumps(err).encode() + b"\n\n"
    got = parse(conv.feed(raw))
    assert [n for n, _ in got] == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert got[-1][1] == {"type": "error", "error": {"type": anthropic_type, "message": "upstream broke"}}
    assert conv.ended
    assert conv.feed(chunk({"content": "late"}) + b"data: [DONE]\n\n") == b"" and conv.finish() == b""


def test_gateway_error_mid_stream() -> None:
    conv = StreamConverter("m")
    conv.feed(chunk({"content": "hi"}))
    got = parse(conv.error(UpstreamTimeoutError("The upstream timed out.")))
    assert got == [("error", {"type": "error", "error": {"type": "api_error", "message": "The upstream timed out."}})]


def test_finish_without_done_closes_the_message() -> None:
    conv = StreamConverter("m")
    out = conv.feed(chunk({"content": "a"}) + chunk({}, "length")) + conv.finish()
    got = parse(out)
    assert [n for n, _ in got][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert got[-2][1]["delta"]["stop_reason"] == "max_tokens"


# ------------------------------------------------------------------------- requests
def base(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **extra}


def test_user_turn_order_tool_results_and_images() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    anthropic_body = base(messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "tool_use", "id": "t1", "name": "shot", "input": {}},
            {"type": "tool_use", "id": "t2", "name": "calc", "input": {"x": [1, 2]}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "took it"}, image]},
            {"type": "tool_result", "tool_use_id": "t2", "is_error": True},
            {"type": "text", "text": "and now?", "cache_control": {"type": "ephemeral"}},
        ]},
    ])
    body = openai_body(anthropic_body)
    assert body["messages"] == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "shot", "arguments": "{}"}},
            {"id": "t2", "type": "function", "function": {"name": "calc", "arguments": '{"x":[1,2]}'}},
        ]},
        {"role": "tool", "tool_call_id": "t1", "content": "took it"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                     {"type": "text", "text": "and now?"}]},
    ]
    assert chat_request(anthropic_body).body == body  # and /v1/chat/completions' validation accepts it


def test_documents_and_streams() -> None:
    body = openai_body(base(stream=True, messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "the doc"}},
        {"type": "document", "title": "a.pdf", "source": {"type": "base64", "media_type": "application/pdf",
                                                          "data": "JVBE"}},
    ]}]))
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "the doc"},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
    ]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    request = chat_request(base(stream=True))
    assert request.stream and request.include_usage


def test_tools_choice_and_structured_output() -> None:
    tool = {"name": "f", "description": "does f", "input_schema": {"type": "object"}, "cache_control": {}}
    body = openai_body(base(tools=[tool], tool_choice={"type": "any", "disable_parallel_tool_use": True},
                            output_config={"effort": "high", "format": {"type": "json_schema",
                                                                         "schema": {"type": "object"}}}))
    assert body["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"},
                                                               "description": "does f"}}]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": {"type": "object"}}}
    assert body["reasoning_effort"] == "high"
    # OpenAI refuses tool_choice without tools: dropped
    assert "tool_choice" not in openai_body(base(tool_choice={"type": "auto"}))
    unknown_fields = openai_body(base(thinking={"type": "disabled"}, service_tier="auto"))
    assert set(unknown_fields) == {"model", "max_tokens", "messages"}


@pytest.mark.parametrize(("thinking", "effort", "expected"), [
    ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
    ({"type": "enabled", "budget_tokens": 8000}, None, "medium"),
    ({"type": "enabled", "budget_tokens": 32000}, None, "high"),
    ({"type": "adaptive"}, None, "medium"),
    ({"type": "adaptive"}, "low", "low"),
    (None, "max", "high"),
    ({"type": "disabled"}, "high", None),
    (None, None, None),
])
def test_thinking_and_effort_become_reasoning_effort(thinking: Any, effort: str | None, expected: str | None) -> None:
    extra: dict[str, Any] = {}
    if thinking is not None:
        extra["thinking"] = thinking
    if effort is not None:
        extra["output_config"] = {"effort": effort}
    assert openai_body(base(**extra)).get("reasoning_effort") == expected


def test_system_turns_stay_in_place_and_user_id_is_hashed() -> None:
    body = openai_body(base(system="top", metadata={"user_id": '{"device_id":"d1","session_id":"s1"}'}, messages=[
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "now"}, {"type": "text", "text": "be brief"}]},
        {"role": "assistant", "content": "ok"},
    ]))
    assert [m["role"] for m in body["messages"]] == ["system", "user", "system", "assistant"]
    assert body["messages"][2]["content"] == "now\n\nbe brief"
    assert body["user"].startswith("uid-") and "d1" not in body["user"] and len(body["user"]) == 36
    again = openai_body(base(metadata={"user_id": '{"device_id":"d1","session_id":"s1"}'}))
    assert again["user"] == body["user"]


@pytest.mark.parametrize(("body", "param"), [
    (base(max_tokens=None), "max_tokens"),
    (base(max_tokens=0), "max_tokens"),
    (base(messages=[]), "messages"),
    (base(messages=[{"role": "tool", "content": "x"}]), "messages[0].role"),
    (base(messages=[{"role": "system", "content": [{"type": "image"}]}]), "messages[0].content[0].type"),
    (base(thinking={"type": "sometimes"}), "thinking.type"),
    (base(thinking={"type": "enabled"}), "thinking.enabled.budget_tokens"),
    (base(output_config={"effort": "extreme"}), "output_config.effort"),
    (base(messages=[{"role": "user", "content": [{"type": "video"}]}]), "messages[0].content[0].type"),
    (base(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}]}]),
     "messages[0].content[0].type"),
    (base(messages=[{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "a"}]}]),
     "messages[0].content[0].type"),
    (base(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]),
     "messages[0].content[0].source.type"),
    (base(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a",
                                                  "content": [{"type": "audio"}]}]}]),
     "messages[0].content[0].content[0].type"),
    (base(system=[{"type": "image"}]), "system[0].type"),
    (base(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools[0].type"),
    (base(tools=[{"name": "f"}]), "tools[0].input_schema"),
    (base(tool_choice={"type": "sometimes"}), "tool_choice.type"),
    (base(stop_sequences="END"), "stop_sequences"),  # (how many: the model's max_stop, at the door)
    (base(api_key="sk-other"), "api_key"),
    (base(temperature=3), "temperature"),
])
def test_bad_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as info:
        chat_request(body)
    assert info.value.param == param and info.value.status_code == 400
    dotted = re.sub(r"\[(\d+)\]", r".\1", param)  # Anthropic writes messages.0.content.1.type
    assert dotted in info.value.message


def test_count_tokens_body_needs_no_max_tokens() -> None:
    body = base()
    del body["max_tokens"]
    assert "max_tokens" not in openai_body(body, need_max_tokens=False)
    with pytest.raises(BadRequestError):
        openai_body(body)


# ------------------------------------------------------------------------ responses
def completion(message: dict[str, Any], finish: str | None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up",
                           "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    if usage is not None:
        out["usage"] = usage
    return out


@pytest.mark.parametrize(("finish", "reason"), [("stop", "end_turn"), ("length", "max_tokens"),
                                                ("tool_calls", "tool_use"), ("content_filter", "refusal"),
                                                (None, "end_turn")])
def test_finish_reasons(finish: str | None, reason: str) -> None:
    msg = message_from_completion(completion({"role": "assistant", "content": "x"}, finish), "alias")
    assert msg["stop_reason"] == reason and msg["stop_sequence"] is None


def test_message_with_text_and_tool_calls() -> None:
    payload = completion({"role": "assistant", "content": "Sure.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "not json"}},
    ]}, "stop", {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12})
    msg = message_from_completion(payload, "alias")
    Message.model_validate(msg)
    assert msg["model"] == "alias" and msg["id"].startswith("msg_") and msg["stop_reason"] == "tool_use"
    assert msg["content"] == [
        {"type": "text", "text": "Sure."},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {"_raw_arguments": "not json"}},
    ]
    assert msg["usage"] == {"input_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                            "output_tokens": 5}
    no_usage = message_from_completion(completion({"role": "assistant", "content": ""}, "stop"), "a", Usage(3, 4))
    assert no_usage["usage"] == {"input_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                                 "output_tokens": 4}
    assert no_usage["content"] == []


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (413, "request_too_large"), (422, "invalid_request_error"),
    (429, "rate_limit_error"), (500, "api_error"), (502, "api_error"), (503, "overloaded_error"),
    (504, "api_error"),
])
def test_error_types(status: int, kind: str) -> None:
    assert error_type(status) == kind


def test_error_body() -> None:
    exc: GatewayError = UpstreamRateLimitError("slow down", retry_after=7)
    assert error_body(exc, "req_1") == {"type": "error", "error": {"type": "rate_limit_error",
                                                                   "message": "slow down"}, "request_id": "req_1"}


def test_cache_control_is_kept_for_anthropic_routes_and_comes_back_on_the_same_blocks() -> None:
    """``keep_cache=True`` (a route to an Anthropic upstream): the breakpoints ride on the OpenAI
    parts and the Anthropic provider puts them back where they were; without it nothing carries them."""
    from switchyard.core.models import Target
    from switchyard.providers.anthropic.requests import messages_body

    eph = {"type": "ephemeral"}
    anthropic_body = base(
        system=[{"type": "text", "text": "rules"}, {"type": "text", "text": "notes", "cache_control": eph}],
        tools=[{"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "done", "cache_control": eph},
                {"type": "text", "text": "first"},
                {"type": "text", "text": "and now?", "cache_control": eph},
            ]},
        ])
    body = openai_body(anthropic_body, keep_cache=True)
    assert body["messages"][0] == {"role": "system", "content": [
        {"type": "text", "text": "rules"}, {"type": "text", "text": "notes", "cache_control": eph}]}
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "t1",
                                   "content": [{"type": "text", "text": "done", "cache_control": eph}]}
    assert body["messages"][4]["content"][-1] == {"type": "text", "text": "and now?", "cache_control": eph}
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    request = chat_request(anthropic_body, keep_cache=True)  # /v1/chat/completions' validation accepts it
    target = Target(alias="c", provider="a", provider_type="anthropic", upstream_model="claude", timeout=5)
    sent = messages_body(request, target)
    assert sent["system"] == [{"type": "text", "text": "rules"},
                              {"type": "text", "text": "notes", "cache_control": eph}]
    assert sent["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    last = sent["messages"][-1]["content"]
    assert last[0] == {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "done"}],
                       "cache_control": eph}
    assert last[1:] == [{"type": "text", "text": "first"}, {"type": "text", "text": "and now?", "cache_control": eph}]
    # other routes: the plain translation, as before
    plain = openai_body(anthropic_body)
    assert "cache_control" not in json.dumps(plain)
    assert plain["messages"][0] == {"role": "system", "content": "rules\n\nnotes"}
