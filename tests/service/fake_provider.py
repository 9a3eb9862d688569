"""A fake Provider for in-process tests of the pipeline, in the manner of httpx's MockTransport.

``FakeProvider(handler)`` is a real object implementing ``core.ports.Provider``. Each call on
it (chat, stream, embed) is recorded as a ``Call`` and handed to ``handler``, which answers the
way an upstream would: it returns the answer, or raises a ``switchyard.errors`` error (what a
provider client raises for an upstream that failed). For a stream, the handler returns the
pieces; an exception among them is raised at that point, after the pieces before it were
relayed (a stream cut mid-way).

    def handler(call: Call) -> Answer:
        if call.target.provider == "down":
            raise UpstreamConnectionError("refused")
        return stream_of("Hello there") if call.kind == "stream" else completion("Hello there")

Wire formats are not this fake's business: the loopback fakes in ``tests/fakes`` speak them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from switchyard.core.chat import ChatRequest, ChatResult, StreamPiece
from switchyard.core.embeddings import EmbeddingRequest, EmbeddingResult
from switchyard.core.models import Target
from switchyard.core.usage import Usage

__all__ = ["Answer", "Call", "FakeProvider", "completion", "stream_of", "vectors"]

Answer = ChatResult | EmbeddingResult | Iterable[StreamPiece | BaseException]
Handler = Callable[["Call"], Answer | Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Call:
    """One call the pipeline made on the provider: what it asked, of which deployment."""

    kind: Literal["chat", "stream", "embed"]
    request: ChatRequest | EmbeddingRequest
    target: Target

    @property
    def body(self) -> dict[str, Any]:
        """The request body as the provider received it (after the contract and governance)."""
        return dict(self.request.body or {})


class FakeProvider:
    def __init__(self, handler: Handler, models: Sequence[str] = ()) -> None:
        self._handler = handler
        self.models = list(models)
        self.calls: list[Call] = []
        self.closed = False

    async def _answer(self, call: Call) -> Answer:
        self.calls.append(call)
        answer = self._handler(call)
        if isinstance(answer, Awaitable):
            return await answer
        return answer

    async def chat(self, request: ChatRequest, target: Target) -> ChatResult:
        answer = await self._answer(Call("chat", request, target))
        assert isinstance(answer, ChatResult), f"the handler answered a chat call with {answer!r}"
        return answer

    async def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamPiece]:
        answer = await self._answer(Call("stream", request, target))
        assert not isinstance(answer, ChatResult | EmbeddingResult), "the handler answered a stream with a whole answer"
        for piece in answer:
            if isinstance(piece, BaseException):
                raise piece
            yield piece
            await asyncio.sleep(0)  # a real upstream's chunks arrive one by one

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResult:
        answer = await self._answer(Call("embed", request, target))
        assert isinstance(answer, EmbeddingResult), f"the handler answered an embedding call with {answer!r}"
        return answer

    async def list_models(self) -> Sequence[str]:
        return list(self.models)

    async def aclose(self) -> None:
        self.closed = True


# -- answers --------------------------------------------------------------------------------
def completion(text: str = "Hello!", usage: Usage | None = Usage(5, 2), model: str = "fake-model") -> ChatResult:
    """A whole chat completion; ``usage`` None: the upstream reported none (estimated)."""
    body: dict[str, Any] = {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                         "total_tokens": usage.total_tokens}
    return ChatResult(orjson.dumps(body), usage if usage is not None else Usage(estimated=True))


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def stream_of(text: str = "Hello there friend", usage: Usage | None = Usage(5, 3),
              fail: BaseException | None = None, model: str = "fake-model") -> list[StreamPiece | BaseException]:
    """A chat stream, one content event per word; then the usage event (unless None) and
    ``[DONE]``, or, with ``fail``, that error in their place (the stream is cut)."""
    head = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}
    pieces: list[StreamPiece | BaseException] = [
        StreamPiece(_event({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}))]
    for word in text.split():
        pieces.append(StreamPiece(_event({**head, "choices": [{"index": 0, "delta": {"content": word + " "}}]}),
                                  events=1))
    if fail is not None:
        return [*pieces, fail]
    pieces.append(StreamPiece(_event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})))
    if usage is not None:
        pieces.append(StreamPiece(_event({**head, "choices": [], "usage": {
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}}), usage=usage))
    pieces.append(StreamPiece(b"data: [DONE]\n\n"))
    return pieces


def vectors(count: int = 1, dimensions: int = 3, usage: Usage = Usage(4), model: str = "fake-embed") -> EmbeddingResult:
    return EmbeddingResult([[0.5] * dimensions for _ in range(count)], usage, model)
