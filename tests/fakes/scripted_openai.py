"""A fake OpenAI-compatible upstream whose chat answers a test scripts turn by turn.

``FakeOpenAI`` with one more knob: ``script(body)`` returns a :class:`Turn` (reasoning, text
and tool calls, as a reasoning model behind vLLM or Ollama answers) or ``None`` to let the
plain fake answer. Streams split the reasoning and the text into one delta per word, so a
client sees several of each. The reasoning goes as ``reasoning_content`` (vLLM, DeepSeek) or,
with ``reasoning_key="reasoning"``, as Ollama and OpenRouter send it. Models named in
``no_reasoning`` refuse ``reasoning_effort`` with OpenAI's 400, as its models without reasoning do.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ._gen import count_words, split_words
from .openai_upstream import FakeOpenAI, _Bad, error_response


@dataclass(frozen=True)
class Turn:
    text: str = ""
    reasoning: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (name, arguments)


Script = Callable[[dict[str, Any]], Turn | None]


class ScriptedOpenAI(FakeOpenAI):
    def __init__(self, script: Script, *, reasoning_key: str = "reasoning_content",
                 no_reasoning: frozenset[str] = frozenset(), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.script = script
        self.reasoning_key = reasoning_key
        self.no_reasoning = no_reasoning

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._prelude(request, "messages")
        except _Bad as bad:
            return bad.response
        if body.get("reasoning_effort") is not None and body["model"] in self.no_reasoning:
            return error_response(400, "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                                  param="reasoning_effort", code="unsupported_parameter")
        turn = self.script(body)
        if turn is None:
            return await super()._chat(request)
        calls = [{"id": f"call_{secrets.token_hex(12)}", "type": "function",
                  "function": {"name": name, "arguments": json.dumps(args)}} for name, args in turn.tool_calls]
        finish = "tool_calls" if calls else "stop"
        completion = len(split_words(turn.text)) + len(split_words(turn.reasoning)) + len(calls)
        usage = self._usage(body, count_words(body["messages"]), completion)
        if body.get("stream") is True:
            return await self._send(request, body, self._turn_events(turn, calls, finish), usage)
        msg: dict[str, Any] = {"role": "assistant", "content": turn.text or None, "refusal": None, "annotations": []}
        if turn.reasoning:
            msg[self.reasoning_key] = turn.reasoning
        if calls:
            msg["tool_calls"] = calls
        resp = {**self._head(body, "chatcmpl", "chat.completion"), "service_tier": "default",
                "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}]}
        if usage is not None:
            resp["usage"] = usage
        return web.json_response(resp)

    def _turn_events(self, turn: Turn, calls: list[dict[str, Any]], finish: str) -> Iterator[dict[str, Any]]:
        def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
            return {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}

        yield chunk({"role": "assistant", "content": ""})
        for word in split_words(turn.reasoning):
            yield chunk({self.reasoning_key: word})
        for word in split_words(turn.text):
            yield chunk({"content": word})
        for i, call in enumerate(calls):
            args = call["function"]["arguments"]
            yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                         "function": {"name": call["function"]["name"], "arguments": ""}}]})
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                yield chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
        yield chunk({}, finish)
