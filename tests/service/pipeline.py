"""The gateway pipeline in-process: the real service objects (routing, attempts, accounting,
governance) with a ``FakeProvider`` at the provider seam, and no server, database or socket."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from switchyard.core.chat import ChatResult
from switchyard.core.embeddings import EmbeddingResult
from switchyard.core.keys import Principal
from switchyard.core.usage import UsageRecord
from switchyard.errors import GatewayError
from switchyard.observability.metrics import Metrics
from switchyard.protocol.openai import parse_chat_request, parse_embedding_request
from switchyard.service.accounting import Accounting
from switchyard.service.attempt import Attempts
from switchyard.service.call import CallContext
from switchyard.service.gateway import Gateway
from switchyard.service.governance import Governance
from switchyard.service.routing import RoutingTable
from switchyard.service.upstreams import Upstreams
from switchyard.settings import Settings
from tests.service.fake_provider import Answer, Call, FakeProvider, Handler

__all__ = ["ADMIN", "HELLO", "FakeClock", "Pipeline", "Streamed"]

ADMIN = Principal(key_id=None, name="admin", is_admin=True)
HELLO = [{"role": "user", "content": "hello there"}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Streamed:
    """What a client of a stream saw: the chunks, and the error that ended it (if one did)."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.chunks: list[bytes] = []
        self.error: GatewayError | None = None

    @property
    def text(self) -> bytes:
        return b"".join(self.chunks)


class Pipeline:
    """A gateway over ``FakeProvider``s, one per upstream of the configuration, all answering
    through ``handler``. Usage rows land in ``rows``; cooldowns run on ``clock``."""

    def __init__(self, config: dict[str, Any], handler: Handler, *, governance: Governance | None = None,
                 seed: int = 7) -> None:
        self.routing = RoutingTable(Settings.model_validate({"bundled_models": "off", **config}))
        self.calls: list[Call] = []  # every provider's, in order

        def journaled(call: Call) -> Answer | Awaitable[Answer]:
            self.calls.append(call)
            return handler(call)

        self.providers = {name: FakeProvider(journaled) for name in self.routing.upstreams}
        self.metrics = Metrics()
        self.rows: list[UsageRecord] = []
        self.clock = FakeClock()
        self.attempts = Attempts(self.routing, self.metrics, clock=self.clock)
        self.upstreams = Upstreams(self.routing, self.providers, cooldowns=self.attempts.cooldowns)
        self.accounting = Accounting(self.rows.append, self.metrics, governance)
        self.gateway = Gateway(self.upstreams, self.attempts, self.accounting, rng=random.Random(seed))
        self._requests = 0

    def context(self) -> CallContext:
        self._requests += 1
        return CallContext(f"req-{self._requests}")

    def asked(self) -> list[str]:
        """The upstream models asked so far, in order, over every provider."""
        return [call.target.upstream_model for call in self.calls]

    async def chat(self, model: str, *, principal: Principal = ADMIN, **extra: Any) -> tuple[ChatResult, CallContext]:
        ctx = self.context()
        request = parse_chat_request({"model": model, "messages": HELLO, **extra})
        return await self.gateway.chat(principal, request, ctx), ctx

    async def refused(self, model: str, *, principal: Principal = ADMIN, **extra: Any
                      ) -> tuple[GatewayError, CallContext]:
        """The error a chat request ends with (it must end with one)."""
        ctx = self.context()
        request = parse_chat_request({"model": model, "messages": HELLO, **extra})
        try:
            await self.gateway.chat(principal, request, ctx)
        except GatewayError as exc:
            return exc, ctx
        raise AssertionError(f"{model} answered")

    async def embed(self, model: str, *, principal: Principal = ADMIN) -> tuple[EmbeddingResult, CallContext]:
        ctx = self.context()
        return await self.gateway.embed(principal, parse_embedding_request({"model": model, "input": "hi"}), ctx), ctx

    def open_stream(self, model: str, *, principal: Principal = ADMIN, **extra: Any
                    ) -> tuple[AsyncIterator[bytes], CallContext]:
        ctx = self.context()
        request = parse_chat_request({"model": model, "messages": HELLO, "stream": True, **extra})
        return self.gateway.stream(principal, request, ctx), ctx

    async def stream(self, model: str, *, principal: Principal = ADMIN, leave_after: int | None = None,
                     **extra: Any) -> Streamed:
        """Read a stream as the HTTP edge does: an error before the first chunk is raised (an
        ordinary HTTP error); after it, it ends the stream. ``leave_after``: the client goes
        away after that many chunks."""
        chunks, ctx = self.open_stream(model, principal=principal, **extra)
        seen = Streamed(ctx)
        try:
            seen.chunks.append(await anext(chunks))
            async for chunk in chunks:
                if leave_after is not None and len(seen.chunks) >= leave_after:
                    break
                seen.chunks.append(chunk)
        except GatewayError as exc:
            if not seen.chunks:
                raise
            seen.error = exc
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        return seen

    def row(self, ctx: CallContext) -> UsageRecord:
        [row] = [r for r in self.rows if r.request_id == ctx.request_id]
        return row

    def metric(self, line: str) -> bool:
        return line in self.metrics.render().decode()
