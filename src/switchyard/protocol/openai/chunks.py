"""OpenAI stream chunks, for whatever writes an OpenAI stream from another source (a translated
upstream, a local engine). Pure."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["sse_chunk"]


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
