"""Chat-completions stream chunks -> the Responses stream event sequence. Pure.

:class:`ResponseStream` takes each decoded ``chat.completion.chunk`` and returns the events it
completes, each with the next ``sequence_number``; :func:`sse` frames one as
``event: <type>\\ndata: <json>\\n\\n``. The sequence::

    response.created, response.in_progress            (with the first chunk, or finish/fail)
    per item: response.output_item.added ... response.output_item.done
      reasoning: content_part.added, reasoning_text.delta*, reasoning_text.done, content_part.done
      message:   content_part.added, output_text.delta* (or refusal.delta*), .done, content_part.done
      function_call: function_call_arguments.delta*, function_call_arguments.done
      custom_tool_call: custom_tool_call_input.delta*, custom_tool_call_input.done
    response.completed | response.incomplete          (finish)   or   response.failed   (fail)

Reasoning and message items close when the next item starts; tool calls stay open until the
end, so parallel calls whose fragments interleave each keep their own item. A custom tool's
input is decoded from its ``{"input": "..."}`` argument fragments as they arrive.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.core.usage import Usage
from switchyard.errors import GatewayError, UpstreamError
from switchyard.protocol.responses.request import ChatTranslation
from switchyard.protocol.responses.response import (
    Seal,
    custom_input,
    error_object,
    new_id,
    reasoning_text,
    response_object,
    status_of,
    tool_call_item,
    usage_object,
)

__all__ = ["ResponseStream", "sse"]

_DELTA_HEAD = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'
_DELTA_TAIL = b',"logprobs":[]}\n\n'
_DELTA_TAIL_QUOTED = b'"' + _DELTA_TAIL

_PREFIX = re.compile(r'\s*\{\s*"input"\s*:\s*"')
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", '"': '"', "\\": "\\", "/": "/"}


def sse(event: Mapping[str, Any]) -> bytes:
    """One event as an SSE frame."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class _InputDecoder:
    """Decodes the string value of ``{"input": "..."}`` from JSON fragments as they arrive."""

    def __init__(self) -> None:
        self.raw = ""
        self.pos: int | None = None  # just after the opening quote, once seen
        self.stopped = False  # the closing quote was reached, or the JSON is not that shape
        self.emitted = ""

    def feed(self, fragment: str) -> str:
        self.raw += fragment
        if self.stopped:
            return ""
        if self.pos is None:
            match = _PREFIX.match(self.raw)
            if match is None:
                stripped = re.sub(r"\s", "", self.raw)
                self.stopped = not '{"input":"'.startswith(stripped[:10])
                return ""
            self.pos = match.end()
        out, i, raw = [], self.pos, self.raw
        while i < len(raw):
            char = raw[i]
            if char == '"':
                self.stopped = True
                break
            if char != "\\":
                out.append(char)
                i += 1
                continue
            if i + 1 >= len(raw):
                break
            if raw[i + 1] != "u":
                out.append(_ESCAPES.get(raw[i + 1], raw[i + 1]))
                i += 2
                continue
            if i + 6 > len(raw):
                break
            try:
                code = int(raw[i + 2 : i + 6], 16)
                if 0xD800 <= code < 0xDC00:  # a surrogate pair: wait for the low half
                    if i + 12 > len(raw):
                        break
                    code = 0x10000 + ((code - 0xD800) << 10) + (int(raw[i + 8 : i + 12], 16) - 0xDC00)
                    i += 6
            except ValueError:
                self.stopped = True
                break
            out.append(chr(code))
            i += 6
        self.pos = i
        text = "".join(out)
        self.emitted += text
        return text


class _Call:
    def __init__(self, index: int, item: dict[str, Any]) -> None:
        self.index = index  # output_index
        self.item = item
        self.arguments = ""
        self.decoder = _InputDecoder() if item["type"] == "custom_tool_call" else None


class ResponseStream:
    """One Responses stream, fed the upstream's chat chunks (decoded JSON), in order."""

    def __init__(self, translation: ChatTranslation, *, response_id: str | None = None,
                 created_at: int | None = None, seal: Seal | None = None) -> None:
        self.translation = translation
        self._seal = seal  # given, a reasoning item is done with its text sealed in encrypted_content
        self.response_id = response_id or new_id("resp_")
        self.created_at = created_at if created_at is not None else int(time.time())
        self.started = False
        self.ended = False
        self.response = self._snapshot("in_progress")  # the latest Response object (final once ended)
        self._seq = 0
        self._items: list[dict[str, Any]] = []  # output, by output_index
        self._open: dict[str, Any] | None = None  # the reasoning or message item being written
        self._open_index = 0  # its output_index
        self._part: dict[str, Any] | None = None  # its content part being written
        self._calls: list[_Call] = []  # in output order
        self._by_index: dict[int, _Call] = {}  # chat tool_calls[].index -> its latest call
        self._by_id: dict[str, _Call] = {}  # call id -> call
        self._finish: str | None = None
        self._usage: Mapping[str, Any] | None = None
        self._logprobs = bool(translation.body.get("logprobs"))
        self._text_part: dict[str, Any] | None = None  # the output_text part being written (without logprobs)
        self._text_mid = b""  # its delta events' framed bytes between the sequence_number and the delta
        self._text_format = b""  # a delta event of it, framed: % (sequence_number, the delta's JSON string content)
        self._raw: list[bytes] = []  # text pieces of _text_part as JSON string content, not yet added to it

    # -- public
    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The events one chat chunk completes (``response.created`` and ``in_progress`` first)."""
        if self._raw:
            self._flush()
        out: list[dict[str, Any]] = []
        if self.ended:
            return out
        self._start(out)
        err = chunk.get("error")
        if err is not None:
            info = err if isinstance(err, Mapping) else {"message": str(err)}
            out += self.fail(UpstreamError(str(info.get("message") or "The upstream failed mid-stream.")))
            return out
        usage = chunk.get("usage")
        if isinstance(usage, dict):  # decoded JSON: dict checks are cheaper than Mapping's
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)
        return out

    @property
    def writing_text(self) -> bool:
        """A text part is open (and without logprobs): :meth:`raw_texts` can continue it."""
        return self._text_part is not None

    def raw_texts(self, pieces: list[bytes]) -> bytes:
        """The framed ``output_text.delta`` events for more pieces of the text being written
        (:attr:`writing_text`), each given as the JSON string content it came as (escaped,
        without quotes, not empty)."""
        self._raw += pieces
        fmt = self._text_format
        out = b"".join([fmt % numbered for numbered in enumerate(pieces, self._seq)])
        self._seq += len(pieces)
        return out

    def _flush(self) -> None:
        """Add the pieces :meth:`raw_text` took to the text they belong to."""
        assert self._text_part is not None
        try:
            self._text_part["text"] += orjson.loads(b'"' + b"".join(self._raw) + b'"')
        except orjson.JSONDecodeError:  # a bad escape: keep the pieces that read alone, as feed does
            for piece in self._raw:
                with contextlib.suppress(orjson.JSONDecodeError):
                    self._text_part["text"] += orjson.loads(b'"' + piece + b'"')
        self._raw = []

    def frames(self, chunk: Mapping[str, Any]) -> bytes:
        """What :meth:`feed` returns for ``chunk``, framed as :func:`sse` frames it (the same bytes).

        The common chunk, one more piece of the text being written (a delta of ``content`` only,
        no finish, usage or logprobs), takes a short way: one event framed from a template.
        """
        if self._raw:
            self._flush()
        part = self._text_part
        if part is not None:
            choices = chunk.get("choices")
            if type(choices) is list and len(choices) == 1 and chunk.get("usage") is None and "error" not in chunk:
                choice = choices[0]
                if type(choice) is dict and choice.get("finish_reason") is None and choice.get("index", 0) == 0:
                    delta = choice.get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else None
                    if type(text) is str and text and isinstance(delta, dict) and _only_content(delta):
                        part["text"] += text
                        seq = self._seq
                        self._seq = seq + 1
                        return b"".join((_DELTA_HEAD, str(seq).encode(), self._text_mid, orjson.dumps(text),
                                         _DELTA_TAIL))
        return b"".join(sse(event) for event in self.feed(chunk))

    def finish(self, usage: Mapping[str, Any] | Usage | None = None) -> list[dict[str, Any]]:
        """Close every item and end with ``response.completed`` (or ``response.incomplete``).

        ``usage``: what to report when no chunk carried usage.
        """
        if self._raw:
            self._flush()
        out: list[dict[str, Any]] = []
        if self.ended:
            return out
        self._start(out)
        status, incomplete = status_of(self._finish)
        item_status = "incomplete" if status == "incomplete" else "completed"
        self._close_open(out, item_status)
        for call in self._calls:
            self._close_call(call, out, item_status)
        self.ended = True
        self.response = response_object(
            self.translation, response_id=self.response_id, created_at=self.created_at, status=status,
            output=self._items, incomplete=incomplete,
            usage=usage_object(self._usage if self._usage is not None else usage))
        self._emit(out, f"response.{status}", response=self.response)
        return out

    def fail(self, error: GatewayError) -> list[dict[str, Any]]:
        """End with ``response.failed`` (an error after the first byte)."""
        if self._raw:
            self._flush()
        out: list[dict[str, Any]] = []
        if self.ended:
            return out
        self._start(out)
        self.ended = True
        self._text_part = None
        for item in self._items:
            if item.get("status") == "in_progress":
                item["status"] = "incomplete"
        self.response = response_object(
            self.translation, response_id=self.response_id, created_at=self.created_at, status="failed",
            output=self._items, error=error_object(error), usage=usage_object(self._usage))
        self._emit(out, "response.failed", response=self.response)
        return out

    # -- events
    def _emit(self, out: list[dict[str, Any]], kind: str, **fields: Any) -> None:
        out.append({"type": kind, "sequence_number": self._seq, **fields})
        self._seq += 1

    def _snapshot(self, status: str) -> dict[str, Any]:
        return response_object(self.translation, response_id=self.response_id, created_at=self.created_at,
                               status=status)

    def _start(self, out: list[dict[str, Any]]) -> None:
        if not self.started:
            self.started = True
            self._emit(out, "response.created", response=self._snapshot("in_progress"))
            self._emit(out, "response.in_progress", response=self._snapshot("in_progress"))

    def _add(self, item: dict[str, Any], out: list[dict[str, Any]]) -> int:
        index = len(self._items)
        self._items.append(item)
        fresh = {**item, "content": []} if "content" in item else dict(item)
        self._emit(out, "response.output_item.added", output_index=index, item=fresh)
        return index

    def _where(self, item: dict[str, Any]) -> dict[str, Any]:
        """Where the open item's current (last) content part is."""
        return {"item_id": item["id"], "output_index": self._open_index, "content_index": len(item["content"]) - 1}

    # -- reasoning and message items
    def _open_item(self, kind: str, out: list[dict[str, Any]]) -> dict[str, Any]:
        if self._open is not None and self._open["type"] == kind:
            return self._open
        self._close_open(out, "completed")
        if kind == "reasoning":
            item: dict[str, Any] = {"id": new_id("rs_"), "type": "reasoning", "summary": [], "content": []}
        else:
            item = {"id": new_id("msg_"), "type": "message", "role": "assistant", "status": "in_progress",
                    "content": []}
        self._open_index = self._add(item, out)
        self._open = item
        return item

    def _open_part(self, item: dict[str, Any], kind: str, out: list[dict[str, Any]]) -> dict[str, Any]:
        if self._part is not None and self._part["type"] == kind:
            return self._part
        self._close_part(item, out)
        part: dict[str, Any] = {"type": kind, "text": ""}
        if kind == "output_text":
            part["annotations"] = []
            if self._logprobs:
                part["logprobs"] = []
        elif kind == "refusal":
            part = {"type": kind, "refusal": ""}
        item["content"].append(part)
        self._part = part
        if kind == "output_text" and not self._logprobs:
            self._text_part = part
            self._text_mid = orjson.dumps(self._where(item))[:-1].replace(b"{", b",", 1) + b',"delta":'
            self._text_format = b"".join((_DELTA_HEAD.replace(b"%", b"%%"), b"%d", self._text_mid.replace(b"%", b"%%"),
                                          b'"%s', _DELTA_TAIL_QUOTED.replace(b"%", b"%%")))
        fresh = {key: [] if isinstance(value, list) else value for key, value in part.items()}
        self._emit(out, "response.content_part.added", **self._where(item), part=fresh)
        return part

    def _close_part(self, item: dict[str, Any], out: list[dict[str, Any]]) -> None:
        part, self._part = self._part, None
        self._text_part = None
        if part is None:
            return
        at = self._where(item)
        if part["type"] == "reasoning_text":
            self._emit(out, "response.reasoning_text.done", **at, text=part["text"])
        elif part["type"] == "refusal":
            self._emit(out, "response.refusal.done", **at, refusal=part["refusal"])
        else:
            logprobs = [{"token": p["token"], "logprob": p["logprob"],
                         "top_logprobs": [{"token": t["token"], "logprob": t["logprob"]} for t in p["top_logprobs"]]}
                        for p in part.get("logprobs", ())]
            self._emit(out, "response.output_text.done", **at, text=part["text"], logprobs=logprobs)
        self._emit(out, "response.content_part.done", **at, part=dict(part))

    def _close_open(self, out: list[dict[str, Any]], status: str) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        self._close_part(item, out)
        if item["type"] == "message":
            item["status"] = status
        elif self._seal is not None:
            item["encrypted_content"] = self._seal("".join(p["text"] for p in item["content"]))
        self._emit(out, "response.output_item.done", output_index=self._open_index, item=item)

    def _delta(self, kind: str, key: str, text: str, out: list[dict[str, Any]],
               logprobs: list[Mapping[str, Any]] | None = None) -> None:
        item = self._open_item("reasoning" if kind == "reasoning_text" else "message", out)
        part = self._open_part(item, kind, out)
        part[key] += text
        at = self._where(item)
        if kind == "output_text":
            events = []
            for entry in logprobs or ():
                tops = [t for t in entry.get("top_logprobs") or () if isinstance(t, Mapping)]
                part["logprobs"].append({
                    "token": entry["token"], "logprob": float(entry.get("logprob") or 0.0),
                    "bytes": entry.get("bytes") or list(entry["token"].encode()),
                    "top_logprobs": [{"token": str(t.get("token")), "logprob": float(t.get("logprob") or 0.0),
                                      "bytes": t.get("bytes") or list(str(t.get("token")).encode())} for t in tops]})
                events.append({"token": entry["token"], "logprob": float(entry.get("logprob") or 0.0),
                               "top_logprobs": [{"token": t.get("token"), "logprob": t.get("logprob")} for t in tops]})
            self._emit(out, "response.output_text.delta", **at, delta=text, logprobs=events)
        else:
            self._emit(out, f"response.{'reasoning_text' if kind == 'reasoning_text' else 'refusal'}.delta",
                       **at, delta=text)

    # -- chunks
    def _choice(self, choice: Mapping[str, Any], out: list[dict[str, Any]]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            thought = reasoning_text(delta)
            if thought:
                self._delta("reasoning_text", "text", thought, out)
            text = delta.get("content")
            if isinstance(text, str) and text:
                valid: list[Mapping[str, Any]] | None = None
                if self._logprobs:
                    found = choice.get("logprobs")
                    entries = found.get("content") if isinstance(found, dict) else None
                    valid = [e for e in entries or () if isinstance(e, dict) and isinstance(e.get("token"), str)]
                self._delta("output_text", "text", text, out, valid)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._delta("refusal", "refusal", refusal, out)
            for position, call in enumerate(delta.get("tool_calls") or ()):
                if isinstance(call, dict):
                    self._tool_call(call, position, out)
        if choice.get("finish_reason"):
            self._finish = str(choice["finish_reason"])

    def _tool_call(self, call: Mapping[str, Any], position: int, out: list[dict[str, Any]]) -> None:
        key = call.get("index")
        key = key if isinstance(key, int) and not isinstance(key, bool) else position
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        call_id = call.get("id")
        if isinstance(call_id, str) and call_id:
            # a new id is a new call even at a reused index (servers that send each call whole, index 0)
            state = self._by_id.get(call_id)
        else:
            call_id, state = None, self._by_index.get(key)
        if state is None:
            self._close_open(out, "completed")
            item = tool_call_item(self.translation, call_id or new_id("call_"), str(function.get("name") or ""), "",
                                  "in_progress")
            state = _Call(self._add(item, out), item)
            self._calls.append(state)
            self._by_id[item["call_id"]] = state
        self._by_index[key] = state
        fragment = function.get("arguments")
        if isinstance(fragment, Mapping):  # some servers send the whole object at once
            fragment = orjson.dumps(fragment).decode()
        if not isinstance(fragment, str) or not fragment:
            return
        state.arguments += fragment
        where = {"item_id": state.item["id"], "output_index": state.index}
        if state.decoder is None:
            self._emit(out, "response.function_call_arguments.delta", **where, delta=fragment)
        else:
            text = state.decoder.feed(fragment)
            if text:
                self._emit(out, "response.custom_tool_call_input.delta", **where, delta=text)

    def _close_call(self, call: _Call, out: list[dict[str, Any]], status: str) -> None:
        item = call.item
        where = {"item_id": item["id"], "output_index": call.index}
        if call.decoder is None:
            item["arguments"], item["status"] = call.arguments, status
            self._emit(out, "response.function_call_arguments.done", **where, arguments=call.arguments)
        else:
            item["input"] = custom_input(call.arguments)
            rest = item["input"].removeprefix(call.decoder.emitted)
            if rest and item["input"].startswith(call.decoder.emitted):
                self._emit(out, "response.custom_tool_call_input.delta", **where, delta=rest)
            self._emit(out, "response.custom_tool_call_input.done", **where, input=item["input"])
        self._emit(out, "response.output_item.done", output_index=call.index, item=item)


def _only_content(delta: dict[str, Any]) -> bool:
    """Nothing but ``content`` (and ``role``) is set in the delta: no reasoning, tool call or refusal."""
    return len(delta) == 1 or all(value is None or key == "content" or key == "role" for key, value in delta.items())
