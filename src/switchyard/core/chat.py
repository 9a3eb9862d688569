"""Generation requests and results, in the gateway's canonical (OpenAI) shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from switchyard.core.usage import Usage

__all__ = ["ChatRequest", "ChatResult", "GenerationKind", "StreamPiece"]


class GenerationKind(StrEnum):
    CHAT = "chat"  # POST /v1/chat/completions
    COMPLETION = "completion"  # POST /v1/completions (legacy)
    RESPONSES = "responses"  # POST /v1/responses, relayed to an upstream that speaks it (``body`` is its shape)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated generation request.

    ``body`` is the client's validated JSON with unknown fields kept, so OpenAI-compatible
    upstreams get them passed through. The typed fields are what the gateway itself reads.
    ``upstream_headers`` are client headers that upstreams of the client's own API take as
    given (``anthropic-beta`` and ``anthropic-version`` from ``/v1/messages``).
    """

    kind: GenerationKind
    model: str
    body: Mapping[str, Any]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    keep_alive: str | int | None = None
    upstream_headers: tuple[tuple[str, str], ...] = ()
    owner: str | None = None  # whose request: "team:<id>", "user:<id>" or "key:<id>" (set by the gateway)


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A whole (non-stream) response: OpenAI JSON bytes ready to send, plus its usage."""

    body: bytes
    usage: Usage


@dataclass(slots=True)
class StreamPiece:
    """Bytes of one or more complete OpenAI SSE events, relayed to the client as they are.

    ``usage`` is set on the piece that carried the provider's usage report. ``events`` counts
    the content events in ``data``, so a cut stream can still be accounted (estimated).
    """

    data: bytes
    events: int = 0
    usage: Usage | None = None
    done: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
