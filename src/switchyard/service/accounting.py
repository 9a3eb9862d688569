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
from collections.abc import Callable, Mapping
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

__all__ = ["AccountedRequest", "Accounting", "estimate_input_tokens", "estimate_prompt_tokens"]

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

    def request(
        self, principal: Principal, route: Route, endpoint: str, ctx: CallContext, *, streamed: bool,
        body: Mapping[str, Any], prices: Callable[[], tuple[float, float]], request: ChatRequest | None = None,
    ) -> AccountedRequest:
        """One client request, however it ends and however many attempts it took (``async with``).

        Limits are taken and the budget's worst case held first (the ``Outcome`` carries the
        request as governance lets it go). The caller sets ``status`` (200) and ``usage`` on
        success; a gateway error sets its status; a cancellation (the client left) stays 499.
        """
        return AccountedRequest(self, principal, route, endpoint, ctx, streamed, body, prices, request)

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
                team_id=principal.team_id,
            )
        )
        self._metrics.observe(
            target.alias, target.provider, endpoint, status, seconds, usage.prompt_tokens, usage.completion_tokens, cost
        )
        return cost


class AccountedRequest:
    """The context of :meth:`Accounting.request`; a class, as this is on every request's path."""

    __slots__ = ("_acc", "_body", "_ctx", "_endpoint", "_prices", "_principal", "_route", "_started", "_streamed",
                 "_ticket", "outcome")

    def __init__(self, accounting: Accounting, principal: Principal, route: Route, endpoint: str, ctx: CallContext,
                 streamed: bool, body: Mapping[str, Any], prices: Callable[[], tuple[float, float]],
                 request: ChatRequest | None) -> None:
        self._acc, self._principal, self._route, self._endpoint = accounting, principal, route, endpoint
        self._ctx, self._streamed, self._body, self._prices = ctx, streamed, body, prices
        self.outcome = Outcome(request=request)
        self._ticket: Ticket | None = None
        self._started = 0.0

    async def __aenter__(self) -> Outcome:
        route, ctx, outcome = self._route, self._ctx, self.outcome
        ctx.model = route.alias
        self._started = time.perf_counter()
        governance = self._acc.governance
        if governance is not None and not governance.unlimited(self._principal, route.limits):
            try:
                self._ticket, outcome.request = await governance.admit(
                    self._principal, route.alias, outcome.request, self._body,
                    partial(estimate_prompt_tokens, self._body), self._prices, route.limits)
            except BaseException as exc:
                await self.__aexit__(type(exc), exc, exc.__traceback__)
                raise
            if self._ticket is not None:
                ctx.headers = self._ticket.headers
        return outcome

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        outcome, ctx, route, body, streamed = self.outcome, self._ctx, self._route, self._body, self._streamed
        if isinstance(exc, GatewayError):
            outcome.status, outcome.error = exc.status_code, exc.message
        elif isinstance(exc, Exception):
            outcome.status = 500
        acc = self._acc
        target = outcome.target or route.primary
        if outcome.status >= 400 and outcome.status != CLIENT_CLOSED:
            acc.recent_errors.append({
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
        cost = acc._account(self._principal, target, self._endpoint, ctx, self._started, outcome.status,
                            usage, streamed)
        ticket = self._ticket
        if ticket is not None:  # a request that produced nothing releases its hold; others pay what they used
            used = outcome.status == 200 or outcome.usage is not None or outcome.events > 0 or left_upstream
            await acc.governance.finish(ticket, usage if used else None, cost)  # type: ignore[union-attr]
