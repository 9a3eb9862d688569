"""Reading a local model's tool calls back out of its text (``local/tools.py``, pure): the same
calls however the text is split into streamed pieces, plain text in ``auto``, and the prompt a
template without tools is given."""

from __future__ import annotations

import json

import pytest

from switchyard.errors import BadRequestError
from switchyard.local.tools import CallArgs, CallStart, Text, ToolCallParser, render_messages, tool_plan

OUTPUT = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Os\\"lo}", "days": [1, {"a": 2}]}}\n'
          '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": { }}\n</tool_call>')
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
         {"type": "function", "function": {"name": "get_time"}}]


def _read(pieces: list[str], text_allowed: bool) -> tuple[ToolCallParser, list[object]]:
    parser = ToolCallParser(text_allowed=text_allowed)
    events: list[object] = []
    for piece in pieces:
        events += parser.push(piece)
    events += parser.close()
    return parser, events


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_the_calls_are_the_same_however_the_text_is_split(size: int) -> None:
    parser, events = _read([OUTPUT[i:i + size] for i in range(0, len(OUTPUT), size)], text_allowed=True)
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parser.calls] == [
        ("get_weather", {"city": 'Os"lo}', "days": [1, {"a": 2}]}), ("get_time", {})]
    assert parser.text == []
    starts = [e for e in events if isinstance(e, CallStart)]
    assert [(s.index, s.id, s.name) for s in starts] == [
        (i, c["id"], c["function"]["name"]) for i, c in enumerate(parser.calls)]
    for index, call in enumerate(parser.calls):
        args = "".join(e.text for e in events if isinstance(e, CallArgs) and e.index == index)
        assert args == call["function"]["arguments"]
    assert len({c["id"] for c in parser.calls}) == 2 and all(c["id"].startswith("call_") for c in parser.calls)


def test_auto_text_is_text_and_a_lone_angle_bracket_comes_out_at_the_end() -> None:
    parser, events = _read(["The weather ", "is <b>fine</b>", " <tool_call>"], text_allowed=True)
    assert parser.calls == [] and "".join(parser.text) == "The weather is <b>fine</b> <tool_call>"
    assert all(isinstance(e, Text) for e in events)
    parser, events = _read(["<"], text_allowed=True)
    assert events == [Text("<")] and parser.calls == []


def test_a_call_cut_off_keeps_what_it_got() -> None:
    parser, _ = _read([OUTPUT[:OUTPUT.index(", \"days\"")]], text_allowed=False)
    [call] = parser.calls
    assert call["function"]["name"] == "get_weather" and call["function"]["arguments"] == '{"city": "Os\\"lo}"'


def test_a_template_without_tools_gets_them_described_and_the_history_as_words() -> None:
    plan = tool_plan({"tools": TOOLS, "tool_choice": "auto"})
    assert plan is not None
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather and time in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "noon"}]},
    ]
    system, user, assistant, results = render_messages(history, plan, native=False)
    assert system["role"] == "system" and system["content"].startswith("Be brief.\n\n# Tools")
    assert '"name": "get_weather"' in system["content"] and "<tool_call>" in system["content"]
    assert user == history[1]
    assert assistant == {"role": "assistant", "content": 'Calling get_weather with {"city": "Oslo"}.\n'
                                                         "Calling get_time with {}."}
    assert results == {"role": "user", "content": "get_weather returned: sunny\nget_time returned: noon"}
    # tool_choice none: the history the same, the tools not described
    none = tool_plan({"tools": TOOLS, "tool_choice": "none"})
    assert render_messages(history, none, native=False)[0] == history[0]
    # a template that renders tools itself gets the history as it is, arguments as objects
    native = render_messages(history, plan, native=True)
    assert native[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"} and native[3] == history[3]


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [*TOOLS, TOOLS[0]]}, "tools[2].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}, "tools[0].function.parameters"),
    ({"tools": TOOLS, "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "any", "tools": []}}},
     "tool_choice"),
    ({"functions": [{"name": "f"}]}, "functions"),
])
def test_bad_tools_are_400s_naming_the_parameter(body: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        tool_plan(body)
    assert refused.value.param == param


def test_allowed_tools_narrows_the_tools_and_sets_the_mode() -> None:
    plan = tool_plan({"tools": TOOLS, "tool_choice": {"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}]}},
        "parallel_tool_calls": False})
    assert plan is not None and [f["name"] for f in plan.functions] == ["get_time"]
    constraint = plan.constraint()
    assert constraint is not None and constraint.schema == {
        "tools": [{"name": "get_time", "parameters": {"type": "object"}}], "parallel": False, "text": False}
