"""OpenAI's Responses API (``POST /v1/responses``) as the fake OpenAI upstream speaks it: the real
wire shapes (a ``Response`` object, or the event stream ``response.created`` ... ``response.completed``
framed as ``event: <type>\\ndata: <json>``), per OpenAI's published spec.

The model answers ``echo: <the last user text>``, one word per ``output_text.delta``;
``max_output_tokens`` cuts it (``status: incomplete``). With ``store`` (the default, as at OpenAI)
the fake keeps each response, so ``previous_response_id`` chains (the text of every earlier turn is
counted as input) and an unknown one is OpenAI's 400 ``previous_response_not_found``; the fake
OpenAI upstream serves them back (``GET``/``DELETE /v1/responses/{id}``, ``input_items``, and
``cancel``, which is OpenAI's 400 for a response not made with ``background``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

from ._gen import split_words

SSE = "text/event-stream; charset=utf-8"


def _texts(value: Any) -> list[str]:
    """The user texts of a Responses ``input`` (a string, or message items)."""
    if isinstance(value, str):
        return [value]
    out: list[str] = []
    for item in value if isinstance(value, list) else ():
        if not isinstance(item, dict) or item.get("role") not in ("user", None):
            continue
        if item.get("type") not in ("message", None):
            continue
        content = item.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return out


def _items(value: Any) -> list[dict[str, Any]]:
    """A request's ``input`` as OpenAI lists it: items with ids, messages with typed parts."""
    given = [{"role": "user", "content": value}] if isinstance(value, str) else value if isinstance(value, list) else []
    out: list[dict[str, Any]] = []
    for raw in given:
        item = dict(raw) if isinstance(raw, dict) else {}
        if item.get("type", "message") == "message" and isinstance(item.get("content"), str):
            item["content"] = [{"type": "input_text", "text": item["content"]}]
        item.setdefault("type", "message")
        item.setdefault("status", "completed")
        item.setdefault("id", f"msg_{secrets.token_hex(24)}")
        out.append(item)
    return out


class ResponsesAPI:
    """The state (stored responses) and shapes of the fake's ``/v1/responses``."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}  # id -> {"texts": [...], "response": {...}}

    def history(self, previous: str | None) -> list[str] | None:
        """The texts of a chain ending at ``previous``; None when it is not known."""
        if previous is None:
            return []
        found = self.stored.get(previous)
        return None if found is None else list(found["texts"])

    def plan(self, body: dict[str, Any], history: list[str]) -> tuple[list[str], bool, list[str]]:
        """(the answer's words, whether max_output_tokens cut it, every text of the conversation)."""
        texts = [*history, *_texts(body.get("input"))]
        words = split_words(f"echo: {texts[-1] if texts else ''}")
        most = body.get("max_output_tokens")
        cut = isinstance(most, int) and len(words) > most
        return (words[:most] if cut and isinstance(most, int) else words), cut, texts

    def response(self, body: dict[str, Any], response_id: str, created: int, status: str,
                  output: list[dict[str, Any]], usage: dict[str, Any] | None, cut: bool) -> dict[str, Any]:
        tools = [{"description": None, "strict": True, **t} if isinstance(t, dict) and t.get("type") == "function"
                 else t for t in body.get("tools") or []]  # as OpenAI echoes them
        out: dict[str, Any] = {
            "id": response_id, "object": "response", "created_at": created, "status": status,
            "background": False, "completed_at": int(time.time()) if status == "completed" else None,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut and status == "incomplete" else None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": None, "model": f"{body['model']}-2026-01-01", "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"), "prompt_cache_key": None,
            "reasoning": {"effort": None, "summary": None}, "safety_identifier": None,
            "service_tier": "default", "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0), "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"), "tools": tools, "top_logprobs": 0,
            "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"),
            "usage": usage, "metadata": body.get("metadata") or {},
        }
        if usage is None:  # the spec's usage is not nullable: an answer in progress has none yet
            del out["usage"]
        return out

    @staticmethod
    def usage(texts: list[str], words: list[str]) -> dict[str, Any]:
        prompt = max(1, sum(len(t.split()) for t in texts))
        return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": len(words), "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + len(words)}

    def keep(self, body: dict[str, Any], response: dict[str, Any], texts: list[str], words: list[str]) -> None:
        if body.get("store", True) is not False:
            self.stored[response["id"]] = {"texts": [*texts, "".join(words)], "response": response,
                                           "input": _items(body.get("input"))}

    def input_items(self, response_id: str, order: str) -> dict[str, Any] | None:
        """``GET /v1/responses/{id}/input_items`` (one page: the fake's inputs are short)."""
        found = self.stored.get(response_id)
        if found is None:
            return None
        items = found["input"] if order == "asc" else found["input"][::-1]
        return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
                "last_id": items[-1]["id"] if items else None, "has_more": False}

    def whole(self, body: dict[str, Any], history: list[str]) -> dict[str, Any]:
        words, cut, texts = self.plan(body, history)
        status = "incomplete" if cut else "completed"
        message = {"id": f"msg_{secrets.token_hex(24)}", "type": "message", "status": status, "role": "assistant",
                   "content": [{"type": "output_text", "text": "".join(words), "annotations": [], "logprobs": []}]}
        response = self.response(body, f"resp_{secrets.token_hex(24)}", int(time.time()), status, [message],
                                 self.usage(texts, words), cut)
        self.keep(body, response, texts, words)
        return response

    def events(self, body: dict[str, Any], history: list[str]) -> Iterator[bytes]:
        """The stream, framed, one event at a time."""
        words, cut, texts = self.plan(body, history)
        status = "incomplete" if cut else "completed"
        response_id, created = f"resp_{secrets.token_hex(24)}", int(time.time())
        item_id = f"msg_{secrets.token_hex(24)}"
        seq = iter(range(1_000_000))

        def event(kind: str, **fields: Any) -> bytes:
            data = {"type": kind, "sequence_number": next(seq), **fields}
            return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

        started = self.response(body, response_id, created, "in_progress", [], None, False)
        yield event("response.created", response=started)
        yield event("response.in_progress", response=started)
        at = {"item_id": item_id, "output_index": 0, "content_index": 0}
        yield event("response.output_item.added", output_index=0,
                    item={"id": item_id, "type": "message", "status": "in_progress", "role": "assistant",
                          "content": []})
        yield event("response.content_part.added", **at,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        for word in words:
            yield event("response.output_text.delta", **at, delta=word, logprobs=[])
        text = "".join(words)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        yield event("response.output_text.done", **at, text=text, logprobs=[])
        yield event("response.content_part.done", **at, part=part)
        message = {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [part]}
        yield event("response.output_item.done", output_index=0, item=message)
        final = self.response(body, response_id, created, status, [message], self.usage(texts, words), cut)
        self.keep(body, final, texts, words)
        yield event(f"response.{status}", response=final)
