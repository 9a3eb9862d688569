"""Function tools on local models: the request's tools in engine terms, and the model's output back
as OpenAI ``tool_calls``. Pure.

A local model calls a tool in the Hermes format (Qwen2.5/3, Hermes, SmolLM2/3 are trained on it)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Oslo"}}
    </tool_call>

- **The prompt.** A chat template that renders ``tools`` itself in that format gets them (and the
  history as it is). Any other template gets the tools described in the system message, the
  assistant's earlier calls as its words and tool results as user turns (every chat template
  takes user and assistant turns; not all take ``tool``): a small model shown its earlier calls
  in the call format copies them, and calls again instead of answering with the result. With
  ``tool_choice: none`` the tools are not described at all.
- **Decoding.** A grammar (:class:`~switchyard.local.engine.Constraint` ``tool_calls``) holds
  the output to that format, with each call's ``arguments`` valid under its tool's JSON schema:
  ``required`` and a named function must call (a named one only that function); ``auto`` may
  instead answer in text, which then cannot start with ``<``; without ``parallel_tool_calls``
  there is exactly one call. ``none`` is decoded freely.
- **The output.** :class:`ToolCallParser` reads the text as it streams: answer text, then each
  call's name once it is known and its ``arguments`` text as it arrives (the streamed pieces join
  to exactly the whole answer's).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from switchyard.errors import BadRequestError
from switchyard.local.engine import Constraint

__all__ = [
    "CALL_CLOSE", "CALL_OPEN", "CALL_SEP", "MAX_PARALLEL_CALLS", "CallArgs", "CallStart", "Event", "Text",
    "ToolCallParser", "ToolPlan", "call_id", "render_messages", "takes_tools", "tool_plan", "tools_block",
]

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
CALL_SEP = "\n"  # between the calls of one turn
MAX_PARALLEL_CALLS = 8  # calls in one turn: a small model would otherwise repeat its call until max_tokens

Choice = Literal["auto", "required", "none"]


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """The function tools a request offers and how the model may use them."""

    functions: tuple[Mapping[str, Any], ...]  # chat ``function`` objects: name, parameters, description
    choice: Choice
    named: str | None  # tool_choice names this function (choice is then "required")
    parallel: bool

    def constraint(self) -> Constraint | None:
        """The grammar that holds the output to this plan (None: decoded freely)."""
        if self.choice == "none":
            return None
        offered = [f for f in self.functions if self.named is None or f["name"] == self.named]
        schema = {
            "tools": [{"name": f["name"], "parameters": f.get("parameters") or {"type": "object"}} for f in offered],
            "parallel": self.parallel and self.named is None,
            "text": self.choice == "auto",
        }
        return Constraint("tool_calls", schema)


def _bad(param: str, message: str) -> BadRequestError:
    return BadRequestError(message, param=param)


def tool_plan(body: Mapping[str, Any]) -> ToolPlan | None:
    """The tools of a chat body (None: it offers none). Bad tools or choices are a 400."""
    if body.get("functions"):
        raise _bad("functions", "Local models take 'tools', not the legacy 'functions'.")
    raw = body.get("tools")
    if not raw:
        return None
    if not isinstance(raw, list):
        raise _bad("tools", "'tools' must be a list.")
    functions: list[Mapping[str, Any]] = []
    names: set[str] = set()
    for i, tool in enumerate(raw):
        at = f"tools[{i}]"
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(
                tool.get("function"), Mapping):
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            raise _bad(f"{at}.type", f"Local models take function tools only, not {kind!r}.")
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"{at}.function.name", "A function tool needs a name.")
        if name in names:
            raise _bad(f"{at}.function.name", f"Two tools are named {name!r}.")
        params = function.get("parameters")
        if params is not None and not isinstance(params, Mapping):
            raise _bad(f"{at}.function.parameters", "The parameters must be a JSON Schema object.")
        names.add(name)
        functions.append(function)
    choice: Choice = "auto"
    named: str | None = None
    raw_choice = body.get("tool_choice")
    if raw_choice in ("auto", "required", "none"):
        choice = raw_choice
    elif isinstance(raw_choice, Mapping) and raw_choice.get("type") == "function":
        function = raw_choice.get("function")
        named = function.get("name") if isinstance(function, Mapping) else None
        if named not in names:
            raise _bad("tool_choice", f"tool_choice names a function that is not in tools: {named!r}.")
        choice = "required"
    elif isinstance(raw_choice, Mapping) and raw_choice.get("type") == "allowed_tools":
        allowed = raw_choice.get("allowed_tools")
        mode = allowed.get("mode") if isinstance(allowed, Mapping) else None
        listed = allowed.get("tools") if isinstance(allowed, Mapping) else None
        if mode not in ("auto", "required") or not isinstance(listed, list):
            raise _bad("tool_choice", "allowed_tools needs a mode (auto or required) and a list of tools.")
        keep = {(t.get("function") or {}).get("name") for t in listed if isinstance(t, Mapping)}
        if not keep <= names:
            raise _bad("tool_choice", "allowed_tools names a function that is not in tools.")
        functions = [f for f in functions if f["name"] in keep]
        choice = mode
    elif raw_choice is not None:
        raise _bad("tool_choice", "tool_choice must be auto, none, required or a function.")
    parallel = body.get("parallel_tool_calls")
    if not functions:
        return None
    return ToolPlan(functions=tuple(functions), choice=choice, named=named, parallel=parallel is not False)


# -- the prompt ---------------------------------------------------------------------------------

def takes_tools(template: str | None) -> bool:
    """Whether a chat template renders ``tools``, and calls in this module's format, itself."""
    return bool(template) and "tools" in str(template) and CALL_OPEN in str(template)


def tools_block(functions: Sequence[Mapping[str, Any]]) -> str:
    """The system message's description of the tools (the words Qwen2.5's template uses)."""
    listed = "\n".join(json.dumps({"type": "function", "function": dict(f)}, ensure_ascii=False) for f in functions)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{listed}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        f"{CALL_OPEN}{CALL_CLOSE} XML tags:\n"
        f'{CALL_OPEN}\n{{"name": <function-name>, "arguments": <args-json-object>}}\n{CALL_CLOSE}'
    )


def _arguments(raw: object) -> object:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _call_text(call: Mapping[str, Any]) -> str:
    """An earlier call, as the assistant's words (not the call format: a small model shown its own
    calls in that format copies them, and calls again instead of answering with the result)."""
    function = call.get("function")
    if not isinstance(function, Mapping):
        return ""
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return f"Calling {function.get('name')} with {arguments}."


def _text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") if isinstance(p, Mapping) else str(p) for p in content)
    return str(content)


def render_messages(messages: Sequence[Mapping[str, Any]], plan: ToolPlan | None,
                    native: bool) -> list[dict[str, Any]]:
    """The messages a chat template is given. ``native``: the template renders ``tools`` and the
    calls itself (only the calls' ``arguments`` become objects, as Hugging Face templates expect).
    Otherwise an assistant's calls become its words (``Calling f with {...}.``), each tool result
    a user turn (``f returned: ...``; the results of one turn's calls in one), and the tools are
    described in the system message (unless there is no plan, or its choice is ``none``)."""
    out: list[dict[str, Any]] = []
    names: dict[object, object] = {}  # call id -> function name, for the results
    result_turn = False  # out[-1] is a user turn of tool results
    for message in messages:
        role = message.get("role")
        calls = message.get("tool_calls")
        if native:
            if role == "assistant" and isinstance(calls, list) and calls:
                message = {**message, "tool_calls": [
                    {**c, "function": {**c["function"], "arguments": _arguments(c["function"].get("arguments"))}}
                    if isinstance(c, Mapping) and isinstance(c.get("function"), Mapping) else c for c in calls]}
            out.append(dict(message))
            continue
        if role == "assistant" and isinstance(calls, list) and calls:
            for call in calls:
                if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                    names[call.get("id")] = call["function"].get("name")
            said = _text(message.get("content"))
            written = "\n".join(_call_text(c) for c in calls if isinstance(c, Mapping))
            out.append({"role": "assistant", "content": f"{said}\n{written}" if said else written})
            result_turn = False
        elif role in ("tool", "function"):
            name = names.get(message.get("tool_call_id")) or message.get("name") or "The function"
            result = f"{name} returned: {_text(message.get('content'))}"
            if result_turn:
                out[-1]["content"] += "\n" + result
            else:
                out.append({"role": "user", "content": result})
            result_turn = True
        else:
            out.append(dict(message))
            result_turn = False
    if native or plan is None or plan.choice == "none":
        return out
    block = tools_block(plan.functions)
    if out and out[0].get("role") in ("system", "developer"):
        said = _text(out[0].get("content"))
        out[0] = {**out[0], "content": f"{said}\n\n{block}" if said else block}
    else:
        out.insert(0, {"role": "system", "content": block})
    return out


# -- the output ---------------------------------------------------------------------------------

def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class CallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class CallArgs:
    index: int
    text: str


Event = Text | CallStart | CallArgs

_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')


@dataclass(slots=True)
class _Args:
    """Where the scan of one call's ``arguments`` JSON is."""

    depth: int = 0
    in_string: bool = False
    escaped: bool = False
    started: bool = False


@dataclass(slots=True)
class ToolCallParser:
    """Text in (as it streams), :data:`Event` s out. ``text_allowed``: the output may be plain text
    (``auto``) instead of calls; it is, unless it starts with ``<``."""

    text_allowed: bool
    calls: list[dict[str, Any]] = field(default_factory=list)  # the whole calls so far, OpenAI-shaped
    text: list[str] = field(default_factory=list)
    _state: str = "lead"  # lead | text | open | header | args | tail | between
    _buf: str = ""
    _args: _Args = field(default_factory=_Args)

    def push(self, piece: str) -> list[Event]:
        self._buf += piece
        events: list[Event] = []
        while self._buf and self._step(events):
            pass
        return events

    def close(self) -> list[Event]:
        """The end of the output: text held back (a lone ``<`` in ``auto``) comes out."""
        events: list[Event] = []
        if self._state == "lead" and self._buf and self.text_allowed:
            self._emit_text(self._buf, events)
            self._buf = ""
        return events

    def _emit_text(self, text: str, events: list[Event]) -> None:
        self.text.append(text)
        events.append(Text(text))

    def _step(self, events: list[Event]) -> bool:
        """One move on the buffer; False when it needs more text."""
        buf = self._buf
        if self._state == "lead":
            if buf.startswith(CALL_OPEN) or not self.text_allowed:
                self._state = "open"
            elif CALL_OPEN.startswith(buf):
                return False
            else:
                self._state = "text"
            return True
        if self._state == "text":
            self._emit_text(buf, events)
            self._buf = ""
            return False
        if self._state in ("open", "between"):
            stripped = buf.lstrip()
            if len(stripped) < len(CALL_OPEN):
                return False
            if not stripped.startswith(CALL_OPEN):  # not the format: what is left is dropped
                self._buf = ""
                return False
            self._buf = stripped[len(CALL_OPEN):]
            self._state = "header"
            return True
        if self._state == "header":
            match = _HEADER.match(buf)
            if match is None or match.end() == len(buf):  # (more spaces may still come)
                return False
            name = str(json.loads(match.group(1)))
            index, ident = len(self.calls), call_id()
            self.calls.append({"id": ident, "type": "function", "function": {"name": name, "arguments": ""}})
            events.append(CallStart(index, ident, name))
            self._buf = buf[match.end():]
            self._args = _Args()
            self._state = "args"
            return True
        if self._state == "args":
            end = self._scan(buf)
            taken = buf if end < 0 else buf[:end]
            if taken:
                index = len(self.calls) - 1
                self.calls[index]["function"]["arguments"] += taken
                events.append(CallArgs(index, taken))
            self._buf = "" if end < 0 else buf[end:]
            if end >= 0:
                self._state = "tail"
            return end >= 0
        if self._state == "tail":
            at = buf.find(CALL_CLOSE)
            if at < 0:
                return False
            self._buf = buf[at + len(CALL_CLOSE):]
            self._state = "between"
            return True
        return False

    def _scan(self, text: str) -> int:
        """Where the arguments' JSON value ends in ``text`` (-1: not yet)."""
        s = self._args
        for i, ch in enumerate(text):
            if s.in_string:
                if s.escaped:
                    s.escaped = False
                elif ch == "\\":
                    s.escaped = True
                elif ch == '"':
                    s.in_string = False
                    if s.depth == 0:
                        return i + 1
                continue
            if ch == '"':
                s.in_string, s.started = True, True
            elif ch in "{[":
                s.depth += 1
                s.started = True
            elif ch in "}]":
                s.depth -= 1
                if s.depth <= 0:
                    return i + 1
            elif s.started and s.depth == 0 and ch in ",} \n":
                return i
            elif not ch.isspace():
                s.started = True
        return -1
