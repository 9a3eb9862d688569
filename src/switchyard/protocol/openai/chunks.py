"""OpenAI stream chunks, for whatever writes an OpenAI stream from another source (a translated
upstream, a local engine). Pure."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest, GenerationKind

__all__ = ["DONE", "ChunkWriter", "sse_chunk"]

DONE = b"data: [DONE]\n\n"


def sse_chunk(
    chunk_id: str, *, chat: bool, created: int, model: str, choices: list[dict[str, Any]],
    usage: dict[str, Any] | None, wants_usage: bool,
) -> bytes:
    """One ``data: {...}`` event: a ``chat.completion.chunk`` (or legacy ``text_completion``).

    ``usage`` is present on every chunk (null but on the last) only when the client asked for
    it with ``stream_options.include_usage``, as OpenAI does."""
    chunk: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if wants_usage:
        chunk["usage"] = usage
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class ChunkWriter:
    """The chunks of one stream, as OpenAI writes them: one id, one ``created``, the model the
    client asked for; chat deltas or legacy completion text."""

    __slots__ = ("chat", "created", "id", "model", "wants_usage")

    def __init__(self, request: ChatRequest, model: str) -> None:
        self.chat = request.kind is GenerationKind.CHAT
        self.wants_usage = request.include_usage
        self.id = self.id_for(uuid.uuid4().hex)
        self.created = int(time.time())
        self.model = model

    def id_for(self, suffix: str) -> str:
        """``chatcmpl-`` (or ``cmpl-``) and ``suffix``."""
        return f"{'chatcmpl' if self.chat else 'cmpl'}-{suffix}"

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        return sse_chunk(self.id, chat=self.chat, created=self.created, model=self.model, choices=choices,
                         usage=usage, wants_usage=self.wants_usage)

    def delta(self, delta: dict[str, Any], index: int = 0) -> bytes:
        """A chat chunk carrying one choice's ``delta``."""
        return self.chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])

    def text(self, text: str, index: int = 0) -> bytes:
        """New answer text: the delta's ``content`` in chat, the choice's ``text`` in a legacy completion."""
        if self.chat:
            return self.delta({"content": text}, index)
        return self.chunk([{"index": index, "text": text, "logprobs": None, "finish_reason": None}])

    def finish(self, reason: str | None, index: int = 0) -> bytes:
        """The chunk that ends one choice: an empty delta (or text) and its ``finish_reason``."""
        last: dict[str, Any] = {"index": index, "logprobs": None, "finish_reason": reason}
        last["delta" if self.chat else "text"] = {} if self.chat else ""
        return self.chunk([last])

    def usage(self, usage: dict[str, Any]) -> bytes:
        """The usage chunk (no choices), when the client asked for it; nothing otherwise."""
        return self.chunk([], usage) if self.wants_usage else b""
