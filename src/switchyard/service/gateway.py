"""The gateway pipeline for one request, as one loop.

    scope check ▶ route ▶ account (limits, budget hold) ▶ for each deployment of the plan:
        fit the request to the route (the contract) ▶ attempt (cooldown, gate) ▶ first piece
        ▶ relay the rest ▶ done          (a failure before the first piece: the next deployment)
      (none answered and some were skipped as cooling down: the one that failed longest ago, in panic)
    ▶ account (usage row, metrics, settle)

Chat, embeddings and streams all go through ``_serve``: a whole answer is a stream of one piece,
and ``chat`` and ``embed`` drain it. Failover ends with the first piece, so once a byte may
have reached the client nothing is retried.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Generator, Mapping
from contextlib import aclosing
from dataclasses import replace
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from switchyard.core.bounds import check_bounds
from switchyard.core.chat import ChatRequest, ChatResult, GenerationKind, StreamPiece
from switchyard.core.contract import enforce, enforce_embeddings
from switchyard.core.embeddings import EmbeddingRequest, EmbeddingResult
from switchyard.core.keys import Principal
from switchyard.core.models import Route, Target
from switchyard.core.ports import HoldsResponses, Provider
from switchyard.core.usage import Usage
from switchyard.errors import GatewayError, ModelNotFoundError
from switchyard.service.accounting import AccountedRequest, Accounting, estimate_prompt_tokens
from switchyard.service.attempt import Attempt, Attempts
from switchyard.service.call import CallContext, Outcome
from switchyard.service.cooldown import COOLDOWN_CODE
from switchyard.service.failover import Plan, order
from switchyard.service.routing import RoutingTable
from switchyard.service.upstreams import Upstreams

__all__ = ["Gateway"]

_P = TypeVar("_P")  # a piece of an answer: a whole result, or a stream's chunk
_P_co = TypeVar("_P_co", covariant=True)
_R = TypeVar("_R")  # a request, as fitted to one route


class _Pieces(Protocol[_P_co]):
    """What one attempt relays: an async generator (a stream), or a whole answer as one piece."""

    def __aiter__(self) -> AsyncIterator[_P_co]: ...

    def __anext__(self) -> Awaitable[_P_co]: ...

    def aclose(self) -> Awaitable[None]: ...


class Gateway:
    def __init__(
        self, upstreams: Upstreams, attempts: Attempts, accounting: Accounting, *, rng: random.Random | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.attempts = attempts
        self.accounting = accounting
        self._rng = rng or random.Random()  # load balancing, not security

    @property
    def routing(self) -> RoutingTable:
        return self.upstreams.routing

    def apply_routing(self, routing: RoutingTable) -> None:
        """Serve from a new routing table (models changed at run time)."""
        self.upstreams.apply_routing(routing)
        self.attempts.apply_routing(routing)

    def route_for(self, principal: Principal, model: str) -> Route:
        """Resolve a model the key may use. Out of scope looks exactly like unknown."""
        route = self.upstreams.routing.route(model)
        if not principal.may_use(route.alias):
            raise ModelNotFoundError(model)
        return route

    def responses_native(self, route: Route) -> bool:
        """``/v1/responses`` on this route is relayed to upstreams that speak it (no translation)."""
        return self.upstreams.routing.responses_native(route)

    def holder(self, provider: str) -> HoldsResponses | None:
        """The configured provider ``provider``, if its upstream keeps Responses API responses."""
        found = self.upstreams.providers().get(provider)
        return found if isinstance(found, HoldsResponses) else None

    def target_for(self, principal: Principal, model: str) -> Target:
        return self.route_for(principal, model).primary

    # -- the calls -----------------------------------------------------------------------
    async def chat(self, principal: Principal, request: ChatRequest, ctx: CallContext) -> ChatResult:
        route = self.route_for(principal, request.model)
        endpoint = ctx.endpoint or _ENDPOINTS[request.kind]
        if request.owner != (owner := principal.owner):
            request = replace(request, owner=owner)  # what a local model's prompt cache is scoped by
        async with self._accounted(principal, route, endpoint, ctx, False, request.body, request) as out:
            fit = partial(_fit, request=out.request or request)
            pieces = self._serve(principal, route, ctx, out, endpoint, False, fit, _answer)
            result = await anext(pieces)  # _serve yields or raises
            async for _ in pieces:  # nothing more: this lets the attempt end as a success
                pass
            out.status, out.usage = 200, result.usage
            if result.usage.estimated:
                out.usage = Usage(estimate_prompt_tokens(request.body), result.usage.completion_tokens, estimated=True)
            return result

    async def stream(self, principal: Principal, request: ChatRequest, ctx: CallContext) -> AsyncIterator[bytes]:
        """Relay the provider's SSE bytes; account for them however the stream ends.

        Routing, limits, the contract, admission and the wait for the first piece happen before
        the first yield, so errors there are raised when the caller first advances the iterator,
        before any byte is sent, and the next deployment may still be tried. Once a byte is
        sent, never.
        """
        route = self.route_for(principal, request.model)
        endpoint = ctx.endpoint or _ENDPOINTS[request.kind]
        if request.owner != (owner := principal.owner):
            request = replace(request, owner=owner)  # what a local model's prompt cache is scoped by
        async with self._accounted(principal, route, endpoint, ctx, True, request.body, request) as out:
            fit = partial(_fit, request=out.request or request)
            async with aclosing(self._serve(principal, route, ctx, out, endpoint, True, fit, _stream)) as pieces:
                async for piece in pieces:
                    out.events += piece.events
                    if piece.usage is not None:
                        out.usage = piece.usage
                    yield piece.data
            out.status = 200

    async def embed(self, principal: Principal, request: EmbeddingRequest, ctx: CallContext) -> EmbeddingResult:
        route = self.route_for(principal, request.model)
        body = request.body or {}
        async with self._accounted(principal, route, "embeddings", ctx, False, body) as out:

            def fit(candidate: Route) -> EmbeddingRequest:
                enforce_embeddings(candidate.capabilities)
                return request

            result = await _drained(self._serve(principal, route, ctx, out, "embeddings", False, fit, _embedding))
            out.status, out.usage = 200, result.usage
            return result

    # -- the one attempt loop ------------------------------------------------------------
    async def _serve(
        self, principal: Principal, route: Route, ctx: CallContext, out: Outcome, endpoint: str, streamed: bool,
        fit: Callable[[Route], _R], call: Callable[[Provider, _R, Target], _Pieces[_P]],
    ) -> AsyncGenerator[_P, None]:
        """The pieces of the first deployment in the plan that answers; the last error when none does.

        ``fit`` makes the request fit a route (once per route); its refusal is handled like a
        failed attempt, so a prompt too long for one alias can go to its context fallbacks.
        A failure after the first piece is never retried.
        """
        plan = Plan(route, principal, self.upstreams.routing.route, self._order, ctx.pinned_provider)
        fitted: dict[str, _R] = {}
        last: GatewayError | None = None
        cooling: list[tuple[Route, Target]] = []  # skipped as cooling down: the panic candidates
        for candidate, target, panic in _Tries(plan, cooling, self.attempts.cooldowns.last_failure):
            relayed = False
            try:
                if candidate.alias not in fitted:
                    fitted[candidate.alias] = fit(candidate)
                pieces = call(self.upstreams.provider(target.provider), fitted[candidate.alias], target)
                try:
                    async with Attempt(self.attempts, target, ctx, out, endpoint, streamed, panic) as attempt:
                        piece = await attempt.first(pieces)
                        relayed = True
                        yield piece
                        if streamed:  # else a whole answer: its one piece was all
                            async for piece in pieces:
                                yield piece
                        attempt.succeeded()
                        return
                finally:
                    await pieces.aclose()
            except GatewayError as exc:
                if relayed or not plan.failed(candidate, exc):
                    raise
                if exc.code == COOLDOWN_CODE and not panic:
                    cooling.append((candidate, target))
                elif exc.code == "context_length_exceeded":  # that alias cannot take the prompt at all
                    cooling[:] = [(r, t) for r, t in cooling if r.alias != candidate.alias]
                last = exc
        if last is None:  # pinned to a provider none of the plan's deployments is on (the caller checks first)
            raise ModelNotFoundError(route.alias)
        raise last

    def _order(self, route: Route) -> list[Target]:
        return order(route, self.attempts.busy, self._rng)

    def _accounted(
        self, principal: Principal, route: Route, endpoint: str, ctx: CallContext, streamed: bool,
        body: Mapping[str, Any], request: ChatRequest | None = None,
    ) -> AccountedRequest:
        prices = partial(self.upstreams.routing.prices, route)
        return AccountedRequest(self.accounting, principal, route, endpoint, ctx, streamed, body, prices, request)


_ENDPOINTS = {GenerationKind.CHAT: "chat", GenerationKind.COMPLETION: "completions",
              GenerationKind.RESPONSES: "responses"}


def _fit(route: Route, request: ChatRequest) -> ChatRequest:
    """The request as this route can honour it: 400 naming what it cannot, unless dropped."""
    caps = route.capabilities
    body: Mapping[str, Any] = request.body
    check_bounds(body, caps, route.bounds)  # absurd requests stop here, before any upstream call
    native = request.kind is GenerationKind.RESPONSES  # relayed to an upstream that answers for its own API
    if not native and not (caps.unrestricted and "n" not in body and "best_of" not in body):  # else nothing to check
        prompt = estimate_prompt_tokens(body) if caps.context_length else None
        body = enforce(body, caps, route.drop, prompt_tokens=prompt)
    if route.default_temperature is not None and body.get("temperature") is None:
        body = {**body, "temperature": route.default_temperature}
    return request if body is request.body else replace(request, body=body)


class _Tries:
    """The plan's deployments; then, when some were skipped as cooling down and none of the
    others answered, the one that failed longest ago, tried anyway (panic mode): a breaker
    steers traffic to a healthy deployment, it never leaves a request with nothing to try.
    (An iterator, not a generator: one left unfinished needs no closing, on every request.)"""

    __slots__ = ("_cooling", "_done", "_last_failure", "_plan")

    def __init__(self, plan: Plan, cooling: list[tuple[Route, Target]], last_failure: Callable[[str], float]) -> None:
        self._plan, self._cooling, self._last_failure = plan, cooling, last_failure
        self._done = False

    def __iter__(self) -> _Tries:
        return self

    def __next__(self) -> tuple[Route, Target, bool]:
        if self._done:
            raise StopIteration
        found = next(self._plan, None)
        if found is not None:
            return found[0], found[1], False
        self._done = True
        if not self._cooling:
            raise StopIteration
        candidate, target = min(self._cooling, key=lambda rt: self._last_failure(rt[1].breaker))
        return candidate, target, True


class _Whole(Generic[_P]):
    """A whole answer as a stream of one piece: the provider's call, awaited when the loop asks
    for the first piece (a class, not an async generator: this is on every request's path)."""

    __slots__ = ("_call",)

    def __init__(self, call: Coroutine[Any, Any, _P]) -> None:
        self._call: Coroutine[Any, Any, _P] | None = call

    def __aiter__(self) -> _Whole[_P]:
        return self

    def __anext__(self) -> Awaitable[_P]:  # the call itself: no coroutine around it
        call, self._call = self._call, None
        if call is None:
            raise StopAsyncIteration
        return call

    def aclose(self) -> Awaitable[None]:
        if self._call is not None:  # never asked for: the call was never started
            self._call.close()
            self._call = None
        return _DONE  # nothing to wait for: no coroutine made


class _Done:
    """An awaitable that is already done (reusable: it holds nothing)."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return iter(())  # type: ignore[return-value]  # an empty iterator: the await ends at once


_DONE = _Done()


def _answer(provider: Provider, request: ChatRequest, target: Target) -> _Whole[ChatResult]:
    return _Whole(provider.chat(request, target))


def _stream(provider: Provider, request: ChatRequest, target: Target) -> AsyncGenerator[StreamPiece, None]:
    return provider.stream(request, target)  # type: ignore[return-value]  # providers' streams are generators


def _embedding(provider: Provider, request: EmbeddingRequest, target: Target) -> _Whole[EmbeddingResult]:
    return _Whole(provider.embed(request, target))


async def _drained(pieces: AsyncGenerator[_P, None]) -> _P:
    """A whole answer: the one piece, once the loop that produced it has finished (it always
    finishes here, by returning or raising, so it needs no closing)."""
    answer = await anext(pieces)  # _serve yields or raises
    async for _ in pieces:  # nothing more: this lets the attempt end as a success
        pass
    return answer
