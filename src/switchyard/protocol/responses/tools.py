"""Responses tools and ``tool_choice`` -> chat-completions tools. Pure.

* ``function`` tools become chat function tools (``strict`` kept).
* ``custom`` (freeform) tools become a function with one string argument, ``{"input": string}``;
  a grammar, when given, is described to the model in the function's description. The model's
  call comes back as a ``custom_tool_call`` whose ``input`` is that string.
* ``namespace`` tools (a group of function/custom tools) become one chat function per member,
  named ``<namespace>__<name>``; the model's call comes back with ``namespace`` and the member's
  own ``name``, and a call sent back with a ``namespace`` goes to chat under that joined name.
* Tools that only OpenAI's servers run, or whose calls are item types a chat model cannot emit
  (:data:`HOSTED_TOOL_TYPES`), are removed and reported, or refused with ``hosted_tools="reject"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from switchyard.errors import BadRequestError

__all__ = [
    "CUSTOM_INPUT", "HOSTED_TOOL_TYPES", "HostedTools", "ToolKind", "ToolSet", "apply_tool_choice", "bad",
    "namespaced", "translate_tools",
]

ToolKind = Literal["function", "custom"]
HostedTools = Literal["remove", "reject"]

HOSTED_TOOL_TYPES = frozenset({
    "web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11",
    "file_search", "code_interpreter", "image_generation", "computer", "computer_use", "computer_use_preview",
    "mcp", "local_shell", "shell", "apply_patch", "tool_search", "programmatic_tool_calling",
})
CUSTOM_INPUT = "input"  # the one string argument a custom tool's function takes
NAMESPACE_SEP = "__"  # between a namespace and a member's name, in the chat function's name


def namespaced(namespace: Any, name: str) -> str:
    """The chat function name of a tool (or a call) with this namespace, if any."""
    return f"{namespace}{NAMESPACE_SEP}{name}" if isinstance(namespace, str) and namespace else name


def bad(param: str, problem: str, code: str | None = None) -> BadRequestError:
    return BadRequestError(f"Invalid request: {param}: {problem}", param=param, code=code)


@dataclass
class ToolSet:
    """What a translated request offers the model, and what the reverse direction needs."""

    kinds: dict[str, ToolKind] = field(default_factory=dict)  # chat function name -> kind
    chat: list[dict[str, Any]] = field(default_factory=list)  # chat-completions tools
    echo: list[dict[str, Any]] = field(default_factory=list)  # Responses tools, as offered
    removed: list[str] = field(default_factory=list)  # hosted tool types removed, in order
    members: dict[str, tuple[str, str]] = field(default_factory=dict)  # chat name -> (namespace, name)

    def kind(self, name: str) -> ToolKind:
        return self.kinds.get(name, "function")

    def add(self, name: str, kind: ToolKind, chat: dict[str, Any], at: str) -> None:
        if name in self.kinds:
            raise bad(f"{at}.name", f"two tools are named {name!r}")
        self.kinds[name] = kind
        self.chat.append(chat)


def _name(tool: Mapping[str, Any], at: str) -> str:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise bad(f"{at}.name", "a tool needs a name")
    return name


def _description(tool: Mapping[str, Any], at: str) -> str | None:
    text = tool.get("description")
    if text is not None and not isinstance(text, str):
        raise bad(f"{at}.description", "must be a string")
    return text


def _function(tool: Mapping[str, Any], at: str) -> tuple[dict[str, Any], dict[str, Any]]:
    name = _name(tool, at)
    params = tool.get("parameters")
    if params is not None and not isinstance(params, Mapping):
        raise bad(f"{at}.parameters", "must be a JSON Schema object")
    strict = tool.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise bad(f"{at}.strict", "must be a boolean")
    schema = dict(params) if params is not None else {"type": "object", "properties": {}}
    function: dict[str, Any] = {"name": name, "parameters": schema}
    description = _description(tool, at)
    if description is not None:
        function["description"] = description
    if strict is not None:
        function["strict"] = strict
    echo = {"type": "function", "name": name, "description": description, "parameters": schema,
            "strict": strict}
    return {"type": "function", "function": function}, echo


def _custom(tool: Mapping[str, Any], at: str) -> tuple[dict[str, Any], dict[str, Any]]:
    name = _name(tool, at)
    description = _description(tool, at)
    fmt = tool.get("format")
    echo: dict[str, Any] = {"type": "custom", "name": name}
    if description is not None:
        echo["description"] = description
    hint = "Freeform text input."
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, Mapping) else None
        if kind == "grammar":
            syntax, definition = fmt.get("syntax"), fmt.get("definition")
            if syntax not in ("lark", "regex"):
                raise bad(f"{at}.format.syntax", "must be lark or regex")
            if not isinstance(definition, str) or not definition:
                raise bad(f"{at}.format.definition", "a grammar needs a definition")
            hint = f"The input must match this {syntax} grammar:\n{definition}"
            echo["format"] = {"type": "grammar", "syntax": syntax, "definition": definition}
        elif kind == "text":
            echo["format"] = {"type": "text"}
        else:
            raise bad(f"{at}.format.type", "must be text or grammar")
    text = f"{description}\n\n{hint}" if description else hint
    schema = {"type": "object", "properties": {CUSTOM_INPUT: {"type": "string", "description": hint}},
              "required": [CUSTOM_INPUT], "additionalProperties": False}
    return {"type": "function", "function": {"name": name, "description": text, "parameters": schema}}, echo


def translate_tools(raw: Any, hosted: HostedTools) -> ToolSet:
    """``tools`` -> a :class:`ToolSet`. Hosted tools are removed (or refused); unknown types are a 400."""
    out = ToolSet()
    if raw is None:
        return out
    if not isinstance(raw, list):
        raise bad("tools", "must be a list")
    for i, tool in enumerate(raw):
        at = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise bad(at, "a tool must be an object")
        kind = tool.get("type")
        if kind in HOSTED_TOOL_TYPES:
            if hosted == "reject":
                raise bad(f"{at}.type", f"the hosted tool {kind!r} is not available on this model",
                          code="unsupported_parameter")
            out.removed.append(str(kind))
            continue
        if kind == "namespace":
            out.echo.append(_namespace(tool, at, out))
            continue
        chat, echo = _member(tool, at)
        out.add(echo["name"], "custom" if kind == "custom" else "function", chat, at)
        out.echo.append(echo)
    return out


def _member(tool: Mapping[str, Any], at: str) -> tuple[dict[str, Any], dict[str, Any]]:
    kind = tool.get("type")
    if kind == "function":
        return _function(tool, at)
    if kind == "custom":
        return _custom(tool, at)
    raise bad(f"{at}.type", f"unsupported tool type {kind!r} (use function, custom or namespace)",
              code="unsupported_parameter")


def _namespace(tool: Mapping[str, Any], at: str, out: ToolSet) -> dict[str, Any]:
    """A ``namespace`` tool's members, each its own chat function; its echo."""
    space = _name(tool, at)
    members = tool.get("tools")
    if not isinstance(members, list) or not members:
        raise bad(f"{at}.tools", "a namespace needs a list of tools")
    echoes: list[dict[str, Any]] = []
    for j, member in enumerate(members):
        where = f"{at}.tools[{j}]"
        if not isinstance(member, Mapping):
            raise bad(where, "a tool must be an object")
        chat, echo = _member(member, where)
        joined = namespaced(space, echo["name"])
        chat["function"]["name"] = joined
        out.add(joined, "custom" if member.get("type") == "custom" else "function", chat, where)
        out.members[joined] = (space, echo["name"])
        echoes.append({k: v for k, v in echo.items() if v is not None})
    return {"type": "namespace", "name": space, "description": _description(tool, at) or "", "tools": echoes}


def _named(choice: Mapping[str, Any], tools: ToolSet, kind: ToolKind) -> dict[str, Any]:
    name = choice.get("name")
    if isinstance(name, str):
        name = namespaced(choice.get("namespace"), name)
    if not isinstance(name, str) or tools.kinds.get(name) != kind:
        raise bad("tool_choice.name", f"no {kind} tool named {name!r} is in tools")
    return {"type": "function", "function": {"name": name}}


def _allowed(choice: Mapping[str, Any], tools: ToolSet) -> tuple[str, set[str]]:
    mode = choice.get("mode")
    if mode not in ("auto", "required"):
        raise bad("tool_choice.mode", "must be auto or required")
    listed = choice.get("tools")
    if not isinstance(listed, list):
        raise bad("tool_choice.tools", "must be a list of tools")
    names: set[str] = set()
    for j, entry in enumerate(listed):
        at = f"tool_choice.tools[{j}]"
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        if kind in HOSTED_TOOL_TYPES:
            continue  # a removed hosted tool is simply not among the allowed ones
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if isinstance(name, str) and isinstance(entry, Mapping):
            name = namespaced(entry.get("namespace"), name)
        if kind not in ("function", "custom") or not isinstance(name, str) or tools.kinds.get(name) != kind:
            raise bad(at, "must name a function or custom tool that is in tools")
        names.add(name)
    return str(mode), names


def apply_tool_choice(raw: Any, parallel: Any, tools: ToolSet, body: dict[str, Any]) -> None:
    """Put ``tools``, ``tool_choice`` and ``parallel_tool_calls`` on the chat body."""
    choice: Any = None
    if raw is None or raw in ("auto", "none", "required"):
        choice = raw
    elif isinstance(raw, Mapping) and raw.get("type") == "function":
        choice = _named(raw, tools, "function")
    elif isinstance(raw, Mapping) and raw.get("type") == "custom":
        choice = _named(raw, tools, "custom")
    elif isinstance(raw, Mapping) and raw.get("type") == "allowed_tools":
        choice, names = _allowed(raw, tools)
        keep = [i for i, t in enumerate(tools.chat) if t["function"]["name"] in names]
        tools.chat = [tools.chat[i] for i in keep]
    elif isinstance(raw, Mapping) and isinstance(raw.get("type"), str):
        raise bad("tool_choice.type", f"tool_choice {raw['type']!r} names a tool this model cannot run",
                  code="unsupported_parameter")
    else:
        raise bad("tool_choice", "must be auto, none, required or a tool choice object")
    if parallel is not None and not isinstance(parallel, bool):
        raise bad("parallel_tool_calls", "must be a boolean")
    if not tools.chat:
        if choice == "required" or isinstance(choice, dict):
            raise bad("tool_choice", "requires a tool call, but no function or custom tool is offered")
        return  # chat refuses tool_choice / parallel_tool_calls without tools
    body["tools"] = tools.chat
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
