"""Responses input items -> chat-completions messages. Pure.

An assistant turn in Responses is several items (``reasoning``, ``message``, ``function_call``,
``custom_tool_call``); in chat it is one assistant message. Consecutive items of one turn are
merged into that message, and the tool outputs that follow become ``role: tool`` messages.
Images inside a tool output follow the tool messages as a user message (chat tool messages
carry text only). ``developer`` messages become ``system`` messages (what every upstream knows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import orjson

from switchyard.protocol.responses.tools import CUSTOM_INPUT, bad, namespaced

__all__ = ["ReasoningHistory", "Resolve", "input_messages", "normalize_input"]

Resolve = Callable[[str], Mapping[str, Any] | None]
ReasoningHistory = Literal["drop", "reasoning_content", "reasoning"]

_ROLES = frozenset({"user", "assistant", "system", "developer"})
_DETAILS = frozenset({"auto", "low", "high"})


def normalize_input(raw: Any) -> list[dict[str, Any]]:
    """``input`` as a list of items: a string becomes one user message with an ``input_text`` part."""
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}]
    if not isinstance(raw, list):
        raise bad("input", "must be a string or a list of input items")
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise bad(f"input[{i}]", "an input item must be an object")
    return [dict(item) for item in raw]


def _text(part: Mapping[str, Any], key: str, at: str) -> str:
    value = part.get(key)
    if not isinstance(value, str):
        raise bad(f"{at}.{key}", "must be a string")
    return value


def _image(part: Mapping[str, Any], at: str) -> dict[str, Any]:
    url = part.get("image_url")
    if part.get("file_id") is not None and url is None:
        raise bad(f"{at}.file_id", "file ids are not supported on this model; send the image as image_url")
    if not isinstance(url, str) or not url:
        raise bad(f"{at}.image_url", "an input_image needs an image_url (a URL or a data: URL)")
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in _DETAILS:
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _file(part: Mapping[str, Any], at: str) -> dict[str, Any]:
    data = part.get("file_data")
    for unsupported in ("file_id", "file_url"):
        if part.get(unsupported) is not None and data is None:
            raise bad(f"{at}.{unsupported}", "not supported on this model; send the file as file_data")
    if not isinstance(data, str) or not data:
        raise bad(f"{at}.file_data", "an input_file needs file_data")
    file: dict[str, Any] = {"file_data": data}
    if isinstance(part.get("filename"), str):
        file["filename"] = part["filename"]
    return {"type": "file", "file": file}


def _parts(content: Any, at: str, role: str) -> list[dict[str, Any]]:
    """A message's content -> chat content parts (text, image_url, file)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise bad(at, "must be a string or a list of content parts")
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{at}[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("input_text", "output_text"):
            out.append({"type": "text", "text": _text(part, "text", where)})
        elif kind == "refusal" and role == "assistant":
            out.append({"type": "text", "text": _text(part, "refusal", where)})
        elif kind == "input_image" and role == "user":
            out.append(_image(part, where))
        elif kind == "input_file" and role == "user":
            out.append(_file(part, where))
        else:
            raise bad(f"{where}.type", f"unsupported content part type {kind!r} in a {role} message")
    return out


def _joined(parts: list[dict[str, Any]]) -> str:
    return "".join(str(p["text"]) for p in parts)


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(p["type"] == "text" for p in parts):
        return _joined(parts)
    return parts


def _output_text(raw: Any, at: str) -> tuple[str, list[dict[str, Any]]]:
    """A tool output (string or parts) -> its text, and the images/files that must follow it."""
    if isinstance(raw, str):
        return raw, []
    if not isinstance(raw, list):
        raise bad(at, "must be a string or a list of content parts")
    parts = _parts(raw, at, "user")
    text = "\n".join(str(p["text"]) for p in parts if p["type"] == "text")
    return text, [p for p in parts if p["type"] != "text"]


class _Builder:
    def __init__(self, reasoning: ReasoningHistory) -> None:
        self.out: list[dict[str, Any]] = []
        self.reasoning = reasoning
        self.turn: dict[str, Any] | None = None  # the assistant message being merged
        self.thoughts: list[str] = []  # reasoning waiting for its assistant message
        self.deferred: list[dict[str, Any]] = []  # tool-output images, after the tool messages

    def assistant(self) -> dict[str, Any]:
        self.flush_deferred()
        if self.turn is None:
            self.turn = {"role": "assistant", "content": None}
        return self.turn

    def close_turn(self) -> None:
        turn, self.turn = self.turn, None
        if turn is None:
            return
        if self.thoughts:
            turn[self.reasoning] = "\n\n".join(self.thoughts)
            self.thoughts = []
        if turn["content"] is None and not turn.get("tool_calls"):
            turn["content"] = ""
        self.out.append(turn)

    def flush_deferred(self) -> None:
        if self.deferred:
            self.out.append({"role": "user", "content": self.deferred})
            self.deferred = []

    def message(self, item: Mapping[str, Any], at: str) -> None:
        role = item.get("role")
        if role not in _ROLES:
            raise bad(f"{at}.role", "must be user, assistant, system or developer")
        parts = _parts(item.get("content"), f"{at}.content", str(role))
        if role == "assistant":
            turn = self.assistant()
            turn["content"] = (turn["content"] or "") + _joined(parts)
            return
        self.close_turn()
        self.flush_deferred()
        self.thoughts = []  # reasoning with no assistant message after it has nothing to attach to
        if role in ("system", "developer"):
            if any(p["type"] != "text" for p in parts):
                raise bad(f"{at}.content", f"a {role} message takes text only")
            self.out.append({"role": "system", "content": _joined(parts)})
        else:
            self.out.append({"role": "user", "content": _content(parts)})

    def call(self, item: Mapping[str, Any], at: str, custom: bool) -> None:
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not call_id:
            raise bad(f"{at}.call_id", "a tool call needs a call_id")
        if not isinstance(name, str) or not name:
            raise bad(f"{at}.name", "a tool call needs a name")
        if custom:
            arguments = orjson.dumps({CUSTOM_INPUT: _text(item, "input", at)}).decode()
        else:
            arguments = _text(item, "arguments", at)
        name = namespaced(item.get("namespace"), name)
        self.assistant().setdefault("tool_calls", []).append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})

    def output(self, item: Mapping[str, Any], at: str) -> None:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise bad(f"{at}.call_id", "a tool output needs the call_id of its call")
        text, extra = _output_text(item.get("output"), f"{at}.output")
        self.close_turn()
        self.out.append({"role": "tool", "tool_call_id": call_id, "content": text})
        self.deferred.extend(extra)

    def thought(self, item: Mapping[str, Any], at: str) -> None:
        if self.reasoning == "drop":
            return
        texts: list[str] = []
        for key in ("content", "summary"):
            parts = item.get(key)
            if isinstance(parts, list):
                texts.extend(p["text"] for p in parts if isinstance(p, Mapping) and isinstance(p.get("text"), str))
            if texts:
                break  # the full reasoning text when there is one, else its summary
        if texts:
            if self.turn is not None and self.turn.get("tool_calls"):
                self.close_turn()  # reasoning after a tool call starts the next turn
            self.thoughts.append("\n".join(texts))


def _kind(item: Mapping[str, Any]) -> Any:
    kind = item.get("type")
    if kind is None:
        if "role" in item:
            return "message"
        if "id" in item:
            return "item_reference"
    return kind


def input_messages(items: Sequence[Mapping[str, Any]], *, resolve: Resolve | None = None,
                   reasoning: ReasoningHistory = "drop", where: str = "input") -> list[dict[str, Any]]:
    """Input items -> chat messages. ``resolve`` answers ``item_reference`` ids (none known without it)."""
    builder = _Builder(reasoning)
    for i, given in enumerate(items):
        at = f"{where}[{i}]"
        item = given
        if _kind(item) == "item_reference":
            ref = item.get("id")
            found = resolve(ref) if resolve is not None and isinstance(ref, str) else None
            if found is None:
                raise bad(f"{at}.id", f"no item with id {ref!r} is known")
            item = found
        kind = _kind(item)
        if kind == "message":
            builder.message(item, at)
        elif kind in ("function_call", "custom_tool_call"):
            builder.call(item, at, custom=kind == "custom_tool_call")
        elif kind in ("function_call_output", "custom_tool_call_output"):
            builder.output(item, at)
        elif kind == "reasoning":
            builder.thought(item, at)
        else:
            raise bad(f"{at}.type", f"unsupported input item type {kind!r} on this model")
    builder.close_turn()
    builder.flush_deferred()
    return builder.out
