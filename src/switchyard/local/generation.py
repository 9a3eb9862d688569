"""One generation, as the event loop sees it: tokens arrive from the engine's thread and leave
as final text, with stop sequences cut out and the finish reason decided.

    engine thread ──on_token──▶ loop queue ──▶ Detokenizer ──▶ StopMatcher ──▶ text pieces
                  ──on_done───▶ finish: "stop" | "length" | (cancelled) | error

Closing a ``TokenStream`` early (the client went away, a stop sequence matched) cancels the
engine's job and waits until the engine confirms, so the slot is free when ``aclose`` returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from switchyard.errors import GatewayError, ServiceUnavailableError
from switchyard.local.engine import ChatEngine, Job, SamplingParams

__all__ = ["StopMatcher", "TokenStream"]

_CANCEL_WAIT = 30.0  # seconds aclose waits for the engine to confirm a cancel


class StopMatcher:
    """Finds stop sequences in streamed text, also when one straddles two pieces.

    ``push`` returns the text that is safe to emit now: everything except a tail that could
    still become the start of a stop sequence. After a match, ``hit`` is set and nothing more
    is emitted; the stop sequence itself never is (as OpenAI does)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.hit = False

    def push(self, text: str) -> str:
        if self.hit:
            return ""
        if not self._stops:
            return text
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            self._held = ""
            return buf[:cut]
        keep = 0
        for stop in self._stops:  # the longest tail of buf that is a proper prefix of a stop
            for n in range(min(len(stop) - 1, len(buf)), keep, -1):
                if buf.endswith(stop[:n]):
                    keep = n
                    break
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.hit else held


class TokenStream:
    """Async iterator of text pieces from one engine job. After iteration: ``finish_reason``
    (``stop`` or ``length``) and ``completion_tokens`` (every token sampled, as OpenAI counts)."""

    def __init__(self, engine: ChatEngine, prompt: Sequence[int], params: SamplingParams,
                 grammar: object | None, stops: Sequence[str], owner: str | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[int | str | BaseException] = asyncio.Queue()
        self._detok = engine.detokenizer()
        self._stops = StopMatcher(stops)
        self._ended = asyncio.Event()
        self.finish_reason: str | None = None
        self.completion_tokens = 0
        self._closed = False
        self._job: Job = engine.submit(prompt, params, grammar, self._on_token, self._on_done, owner)

    # engine thread -> loop
    def _on_token(self, token: int) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, token)

    def _on_done(self, outcome: str | BaseException) -> None:
        self._loop.call_soon_threadsafe(self._done, outcome)

    def _done(self, outcome: str | BaseException) -> None:
        self._queue.put_nowait(outcome)
        self._ended.set()

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> str:
        while self.finish_reason is None:
            item = await self._queue.get()
            if isinstance(item, int):
                self.completion_tokens += 1
                text = self._stops.push(self._detok.push(item))
                if self._stops.hit:
                    self.finish_reason = "stop"
                    self._job.cancel()
                if text:
                    return text
                continue
            if isinstance(item, BaseException):
                self.finish_reason = "error"
                if isinstance(item, GatewayError):
                    raise item
                raise ServiceUnavailableError(f"The local engine failed: {type(item).__name__}: {item}") from item
            self.finish_reason = "length" if item == "length" else "stop"
            tail = self._stops.push(self._detok.flush())
            tail += self._stops.flush()
            if tail:
                return tail
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Cancel the job if it still runs, and wait until the engine let go of it."""
        if self._closed:
            return
        self._closed = True
        if not self._ended.is_set():
            self._job.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(self._ended.wait()), _CANCEL_WAIT)
            except TimeoutError:
                pass
