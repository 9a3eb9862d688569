"""Pure tests of chat completions / chat stream chunks -> Responses objects and events (no server).

Every Response and every event is validated strictly against the openai SDK's generated types.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchyard.core.usage import Usage
from switchyard.errors import RateLimitError, UpstreamError
from switchyard.protocol.responses import ChatTranslation, ResponseStream, response_from_completion, sse, to_chat
from tests.protocol.responses_schema import strict_event, strict_response

PATCH = {"type": "custom", "name": "apply_patch", "format": {"type": "text"}}
WEATHER = {"type": "function", "name": "get_weather", "strict": None,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
USAGE = {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27,
         "prompt_tokens_details": {"cached_tokens": 16}, "completion_tokens_details": {"reasoning_tokens": 3}}
RESPONSE_USAGE = {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 16, "cache_write_tokens": 0},
                  "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 27}


def translation(**body: Any) -> ChatTranslation:
    return to_chat({"model": "m", "input": "hi", "tools": [WEATHER, PATCH], **body})


def completion(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = USAGE,
               **choice: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up", "choices": [
        {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish, **choice}]}
    if usage is not None:
        out["usage"] = usage
    return out


def respond(message: dict[str, Any], finish: str = "stop", **kw: Any) -> dict[str, Any]:
    got = response_from_completion(completion(message, finish), translation(**kw), response_id="resp_1",
                                   created_at=1000)
    strict_response(got)
    return got


# ----------------------------------------------------------------------------- non-streaming
def test_text_response_and_usage() -> None:
    got = respond({"content": "Hello!"})
    assert got["id"] == "resp_1" and got["object"] == "response" and got["status"] == "completed"
    assert got["created_at"] == 1000 and got["completed_at"] >= 1000 and got["model"] == "m"
    [message] = got["output"]
    assert message["type"] == "message" and message["status"] == "completed" and message["id"].startswith("msg_")
    assert message["content"] == [{"type": "output_text", "text": "Hello!", "annotations": []}]
    assert got["usage"] == RESPONSE_USAGE
    assert got["tool_choice"] == "auto" and got["parallel_tool_calls"] is True
    assert got["text"] == {"format": {"type": "text"}} and got["truncation"] == "disabled"


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_incomplete(finish: str, reason: str) -> None:
    got = respond({"content": "Once upon"}, finish, max_output_tokens=16)
    assert got["status"] == "incomplete" and got["incomplete_details"] == {"reason": reason}
    assert got["output"][0]["status"] == "incomplete" and "completed_at" not in got
    assert got["max_output_tokens"] == 16


def test_refusal_and_reasoning() -> None:
    got = respond({"content": None, "refusal": "I can't help with that.", "reasoning_content": "Policy says no."})
    reasoning, message = got["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == []
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Policy says no."}]
    assert message["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]
    assert respond({"content": "x", "reasoning": "via the other field"})["output"][0]["content"][0]["text"] == (
        "via the other field")


def test_function_and_custom_tool_calls() -> None:
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hello \"world\"\n*** End Patch"
    got = respond({"content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "apply_patch",
                                                          "arguments": json.dumps({"input": patch})}}]}, "tool_calls")
    function, custom = got["output"]
    assert {k: function[k] for k in ("type", "call_id", "name", "arguments", "status")} == {
        "type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}',
        "status": "completed"}
    assert function["id"].startswith("fc_")
    assert {k: custom[k] for k in ("type", "call_id", "name", "input")} == {
        "type": "custom_tool_call", "call_id": "call_b", "name": "apply_patch", "input": patch}


def test_custom_tool_round_trip() -> None:
    """Request with a custom tool -> the model calls it -> custom_tool_call -> its output fed back."""
    first = translation(input="add a file")
    assert first.body["tools"][1]["function"]["parameters"]["required"] == ["input"]
    patch = "*** Begin Patch\n*** Add File: b.txt\n+\\ backslash\n*** End Patch"
    answer = response_from_completion(completion({"content": None, "tool_calls": [
        {"id": "call_p", "type": "function", "function": {"name": "apply_patch",
                                                          "arguments": json.dumps({"input": patch})}}]}, "tool_calls"),
        first)
    strict_response(answer)
    [call] = answer["output"]
    assert call["input"] == patch
    output = {"type": "custom_tool_call_output", "call_id": call["call_id"], "output": "Success. Updated b.txt"}
    second = to_chat({"model": "m", "tools": [WEATHER, PATCH],
                      "input": [{"role": "user", "content": "add a file"}, call, output]})
    assert second.body["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_p", "type": "function", "function": {
            "name": "apply_patch", "arguments": json.dumps({"input": patch}, separators=(",", ":"))}}]},
        {"role": "tool", "tool_call_id": "call_p", "content": "Success. Updated b.txt"}]


def test_reasoning_round_trip() -> None:
    answer = respond({"content": "4", "reasoning_content": "2+2 is 4."})
    history = [{"role": "user", "content": "2+2?"}, *answer["output"]]
    back = to_chat({"model": "m", "input": "and 3+3?"}, history=history, reasoning_history="reasoning_content")
    assert back.body["messages"] == [{"role": "user", "content": "2+2?"},
                                     {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4."},
                                     {"role": "user", "content": "and 3+3?"}]


def test_json_schema_echo_logprobs_and_fallback_usage() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    tr = translation(text={"format": {"type": "json_schema", "name": "out", "schema": schema}},
                     include=["message.output_text.logprobs"], top_logprobs=1, metadata={"k": "v"},
                     reasoning={"effort": "low"}, instructions="sys")
    logprobs = {"content": [{"token": "{", "logprob": -0.1, "bytes": [123],
                             "top_logprobs": [{"token": "{", "logprob": -0.1, "bytes": [123]}]}]}
    got = response_from_completion(completion({"content": '{"a":1}'}, usage=None, logprobs=logprobs), tr,
                                   usage=Usage(prompt_tokens=5, completion_tokens=2))
    strict_response(got)
    assert got["text"]["format"] == {"type": "json_schema", "name": "out", "schema": schema}
    assert got["output"][0]["content"][0]["logprobs"] == [
        {"token": "{", "logprob": -0.1, "bytes": [123], "top_logprobs": [{"token": "{", "logprob": -0.1,
                                                                          "bytes": [123]}]}]
    assert got["usage"]["input_tokens"] == 5 and got["usage"]["total_tokens"] == 7
    assert got["metadata"] == {"k": "v"} and got["reasoning"] == {"effort": "low"} and got["instructions"] == "sys"
    assert got["top_logprobs"] == 1


# ---------------------------------------------------------------------------------- streaming
HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up"}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {**HEAD, "choices": choices, **extra}


def call(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        out.update(id=call_id, type="function")
        out["function"]["name"] = name
    return {"tool_calls": [out]}


def run(chunks: list[dict[str, Any]], tr: ChatTranslation | None = None, end: Any = None) -> list[dict[str, Any]]:
    """Feed the chunks, end the stream, and check every event on the wire."""
    stream = ResponseStream(tr or translation(stream=True), response_id="resp_s", created_at=1000)
    events = [e for c in chunks for e in stream.feed(c)]
    events += stream.finish() if end is None else stream.fail(end)
    assert stream.ended and stream.feed(chunk({"content": "late"})) == [] and stream.finish() == []
    out = []
    for i, event in enumerate(events):
        frame = sse(event).decode()
        head, data = frame.removesuffix("\n\n").split("\n")
        parsed = json.loads(data.removeprefix("data: "))
        assert head == f"event: {parsed['type']}" and parsed["sequence_number"] == i
        strict_event(parsed)
        out.append(parsed)
    assert out[0]["type"] == "response.created" and out[1]["type"] == "response.in_progress"
    assert out[-1]["response"] == stream.response
    return out


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


def test_text_stream() -> None:
    events = run([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
                  chunk({}, "stop"), chunk(None, usage=USAGE)])
    assert kinds(events) == ["created", "in_progress", "output_item.added", "content_part.added",
                             "output_text.delta", "output_text.delta", "output_text.done", "content_part.done",
                             "output_item.done", "completed"]
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hel", "lo"]
    assert events[6]["text"] == "Hello" and events[2]["item"]["status"] == "in_progress"
    assert events[2]["item"]["content"] == [] and events[3]["part"]["text"] == ""  # not later mutated
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["usage"] == RESPONSE_USAGE
    assert final["output"][0]["content"][0]["text"] == "Hello" and final["output"][0]["status"] == "completed"
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []


def test_function_call_stream_with_argument_deltas() -> None:
    fragments = ['{"ci', 'ty": ', '"Par', 'is"}']
    events = run([chunk(call(0, "", "call_a", "get_weather")), *[chunk(call(0, f)) for f in fragments],
                  chunk({}, "tool_calls")], end=None)
    assert kinds(events) == ["created", "in_progress", "output_item.added", *["function_call_arguments.delta"] * 4,
                             "function_call_arguments.done", "output_item.done", "completed"]
    assert [e["delta"] for e in events[3:7]] == fragments
    assert events[7]["arguments"] == '{"city": "Paris"}'
    assert events[8]["item"]["call_id"] == "call_a" and events[8]["item"]["status"] == "completed"
    assert events[2]["item"]["arguments"] == "" and events[2]["item"]["status"] == "in_progress"


def test_custom_tool_call_stream_decodes_the_input_as_it_arrives() -> None:
    patch = '*** Begin Patch\n+say "héllo" \\ 😀\n*** End Patch'
    raw = json.dumps({"input": patch})  # escapes: \n \" \\ \u00e9 and a surrogate pair
    assert "\\ud83d\\ude00" in raw
    fragments = [raw[i: i + 3] for i in range(0, len(raw), 3)]  # splits escapes and the prefix
    events = run([chunk(call(0, "", "call_p", "apply_patch")), *[chunk(call(0, f)) for f in fragments],
                  chunk({}, "tool_calls"), chunk(None, usage=USAGE)])
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert len(deltas) > 5 and "".join(deltas) == patch
    done = next(e for e in events if e["type"] == "response.custom_tool_call_input.done")
    assert done["input"] == patch
    item = events[-1]["response"]["output"][0]
    assert item["type"] == "custom_tool_call" and item["input"] == patch and item["call_id"] == "call_p"


def test_custom_tool_call_with_another_argument_shape_comes_whole_at_the_end() -> None:
    events = run([chunk(call(0, '{"patch": "abc"}', "call_p", "apply_patch")), chunk({}, "tool_calls")])
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert deltas == ["abc"] and events[-1]["response"]["output"][0]["input"] == "abc"


def test_reasoning_then_text() -> None:
    events = run([chunk({"reasoning_content": "Think"}), chunk({"reasoning_content": "ing."}),
                  chunk({"content": "Answer."}), chunk({}, "stop")])
    assert kinds(events) == ["created", "in_progress",
                             "output_item.added", "content_part.added", "reasoning_text.delta", "reasoning_text.delta",
                             "reasoning_text.done", "content_part.done", "output_item.done",
                             "output_item.added", "content_part.added", "output_text.delta", "output_text.done",
                             "content_part.done", "output_item.done", "completed"]
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Thinking."}]
    assert events[6]["output_index"] == 0 and events[11]["output_index"] == 1
    assert message["content"][0]["text"] == "Answer."


def test_two_parallel_tool_calls_with_interleaved_fragments() -> None:
    events = run([chunk({"content": "Checking."}), chunk(call(0, '{"city":', "call_a", "get_weather")),
                  chunk(call(1, '{"input":"x', "call_b", "apply_patch")), chunk(call(0, '"Oslo"}')),
                  chunk(call(1, 'y"}')), chunk({}, "tool_calls")])
    function_deltas = [(e["output_index"], e["delta"]) for e in events
                       if e["type"] == "response.function_call_arguments.delta"]
    custom_deltas = [(e["output_index"], e["delta"]) for e in events
                     if e["type"] == "response.custom_tool_call_input.delta"]
    assert function_deltas == [(1, '{"city":'), (1, '"Oslo"}')] and custom_deltas == [(2, "x"), (2, "y")]
    message, function, custom = events[-1]["response"]["output"]
    assert message["content"][0]["text"] == "Checking."
    assert function["arguments"] == '{"city":"Oslo"}' and custom["input"] == "xy"
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] == [0, 1, 2]


def test_whole_calls_at_a_reused_index_stay_apart() -> None:
    events = run([chunk(call(0, '{"city":"Oslo"}', "call_1", "get_weather")),
                  chunk(call(0, '{"city":"Rome"}', "call_2", "get_weather")), chunk({}, "tool_calls")])
    first, second = events[-1]["response"]["output"]
    assert (first["call_id"], first["arguments"]) == ("call_1", '{"city":"Oslo"}')
    assert (second["call_id"], second["arguments"]) == ("call_2", '{"city":"Rome"}')


def test_refusal_stream_and_length() -> None:
    events = run([chunk({"content": "Well"}), chunk({"refusal": "No."}), chunk({}, "length")])
    assert kinds(events)[2:] == ["output_item.added", "content_part.added", "output_text.delta", "output_text.done",
                                 "content_part.done", "content_part.added", "refusal.delta", "refusal.done",
                                 "content_part.done", "output_item.done", "incomplete"]
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"
    assert final["output"][0]["content"][1] == {"type": "refusal", "refusal": "No."}
    assert events[8]["content_index"] == 1 and events[3]["content_index"] == 0


def test_logprobs_in_stream() -> None:
    tr = translation(stream=True, include=["message.output_text.logprobs"], top_logprobs=1)
    entry = {"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": [{"token": "Hi", "logprob": -0.5}]}
    events = run([{**chunk({"content": "Hi"}), "choices": [{"index": 0, "delta": {"content": "Hi"},
                                                            "logprobs": {"content": [entry]}, "finish_reason": None}]},
                  chunk({}, "stop")], tr)
    delta = next(e for e in events if e["type"] == "response.output_text.delta")
    assert delta["logprobs"] == [{"token": "Hi", "logprob": -0.5, "top_logprobs": [{"token": "Hi", "logprob": -0.5}]}]
    part = events[-1]["response"]["output"][0]["content"][0]
    assert part["logprobs"][0]["bytes"] == [72, 105]


def test_failure_mid_stream() -> None:
    events = run([chunk({"content": "Partial"}), chunk({"content": " answer"})],
                 end=UpstreamError("The upstream closed the connection."))
    assert kinds(events)[-1] == "failed"
    final = events[-1]["response"]
    assert final["status"] == "failed" and final["error"] == {"code": "server_error",
                                                              "message": "The upstream closed the connection."}
    assert final["output"][0]["status"] == "incomplete"
    assert final["output"][0]["content"][0]["text"] == "Partial answer"


def test_error_chunk_and_failure_before_any_chunk() -> None:
    stream = ResponseStream(translation(stream=True))
    events = stream.feed(chunk({"content": "a"})) + stream.feed({"error": {"message": "boom", "type": "server_error"}})
    assert [e["type"] for e in events][-1] == "response.failed" and stream.ended
    assert events[-1]["response"]["error"]["message"] == "boom"
    for event in events:
        strict_event(json.loads(json.dumps(event)))
    early = ResponseStream(translation(stream=True)).fail(RateLimitError("slow down"))
    assert [e["type"] for e in early] == ["response.created", "response.in_progress", "response.failed"]
    assert early[-1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_usage_given_at_finish_when_no_chunk_carries_it() -> None:
    stream = ResponseStream(translation(stream=True))
    events = stream.feed(chunk({"content": "x"})) + stream.finish(Usage(prompt_tokens=3, completion_tokens=1))
    strict_event(events[-1])
    assert events[-1]["response"]["usage"]["total_tokens"] == 4
    empty = ResponseStream(translation(stream=True)).finish()
    assert [e["type"] for e in empty] == ["response.created", "response.in_progress", "response.completed"]
    assert empty[-1]["response"]["output"] == [] and empty[-1]["response"]["usage"] is None


def test_a_stream_ends_with_the_response_the_same_completion_gives_without_streaming() -> None:
    def shape(response: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in item.items() if k != "id"} for item in response["output"]]

    patch = 'line "one"\nline two'
    whole = completion({"reasoning_content": "Plan.", "content": "Doing it.", "tool_calls": [
        {"id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_p", "type": "function", "function": {"name": "apply_patch",
                                                          "arguments": json.dumps({"input": patch})}}]}, "tool_calls")
    streamed = run([chunk({"reasoning_content": "Plan."}), chunk({"content": "Doing it."}),
                    chunk(call(0, '{"city":"Oslo"}', "call_w", "get_weather")),
                    chunk(call(1, json.dumps({"input": patch}), "call_p", "apply_patch")),
                    chunk({}, "tool_calls"), chunk(None, usage=USAGE)])[-1]["response"]
    plain = response_from_completion(whole, translation(stream=True), response_id="resp_s", created_at=1000)
    assert shape(streamed) == shape(plain)
    assert streamed["usage"] == plain["usage"] and streamed["status"] == plain["status"] == "completed"


CRM = {"type": "namespace", "name": "crm", "description": "Customer records.",
       "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}},
                 {"type": "custom", "name": "note", "description": "Write a note."}]}


def test_namespace_tools_round_trip() -> None:
    """A namespace's members are chat functions ``crm__<name>``; calls come back with ``namespace``."""
    first = to_chat({"model": "m", "input": "find Ada", "tools": [WEATHER, CRM]})
    assert [t["function"]["name"] for t in first.body["tools"]] == ["get_weather", "crm__lookup", "crm__note"]
    answer = response_from_completion(completion({"content": None, "tool_calls": [
        {"id": "call_l", "type": "function", "function": {"name": "crm__lookup", "arguments": "{}"}},
        {"id": "call_n", "type": "function", "function": {"name": "crm__note", "arguments": '{"input": "hi"}'}},
    ]}, "tool_calls"), first)
    strict_response(answer)
    lookup, note = answer["output"]
    assert (lookup["type"], lookup["name"], lookup["namespace"]) == ("function_call", "lookup", "crm")
    assert (note["type"], note["name"], note["namespace"], note["input"]) == ("custom_tool_call", "note", "crm", "hi")
    assert answer["tools"][1] == {"type": "namespace", "name": "crm", "description": "Customer records.", "tools": [
        {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}},
        {"type": "custom", "name": "note", "description": "Write a note."}]}
    second = to_chat({"model": "m", "tools": [WEATHER, CRM], "input": [
        {"role": "user", "content": "find Ada"}, lookup, {"type": "function_call_output", "call_id": "call_l",
                                                         "output": "Ada"}]})
    assert second.body["messages"][1]["tool_calls"][0]["function"]["name"] == "crm__lookup"


def test_namespace_tool_call_stream() -> None:
    tr = to_chat({"model": "m", "input": "find Ada", "tools": [CRM], "stream": True})
    events = run([chunk(call(0, "", "call_l", "crm__lookup")), chunk(call(0, "{}")), chunk({}, "tool_calls")], tr)
    done = next(e for e in events if e["type"] == "response.output_item.done")["item"]
    assert (done["name"], done["namespace"], done["arguments"]) == ("lookup", "crm", "{}")


def test_tool_choice_names_a_namespace_member() -> None:
    named = to_chat({"model": "m", "input": "x", "tools": [CRM],
                     "tool_choice": {"type": "function", "name": "lookup", "namespace": "crm"}})
    assert named.body["tool_choice"] == {"type": "function", "function": {"name": "crm__lookup"}}
    member = {"type": "custom", "name": "note", "namespace": "crm"}
    allowed = to_chat({"model": "m", "input": "x", "tools": [WEATHER, CRM],
                       "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [member]}})
    assert [t["function"]["name"] for t in allowed.body["tools"]] == ["crm__note"]
    assert allowed.body["tool_choice"] == "required"
