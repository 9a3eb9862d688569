"""Pure tests of the Responses request -> chat-completions translation (no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from switchyard.errors import BadRequestError
from switchyard.protocol.responses import ChatTranslation, response_from_completion, to_chat
from tests.protocol.responses_schema import strict_event, strict_response

USER = {"role": "user", "content": "hi"}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}
PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files",
         "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch" /.+/s'}}
NOTE = {"type": "custom", "name": "note"}


def translate(**body: Any) -> ChatTranslation:
    return to_chat({"model": "m", **body})


def chat(**body: Any) -> dict[str, Any]:
    return translate(**body).body


def echoed(translation: ChatTranslation) -> None:
    """The Response this request would get validates strictly (its echoed fields included)."""
    completion = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
    strict_response(response_from_completion(completion, translation))


# ------------------------------------------------------------------------------ the validator
def test_the_strict_validator_rejects_unknown_keys_wrong_types_and_wrong_event_types() -> None:
    event = {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_1", "output_index": 0,
             "content_index": 0, "delta": "hi", "logprobs": []}
    strict_event(event)
    with pytest.raises(AssertionError, match="deltaa"):
        strict_event({**event, "deltaa": "x"})
    with pytest.raises(ValidationError):
        strict_event({**event, "sequence_number": "3"})  # lenient validation would coerce it
    with pytest.raises(ValidationError):
        strict_event({**event, "type": "response.output_text.deltas"})
    response = response_from_completion({"choices": []}, translate(input="x"))
    strict_response(response)
    response["output"] = [{"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                           "content": [{"type": "output_text", "text": "a", "annotations": [], "anotations": []}]}]
    with pytest.raises(AssertionError, match=r"output\[0\]\.content\[0\]\.anotations"):
        strict_response(response)  # a typo two levels down
    response["output"] = []
    response["store"] = True  # not a field of the Response schema
    with pytest.raises(AssertionError, match="store"):
        strict_response(response)


# -------------------------------------------------------------------------------------- input
def test_string_input_and_instructions() -> None:
    got = translate(input="What is 2+2?", instructions="Be brief.")
    assert got.body == {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                                   {"role": "user", "content": "What is 2+2?"}]}
    assert got.input_items == [{"type": "message", "role": "user",
                                "content": [{"type": "input_text", "text": "What is 2+2?"}]}]
    assert got.request.model == "m" and not got.stream and got.store and got.removed_tools == ()
    echoed(got)


IMAGE = {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}
INPUT_CASES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    ("text and image parts", [{"role": "user", "content": [{"type": "input_text", "text": "what is this"}, IMAGE]}],
     [{"role": "user", "content": [{"type": "text", "text": "what is this"},
                                   {"type": "image_url", "image_url": {"url": IMAGE["image_url"], "detail": "low"}}]}]),
    ("typed message items, developer as system",
     [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
      {"type": "message", "role": "system", "content": "sys"}, {"type": "message", "role": "user", "content": "q"}],
     [{"role": "system", "content": "rules"}, {"role": "system", "content": "sys"}, {"role": "user", "content": "q"}]),
    ("assistant output_text and refusal", [USER, {"type": "message", "role": "assistant", "status": "completed",
                                                  "id": "msg_1", "content": [
        {"type": "output_text", "text": "Sure. ", "annotations": []}, {"type": "refusal", "refusal": "No."}]}],
     [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure. No."}]),
    ("function call and its output", [USER, {"type": "function_call", "call_id": "call_1", "name": "get_weather",
                                             "arguments": '{"city":"Paris"}'},
                                      {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
     [{"role": "user", "content": "hi"},
      {"role": "assistant", "content": None, "tool_calls": [
          {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]),
    ("text then two calls merge into one assistant turn",
     [USER, {"role": "assistant", "content": "Checking."},
      {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
      {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
      {"type": "function_call_output", "call_id": "a", "output": "1"},
      {"type": "function_call_output", "call_id": "b", "output": [{"type": "input_text", "text": "2"}]}],
     [{"role": "user", "content": "hi"},
      {"role": "assistant", "content": "Checking.", "tool_calls": [
          {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
          {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "a", "content": "1"}, {"role": "tool", "tool_call_id": "b", "content": "2"}]),
    ("an image in a tool output follows as a user message",
     [USER, {"type": "function_call", "call_id": "a", "name": "shot", "arguments": "{}"},
      {"type": "function_call_output", "call_id": "a", "output": [{"type": "input_text", "text": "here"}, IMAGE]},
      {"role": "user", "content": "and?"}],
     [{"role": "user", "content": "hi"},
      {"role": "assistant", "content": None, "tool_calls": [
          {"id": "a", "type": "function", "function": {"name": "shot", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "a", "content": "here"},
      {"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE["image_url"], "detail": "low"}}]},
      {"role": "user", "content": "and?"}]),
    ("a file part", [{"role": "user", "content": [
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}]}],
     [{"role": "user", "content": [{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE",
                                                             "filename": "a.pdf"}}]}]),
    ("custom tool call and output", [USER, {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch",
                                            "input": '*** Begin Patch\n"quoted"'},
                                     {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done!"}],
     [{"role": "user", "content": "hi"},
      {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
          "name": "apply_patch",
          "arguments": json.dumps({"input": '*** Begin Patch\n"quoted"'}, separators=(",", ":"))}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "Done!"}]),
    ("reasoning is dropped by default", [USER, {"type": "reasoning", "id": "rs_1", "summary": [],
                                                "content": [{"type": "reasoning_text", "text": "think"}]},
                                         {"role": "assistant", "content": "ok"}],
     [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]),
]


@pytest.mark.parametrize(("items", "messages"), [c[1:] for c in INPUT_CASES], ids=[c[0] for c in INPUT_CASES])
def test_input_items(items: list[dict[str, Any]], messages: list[dict[str, Any]]) -> None:
    assert chat(input=items)["messages"] == messages


def test_reasoning_goes_on_the_assistant_message_when_asked() -> None:
    items = [USER, {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "short"}],
                    "content": [{"type": "reasoning_text", "text": "long thought"}]},
             {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "a", "output": "1"},
             {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "only a summary"}]},
             {"role": "assistant", "content": "done"}]
    for field in ("reasoning_content", "reasoning"):
        got = to_chat({"model": "m", "input": items}, reasoning_history=field).body["messages"]
        assert got[1][field] == "long thought" and got[1]["tool_calls"][0]["id"] == "a"
        assert got[3] == {"role": "assistant", "content": "done", field: "only a summary"}


def test_item_references_resolve_through_the_callback_and_history_comes_first() -> None:
    known = {"msg_9": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "earlier",
                                                                            "annotations": []}]}}
    got = to_chat({"model": "m", "instructions": "sys", "input": [{"type": "item_reference", "id": "msg_9"},
                                                                   {"id": "msg_9"}, USER]},
                  history=[{"role": "user", "content": "first"}], resolve=known.get)
    assert got.body["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "first"},
                                    {"role": "assistant", "content": "earlierearlier"},
                                    {"role": "user", "content": "hi"}]
    with pytest.raises(BadRequestError) as err:
        to_chat({"model": "m", "input": [USER, {"type": "item_reference", "id": "msg_x"}]}, resolve=known.get)
    assert err.value.param == "input[1].id"


# -------------------------------------------------------------------------------------- tools
def test_function_and_custom_tools_and_hosted_tools_removed() -> None:
    got = translate(input="hi", tools=[{"type": "web_search"}, WEATHER, PATCH, NOTE, {"type": "image_generation"}])
    assert got.removed_tools == ("web_search", "image_generation")
    function, patch, note = got.body["tools"]
    assert function == {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER["parameters"],
        "strict": True}}
    assert patch["function"]["name"] == "apply_patch"
    assert patch["function"]["parameters"] == {
        "type": "object", "properties": {"input": {"type": "string", "description": patch["function"]["parameters"][
            "properties"]["input"]["description"]}}, "required": ["input"], "additionalProperties": False}
    assert 'start: "*** Begin Patch" /.+/s' in patch["function"]["description"]
    assert patch["function"]["description"].startswith("Edit files")
    assert note["function"]["description"] == "Freeform text input."
    assert got.tools.kind("apply_patch") == "custom" and got.tools.kind("get_weather") == "function"
    assert [t["type"] for t in got.echo["tools"]] == ["function", "custom", "custom"]
    echoed(got)


def test_only_hosted_tools_leave_no_tools_and_no_tool_choice() -> None:
    got = translate(input="hi", tools=[{"type": "web_search_preview"}, {"type": "file_search",
                                                                          "vector_store_ids": ["vs"]}],
                    tool_choice="auto", parallel_tool_calls=True)
    assert got.body == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert got.removed_tools == ("web_search_preview", "file_search")


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", "auto"), ("none", "none"), ("required", "required"),
    ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ({"type": "custom", "name": "apply_patch"}, {"type": "function", "function": {"name": "apply_patch"}}),
])
def test_tool_choice(choice: Any, expected: Any) -> None:
    got = translate(input="hi", tools=[WEATHER, PATCH], tool_choice=choice, parallel_tool_calls=False)
    assert got.body["tool_choice"] == expected and got.body["parallel_tool_calls"] is False
    assert len(got.body["tools"]) == 2
    echoed(got)


def test_allowed_tools_narrows_the_tools_offered() -> None:
    choice = {"type": "allowed_tools", "mode": "required",
              "tools": [{"type": "custom", "name": "apply_patch"}, {"type": "web_search"}]}
    got = translate(input="hi", tools=[WEATHER, PATCH, {"type": "web_search"}], tool_choice=choice)
    assert got.body["tool_choice"] == "required"
    assert [t["function"]["name"] for t in got.body["tools"]] == ["apply_patch"]
    echoed(got)


# ------------------------------------------------------------------------------ other fields
def test_generation_fields() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}
    got = translate(input="hi", text={"format": {"type": "json_schema", "name": "out", "schema": schema,
                                                 "strict": True}, "verbosity": "low"},
                    reasoning={"effort": "high", "summary": "auto"}, max_output_tokens=300, temperature=0.2,
                    top_p=0.9, metadata={"ticket": "42"}, prompt_cache_key="k", safety_identifier="u-1",
                    user="legacy", stream=True, store=False, previous_response_id="resp_1",
                    include=["reasoning.encrypted_content"], truncation="auto", service_tier="auto")
    assert got.body == {
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}},
        "reasoning_effort": "high", "max_tokens": 300, "temperature": 0.2, "top_p": 0.9, "prompt_cache_key": "k",
        "safety_identifier": "u-1", "user": "legacy", "stream": True, "stream_options": {"include_usage": True}}
    assert got.stream and not got.store and got.previous_response_id == "resp_1" and got.ignored == ()
    assert got.include == ("reasoning.encrypted_content",)
    assert got.request.max_tokens == 300 and got.request.include_usage
    assert got.echo["metadata"] == {"ticket": "42"} and got.echo["text"]["verbosity"] == "low"
    echoed(got)
    assert chat(input="hi", text={"format": {"type": "json_object"}})["response_format"] == {"type": "json_object"}
    assert "response_format" not in chat(input="hi", text={"format": {"type": "text"}})
    assert chat(input="hi", top_logprobs=3)["top_logprobs"] == 3
    assert chat(input="hi", include=["message.output_text.logprobs"])["logprobs"] is True


ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1", "detail": "auto"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]},
     "input[0].content[0].file_url"),
    ({"input": [USER, {"type": "web_search_call", "id": "ws_1", "status": "completed"}]}, "input[1].type"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "system", "content": [IMAGE]}]}, "input[0].content[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].id"),
    ({"input": 3}, "input"), ({}, "input"), ({"input": "x", "model": ""}, "model"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"), ({"input": "x", "background": True}, "background"),
    ({"input": "x", "tools": [{"type": "namespace", "name": "ns", "tools": []}]}, "tools[0].tools"),
    ({"input": "x", "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "web_search"}]}]},
     "tools[0].tools[0].type"),
    ({"input": "x", "tools": [{"type": "bogus", "name": "b"}]}, "tools[0].type"),
    ({"input": "x", "tools": [WEATHER, {**WEATHER}]}, "tools[1].name"),
    ({"input": "x", "tools": [{**PATCH, "format": {"type": "grammar", "syntax": "ebnf", "definition": "x"}}]},
     "tools[0].format.syntax"),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name"),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "custom", "name": "get_weather"}}, "tool_choice.name"),
    ({"input": "x", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search_preview"}},
     "tool_choice.type"),
    ({"input": "x", "tools": [{"type": "web_search"}], "tool_choice": "required"}, "tool_choice"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "temperature": "hot"}, "temperature"), ({"input": "x", "temperature": 7}, "temperature"),
    ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "o"}}}, "text.format.schema"),
    ({"input": "x", "include": ["everything"]}, "include[0]"),
    ({"input": "x", "metadata": {"a": 1}}, "metadata.a"), ({"input": "x", "stream": "yes"}, "stream"),
    ({"input": "x", "truncation": "middle"}, "truncation"),
]


@pytest.mark.parametrize(("body", "param"), ERRORS, ids=[p for _, p in ERRORS])
def test_invalid_requests_are_400s_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as err:
        to_chat({"model": "m", **body})
    assert err.value.param == param and err.value.status_code == 400
    assert param in err.value.message


def test_hosted_tools_can_be_refused_and_steering_fields_are() -> None:
    with pytest.raises(BadRequestError) as err:
        to_chat({"model": "m", "input": "x", "tools": [WEATHER, {"type": "code_interpreter"}]}, hosted_tools="reject")
    assert err.value.param == "tools[1].type" and "code_interpreter" in err.value.message
    with pytest.raises(BadRequestError) as err:
        to_chat({"model": "m", "input": "x", "api_base": "http://evil"})
    assert err.value.param == "api_base" and err.value.code == "field_not_allowed"
    with pytest.raises(BadRequestError):
        to_chat(["not", "an", "object"])


def test_unknown_fields_are_not_forwarded_and_are_reported() -> None:
    got = translate(input="x", frobnicate=1, client_metadata={"k": "v"}, service_tier="flex", aardvark=None)
    assert got.ignored == ("aardvark", "frobnicate")
    assert got.body == {"model": "m", "messages": [{"role": "user", "content": "x"}]}
