"""Rate limits and budgets around one request: admit before any upstream call, settle after.

Limits: the key's, the key's on this model, the key's team's, and the model's own; every one
must have room (all or nothing), and the tightest request and token counters go back to the
client as ``x-ratelimit-*`` headers, on success as on a 429.

Budgets are hard ceilings. Before the call the worst case is reserved against the key's and
its team's budgets: the prompt at one token per byte (no tokenizer makes more tokens than
bytes) plus ``max_tokens`` of output. When the request sets no ``max_tokens``, or more than
the budget can pay for, ``max_tokens`` is lowered to what it can pay for, so the upstream can
never produce a completion the budget cannot cover. After the call the hold is settled to the
real cost; a failed or abandoned request releases it (a cut stream is settled to what it
relayed).

The engines (in memory, or in Redis behind a fallback circuit) are chosen by the composition
root and reach this module only as the ``Limiter`` and ``BudgetLedger`` Protocols.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from switchyard.core.chat import ChatRequest, GenerationKind
from switchyard.core.keys import Principal
from switchyard.core.limits import (
    Admission,
    BudgetCheck,
    BudgetLedger,
    LimitCheck,
    Limiter,
    RateLimits,
    Reservation,
    ratelimit_headers,
)
from switchyard.core.usage import Usage

__all__ = ["Governance", "Ticket", "prompt_bytes"]


def prompt_bytes(body: Mapping[str, Any]) -> int:
    """An upper bound of the prompt's tokens: its UTF-8 bytes (messages, prompt, input, tools)."""
    total = 0
    for msg in body.get("messages") or ():
        if isinstance(msg, Mapping):
            content = msg.get("content")
            if isinstance(content, str):
                total += len(content.encode())
            elif isinstance(content, list):
                total += sum(len(str(p.get("text", "")).encode()) for p in content if isinstance(p, Mapping))
            total += 8  # role and framing
    for field in ("prompt", "input"):  # legacy completions, embeddings
        value = body.get(field)
        if isinstance(value, str):
            total += len(value.encode())
        elif isinstance(value, list):  # strings, or token ids (one token each)
            total += sum(len(v.encode()) if isinstance(v, str) else len(v) if isinstance(v, list) else 1
                         for v in value)
    for tool in body.get("tools") or ():
        total += len(str(tool).encode())
    return max(1, total)


@dataclass(slots=True)
class Ticket:
    """What one request holds: its limit admission and budget reservation."""

    admission: Admission | None = None
    reservation: Reservation | None = None
    headers: dict[str, str] | None = None


@lru_cache(maxsize=8192)
def _checks(limits: RateLimits, scope: str) -> tuple[LimitCheck, ...]:
    return tuple(limits.checks(scope))


class Governance:
    def __init__(self, limiter: Limiter, ledger: BudgetLedger) -> None:
        self._limiter = limiter
        self._ledger = ledger
        self._process = os.urandom(6).hex()  # leases: unique across replicas, cheap to make
        self._leases = itertools.count()

    @property
    def degraded(self) -> list[str]:
        """What runs on its per-process fallback because Redis is unreachable (for /ready)."""
        return [name for name, engine in (("limits", self._limiter), ("budgets", self._ledger))
                if getattr(engine, "degraded", False)]

    # -- which counters apply ------------------------------------------------------------
    @staticmethod
    def limit_checks(principal: Principal, alias: str, model: RateLimits | None) -> list[LimitCheck]:
        checks: list[LimitCheck] = []
        key = principal.key_id
        if key is not None:
            if principal.limits is not None:
                checks += _checks(principal.limits, f"key:{key}")
            per_model = _model_limits(principal.model_limits, alias)
            if per_model is not None:
                checks += _checks(per_model, f"key:{key}|model:{alias}")
            if principal.team_id is not None and principal.team_limits is not None:
                checks += _checks(principal.team_limits, f"team:{principal.team_id}")
        if model is not None:
            checks += _checks(model, f"model:{alias}")
        return checks

    @staticmethod
    def budget_checks(principal: Principal) -> list[BudgetCheck]:
        checks = []
        if principal.key_id is not None and principal.budget is not None:
            checks.append(BudgetCheck(f"key:{principal.key_id}", principal.budget.amount_usd,
                                      principal.budget.period))
        if principal.team_id is not None and principal.team_budget is not None:
            checks.append(BudgetCheck(f"team:{principal.team_id}", principal.team_budget.amount_usd,
                                      principal.team_budget.period))
        return checks

    @staticmethod
    def unlimited(principal: Principal, model: RateLimits | None) -> bool:
        """True when no limit or budget can apply (``admit`` would return no ticket): checked
        without a call to ``admit``, on every request's path. False means there may be some."""
        if model is not None:
            return False
        if principal.key_id is None:
            return True
        return (principal.limits is None and not principal.model_limits and principal.budget is None
                and (principal.team_id is None or (principal.team_limits is None and principal.team_budget is None)))

    # -- around a request -----------------------------------------------------------------
    async def admit(
        self, principal: Principal, alias: str, request: ChatRequest | None, body: Mapping[str, Any],
        prompt_tokens: Callable[[], int], prices: Callable[[], tuple[float, float]],
        model_limits: RateLimits | None = None,
    ) -> tuple[Ticket | None, ChatRequest | None]:
        """Take the limits and reserve the worst case at ``prices()`` (USD per token, input and
        output: the dearest of every deployment that may serve). Returns the ticket (None when
        nothing limits this request) and the request to send (``max_tokens`` lowered to what the
        budget can pay for, when it must be)."""
        checks = self.limit_checks(principal, alias, model_limits)
        budgets = self.budget_checks(principal)
        if not checks and not budgets:
            return None, request
        ticket = Ticket()
        lease = f"{self._process}-{next(self._leases)}"
        if checks:
            ticket.admission = await self._limiter.admit(checks, lease, prompt_tokens())
            ticket.headers = ratelimit_headers(ticket.admission.requests, ticket.admission.tokens)
        if not budgets:
            return ticket, request
        try:
            request = await self._reserve(ticket, budgets, lease, alias, request, prompt_bytes(body), prices())
        except BaseException:
            await self.abort(ticket)
            raise
        return ticket, request

    async def _reserve(self, ticket: Ticket, budgets: Sequence[BudgetCheck], lease: str, alias: str,
                       request: ChatRequest | None, prompt_bound: int, prices: tuple[float, float],
                       ) -> ChatRequest | None:
        in_price, out_price = prices
        prompt_cost = prompt_bound * in_price
        if request is None or out_price <= 0:  # embeddings, or output costs nothing
            ticket.reservation = await self._ledger.reserve(budgets, lease, prompt_cost)
            return request
        available = await self._ledger.available(budgets)
        affordable = math.floor((available - prompt_cost) / out_price)
        if affordable < 1:  # the ledger refuses it, naming the budget that is spent
            ticket.reservation = await self._ledger.reserve(budgets, lease, prompt_cost + out_price)
            return _with_max_tokens(request, 1)  # (room appeared meanwhile: one token's worth)
        wanted = request.max_tokens
        if wanted is None or wanted > affordable:
            request = _with_max_tokens(request, affordable)
        assert request.max_tokens is not None
        ticket.reservation = await self._ledger.reserve(budgets, lease, prompt_cost + request.max_tokens * out_price)
        return request

    async def finish(self, ticket: Ticket, usage: Usage | None, cost_usd: float) -> None:
        """The request ended with ``usage`` (None: it failed before using anything)."""
        if ticket.admission is not None:
            await self._limiter.settle(ticket.admission, usage.total_tokens if usage is not None else 0)
        if ticket.reservation is not None:
            if usage is None:
                await self._ledger.release(ticket.reservation)
            else:
                await self._ledger.settle(ticket.reservation, cost_usd)

    async def abort(self, ticket: Ticket) -> None:
        await self.finish(ticket, None, 0.0)

    async def aclose(self) -> None:
        await self._limiter.aclose()
        await self._ledger.aclose()


def _model_limits(limits: Mapping[str, RateLimits], alias: str) -> RateLimits | None:
    """The key's limits on this model: by exact alias, else the first matching pattern."""
    if not limits:
        return None
    found = limits.get(alias)
    if found is None:
        found = next((v for pattern, v in limits.items() if fnmatchcase(alias, pattern)), None)
    return found


def _with_max_tokens(request: ChatRequest, cap: int) -> ChatRequest:
    body = dict(request.body)
    if request.kind is GenerationKind.RESPONSES:
        field = "max_output_tokens"
    else:
        field = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    body[field] = cap
    return replace(request, body=body, max_tokens=cap)
