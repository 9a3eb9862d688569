"""What one request used and how it ended, however it ends: limits and budgets taken before any
upstream call and settled after, a usage row, the request metrics, and the recent-errors ring.

A request that fails is accounted with its error status; one whose client left stays 499
(``CLIENT_CLOSED``). A stream is accounted for what it relayed: when the upstream reported no
usage, the prompt is estimated (about four characters a token) and the completion counted in
content events, marked estimated.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest
from switchyard.core.keys import Principal
from switchyard.core.models import Route, Target
from switchyard.core.usage import Usage, UsageRecord
from switchyard.errors import GatewayError
from switchyard.observability.metrics import Metrics
from switchyard.service.call import CLIENT_CLOSED, CallContext, Outcome
from switchyard.service.governance import Governance, Ticket

__all__ = ["Accounting", "estimate_input_tokens", "estimate_prompt_tokens"]

_RECENT_ERRORS = 50


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """About four characters a token, for upstreams that report no usage."""
    chars = 0
    for msg in body.get("messages") or ():
        content = msg.get("content") if isinstance(msg, Mapping) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, Mapping))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        chars += len(prompt)
    chars += _input_chars(body.get("input"))  # a Responses body relayed as it is
    return max(1, chars // 4)


def _input_chars(given: Any) -> int:
    """The text of a Responses ``input``: a string, or its items' content and outputs."""
    if isinstance(given, str):
        return len(given)
    chars = 0
    for item in given if isinstance(given, list) else ():
        if not isinstance(item, Mapping):
            continue
        for key in ("content", "output", "arguments", "input"):
            value = item.get(key)
            if isinstance(value, str):
                chars += len(value)
            elif isinstance(value, list):
                chars += sum(len(str(p.get("text", ""))) for p in value if isinstance(p, Mapping))
    return chars


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """What a token-count endpoint reports: the prompt, plus tool schemas and earlier tool calls."""
    chars = sum(len(orjson.dumps(tool)) for tool in body.get("tools") or ())
    for msg in body.get("messages") or ():
        for call in (msg.get("tool_calls") if isinstance(msg, Mapping) else None) or ():
            function = call.get("function") or {}
            chars += len(str(function.get("name", ""))) + len(str(function.get("arguments", "")))
    return estimate_prompt_tokens(body) + chars // 4


class Accounting:
    def __init__(
        self, record: Callable[[UsageRecord], None], metrics: Metrics, governance: Governance | None = None,
    ) -> None:
        self._record = record  # synchronous and never fails (UsageRecorder.record)
        self._metrics = metrics
        self.governance = governance
        self.recent_errors: deque[dict[str, object]] = deque(maxlen=_RECENT_ERRORS)  # for operators

    @asynccontextmanager
    async def request(
        self, principal: Principal, route: Route, endpoint: str, ctx: CallContext, *, streamed: bool,
        body: Mapping[str, Any], prices: Callable[[], tuple[float, float]], request: ChatRequest | None = None,
    ) -> AsyncIterator[Outcome]:
        """One client request, however it ends and however many attempts it took.

        Limits are taken and the budget's worst case held first (the ``Outcome`` carries the
        request as governance lets it go). The caller sets ``status`` (200) and ``usage`` on
        success; a gateway error sets its status; a cancellation (the client left) stays 499.
        """
        ctx.model = route.alias
        outcome = Outcome(request=request)
        started = time.perf_counter()
        ticket: Ticket | None = None
        try:
            if self.governance is not None:
                ticket, outcome.request = await self.governance.admit(
                    principal, route.alias, request, body, partial(estimate_prompt_tokens, body),
                    prices, route.limits)
                if ticket is not None:
                    ctx.headers = ticket.headers
            yield outcome
        except GatewayError as exc:
            outcome.status, outcome.error = exc.status_code, exc.message
            raise
        except Exception:
            outcome.status = 500
            raise
        finally:
            target = outcome.target or route.primary
            if outcome.status >= 400 and outcome.status != CLIENT_CLOSED:
                self.recent_errors.append({
                    "at": datetime.now(UTC).isoformat(), "request_id": ctx.request_id, "model": target.alias,
                    "provider": target.provider, "status": outcome.status,
                    "message": outcome.error or "internal error",
                })
            usage = outcome.usage
            # a whole answer the client left while the upstream worked on it: its prompt was spent
            left_upstream = outcome.status == CLIENT_CLOSED and ctx.upstream_s > 0
            if usage is None:
                estimate = streamed or left_upstream
                usage = Usage(estimate_prompt_tokens(body), outcome.events, estimated=True) if estimate else Usage()
            cost = self._account(principal, target, endpoint, ctx, started, outcome.status, usage, streamed)
            if ticket is not None:  # a request that produced nothing releases its hold; others pay what they used
                used = outcome.status == 200 or outcome.usage is not None or outcome.events > 0 or left_upstream
                await self.governance.finish(ticket, usage if used else None, cost)  # type: ignore[union-attr]

    def _account(self, principal: Principal, target: Target, endpoint: str, ctx: CallContext, started: float,
                 status: int, usage: Usage, streamed: bool) -> float:
        """The usage row and the request metrics; returns the cost (what the budget settles to)."""
        seconds = time.perf_counter() - started
        cost = target.cost(usage)
        self._record(
            UsageRecord(
                created_at=datetime.now(UTC),
                request_id=ctx.request_id,
                key_id=principal.key_id,
                model=target.alias,
                provider=target.provider,
                endpoint=endpoint,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                latency_ms=seconds * 1000.0,
                status=status,
                streamed=streamed,
                estimated=usage.estimated,
                cost_usd=cost,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                session_id=ctx.session_id,
            )
        )
        self._metrics.observe(
            target.alias, target.provider, endpoint, status, seconds, usage.prompt_tokens, usage.completion_tokens, cost
        )
        return cost
