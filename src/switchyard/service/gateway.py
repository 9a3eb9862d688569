"""The gateway pipeline for one request: scope check, route, contract, admit, call (failing over
before the first byte), relay, account."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from switchyard.core.bounds import check_bounds
from switchyard.core.capabilities import enforce, enforce_embeddings
from switchyard.core.chat import ChatRequest, ChatResult, GenerationKind, StreamPiece
from switchyard.core.embeddings import EmbeddingRequest, EmbeddingResult
from switchyard.core.keys import Principal
from switchyard.core.models import Route, Target, UpstreamSpec
from switchyard.core.ports import Provider, ReportsRunningModels
from switchyard.core.usage import Usage, UsageRecord
from switchyard.errors import GatewayError, ModelNotFoundError, ServiceUnavailableError, UpstreamError
from switchyard.observability.metrics import Metrics
from switchyard.service.accounting import UsageRecorder
from switchyard.service.concurrency import ConcurrencyGate
from switchyard.service.cooldown import CooldownPolicy, Cooldowns
from switchyard.service.failover import Plan, order
from switchyard.service.governance import Governance, Ticket
from switchyard.service.routing import RoutingTable, display_url

__all__ = ["CLIENT_CLOSED", "CallContext", "Gateway", "estimate_prompt_tokens"]

_T = TypeVar("_T")
_R = TypeVar("_R")
CLIENT_CLOSED = 499  # nginx's code for "client closed the request"
_DISCOVERY_TTL = 30.0
_DISCOVERY_TIMEOUT = 3.0
_RECENT_ERRORS = 50
_RETIRED_GRACE = 600.0  # seconds a replaced provider stays open for the requests still using it
_UPSTREAM_FAILURES = frozenset({502, 503, 504})  # no connection, upstream 5xx/overloaded, timeout
_MODEL_FAULTS = frozenset({"malformed_function_call"})  # 502s that say nothing about the upstream's health


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
    return max(1, chars // 4)




@dataclass(slots=True)
class CallContext:
    """One request's identity and timings, shared with the HTTP edge.

    ``upstream_s`` is how long the response waited on the upstream before it could start
    (non-stream: the whole call; stream: until the first chunk). The edge subtracts it from
    the elapsed time to report the gateway's own overhead. ``deployment`` and ``attempts`` say
    which deployment served and how many were tried (response headers).
    """

    request_id: str
    upstream_s: float = 0.0
    model: str | None = None  # the alias the request was served as
    deployment: str | None = None
    attempts: int = 0
    headers: dict[str, str] | None = None  # x-ratelimit-* for the response


@dataclass(slots=True)
class _Outcome:
    status: int = CLIENT_CLOSED
    usage: Usage | None = None
    events: int = 0
    error: str | None = None
    target: Target | None = None  # the deployment that served (or was tried last)
    request: ChatRequest | None = None  # as governance lets it go (max_tokens within the budget)
    failure_is_the_models: bool = False  # the upstream is fine; what the model produced was not


class Gateway:
    def __init__(
        self,
        routing: RoutingTable,
        providers: Mapping[str, Provider],
        recorder: UsageRecorder,
        metrics: Metrics,
        *,
        provider_factory: Callable[[UpstreamSpec], Provider] | None = None,
        on_credential_use: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
        governance: Governance | None = None,
    ) -> None:
        self.routing = routing
        self._providers = dict(providers)
        self._recorder = recorder
        self._metrics = metrics
        self._provider_factory = provider_factory
        self._on_credential_use = on_credential_use
        self.governance = governance
        self._rng = rng or random.Random()  # load balancing, not security
        self._gates: dict[str, ConcurrencyGate] = {}
        self._gauges: dict[str, Any] = {}  # metric children by label values, resolved once
        self._histograms: dict[tuple[str, str, str], Any] = {}
        self._busy: dict[str, int] = {}  # in flight per deployment (least_busy routing)
        self._discovered: dict[str, tuple[float, Sequence[str]]] = {}
        self._retired: list[tuple[float, Provider]] = []  # replaced providers, closed after a grace period
        self._closing: set[asyncio.Task[None]] = set()
        self.cooldowns = Cooldowns(self._policies(routing), on_change=self._cooldown_changed)
        self.in_flight = 0
        self.recent_errors: deque[dict[str, object]] = deque(maxlen=_RECENT_ERRORS)

    @staticmethod
    def _policies(routing: RoutingTable) -> dict[str, CooldownPolicy]:
        policies = {
            name: CooldownPolicy(spec.cooldown_failures, spec.cooldown_window, spec.cooldown_seconds)
            for name, spec in routing.upstreams.items()
        }
        for route in routing.routes.values():
            for target in route.deployments:
                policies.setdefault(target.breaker, policies[target.provider])
        return policies

    def apply_routing(self, routing: RoutingTable) -> None:
        """Serve from a new routing table (models changed at run time). Upstreams whose spec is
        unchanged keep their provider (and its connections); changed or new ones get a new one."""
        if self._provider_factory is None:
            raise RuntimeError("this gateway was built without a provider factory")
        providers: dict[str, Provider] = {}
        for name, spec in routing.upstreams.items():
            if self.routing.upstreams.get(name) == spec and name in self._providers:
                providers[name] = self._providers[name]
            else:
                providers[name] = self._provider_factory(spec)
        now = time.monotonic()
        self._retired.extend((now, p) for n, p in self._providers.items() if providers.get(n) is not p)
        expired = [p for at, p in self._retired if now - at > _RETIRED_GRACE]  # their streams have ended
        self._retired = [(at, p) for at, p in self._retired if now - at <= _RETIRED_GRACE]
        for provider in expired:
            task = asyncio.get_running_loop().create_task(provider.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self.cooldowns.set_policies(self._policies(routing))
        self._providers = providers
        self.routing = routing
        self._discovered.clear()

    async def aclose(self) -> None:
        """Close every provider, current and replaced."""
        providers = [*self._providers.values(), *(p for _, p in self._retired)]
        self._retired.clear()
        await asyncio.gather(*(p.aclose() for p in providers), *self._closing, return_exceptions=True)

    # -- routing and scope -------------------------------------------------------------
    def route_for(self, principal: Principal, model: str) -> Route:
        """Resolve a model the key may use. Out of scope looks exactly like unknown."""
        route = self.routing.route(model)
        if not principal.may_use(route.alias):
            raise ModelNotFoundError(model)
        return route

    def target_for(self, principal: Principal, model: str) -> Target:
        return self.route_for(principal, model).primary

    def provider(self, name: str) -> Provider:
        """The provider instance serving upstream ``name`` (model management, status)."""
        return self._providers[name]

    def providers(self) -> dict[str, Provider]:
        return dict(self._providers)

    def queue_depth(self, target: Target) -> int:
        """Requests waiting for a slot on this target's concurrency cap."""
        gate = self._gates.get(target.gate)
        return gate.waiting if gate is not None else 0

    def models_for(self, principal: Principal) -> list[Route]:
        """The configured aliases this key may use."""
        return [r for r in self.routing.routes.values() if principal.may_use(r.alias)]

    def _plan(self, principal: Principal, route: Route) -> Plan:
        return Plan(route, principal, self.routing.route, lambda r: order(r, self._busy, self._rng))

    async def discovered_for(self, principal: Principal) -> list[tuple[str, str]]:
        """(model id, provider type) the upstreams report, under the names that route to them:
        bare names for the default provider, ``provider/name`` for prefix-routed providers.
        Cached for ``_DISCOVERY_TTL`` seconds; an unreachable upstream lists nothing."""
        out: list[tuple[str, str]] = []
        for spec in self.routing.discoverable():
            prefix = "" if spec.name == self.routing.default else f"{spec.name}/"
            for name in await self._upstream_models(spec.name):
                model_id = prefix + name
                if model_id not in self.routing.routes and principal.may_use(model_id):
                    out.append((model_id, spec.type))
        return out

    async def _upstream_models(self, provider: str) -> Sequence[str]:
        now = time.monotonic()
        cached = self._discovered.get(provider)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            names = await asyncio.wait_for(self._providers[provider].list_models(), _DISCOVERY_TIMEOUT)
        except (GatewayError, TimeoutError):
            names = []
        self._discovered[provider] = (now + _DISCOVERY_TTL, names)
        return names

    def _gate(self, target: Target) -> ConcurrencyGate | None:
        if target.max_concurrent is None:
            return None
        gate = self._gates.get(target.gate)
        if gate is None:
            name = target.gate.partition(":")[2]
            gate = ConcurrencyGate(name, target.max_concurrent, target.max_queue, target.queue_timeout)
            self._gates[target.gate] = gate
            self._metrics.queue_depth.labels(name).set_function(lambda: gate.waiting)
        return gate

    def _in_flight_gauge(self, alias: str) -> Any:
        """The in-flight gauge of an alias (labels() takes a lock and builds a key: resolve once)."""
        gauge = self._gauges.get(alias)
        if gauge is None:
            gauge = self._gauges[alias] = self._metrics.in_flight.labels(alias)
        return gauge

    def _latency_hist(self, target: Target, endpoint: str) -> Any:
        key = (target.alias, target.provider, endpoint)
        hist = self._histograms.get(key)
        if hist is None:
            hist = self._histograms[key] = self._metrics.upstream_latency.labels(*key)
        return hist

    def _cooldown_changed(self, upstream: str, cooling: bool) -> None:
        self._metrics.cooling_down.labels(upstream).set(1 if cooling else 0)
        if cooling:
            self._metrics.cooldowns.labels(upstream).inc()

    def _prices(self, route: Route) -> tuple[float, float]:
        """The dearest input and output prices (USD per token) of every deployment that may serve."""
        routes = [route]
        for alias in (*route.fallbacks, *route.context_fallbacks):
            found = self.routing.routes.get(alias)
            if found is not None:
                routes.append(found)
        targets = [t for r in routes for t in r.deployments]
        return (max(t.input_cost_per_1m for t in targets) / 1e6, max(t.output_cost_per_1m for t in targets) / 1e6)

    @staticmethod
    def _honourable(route: Route, request: ChatRequest) -> ChatRequest:
        """The request as this route can honour it: 400 naming what it cannot, unless dropped."""
        caps = route.capabilities
        body: Mapping[str, Any] = request.body
        check_bounds(body, caps, route.bounds)
        if not (caps.unrestricted and "n" not in body and "best_of" not in body):  # else nothing to check
            prompt = estimate_prompt_tokens(body) if caps.context_length else None
            body = enforce(body, caps, route.drop, prompt_tokens=prompt)
        if route.default_temperature is not None and body.get("temperature") is None:
            body = {**body, "temperature": route.default_temperature}
        return request if body is request.body else replace(request, body=body)

    # -- accounting --------------------------------------------------------------------
    def _account(
        self,
        principal: Principal,
        target: Target,
        endpoint: str,
        request_id: str,
        started: float,
        status: int,
        usage: Usage,
        streamed: bool,
    ) -> float:
        seconds = time.perf_counter() - started
        cost = target.cost(usage.prompt_tokens, usage.completion_tokens)
        self._recorder.record(
            UsageRecord(
                created_at=datetime.now(UTC),
                request_id=request_id,
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
            )
        )
        self._metrics.observe(
            target.alias, target.provider, endpoint, status, seconds, usage.prompt_tokens, usage.completion_tokens, cost
        )
        return cost

    @asynccontextmanager
    async def _request(
        self, principal: Principal, route: Route, endpoint: str, ctx: CallContext, *, streamed: bool,
        body: Mapping[str, Any], request: ChatRequest | None = None,
    ) -> AsyncIterator[_Outcome]:
        """Accounting for one client request, however it ends and however many attempts it took.

        The caller sets ``status`` (200) and ``usage`` on success; a gateway error sets its
        status; a cancellation (the client left) stays 499. A stream without a usage report is
        accounted from what was relayed, marked estimated.
        """
        ctx.model = route.alias
        outcome = _Outcome(request=request)
        started = time.perf_counter()
        ticket: Ticket | None = None
        try:
            if self.governance is not None:
                ticket, outcome.request = await self.governance.admit(
                    principal, route.alias, request, body, partial(estimate_prompt_tokens, body),
                    partial(self._prices, route), route.limits)
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
            if usage is None:
                usage = Usage(estimate_prompt_tokens(body), outcome.events, estimated=True) if streamed else Usage()
            cost = self._account(principal, target, endpoint, ctx.request_id, started, outcome.status, usage, streamed)
            if ticket is not None:  # a request that produced nothing releases its hold; others pay what they used
                used = outcome.status == 200 or outcome.usage is not None or outcome.events > 0
                await self.governance.finish(ticket, usage if used else None, cost)  # type: ignore[union-attr]

    def _attempt(self, target: Target, ctx: CallContext, out: _Outcome) -> _Attempt:
        """One try on one deployment (``async with``): its cooldown, its concurrency cap,
        in-flight counts. Gives this attempt's own outcome; the caller sets status 200."""
        return _Attempt(self, target, ctx, out)

    async def _first_success(
        self, principal: Principal, route: Route, ctx: CallContext, out: _Outcome,
        prepare: Callable[[Route], _R], call: Callable[[_R, Target], Awaitable[_T]],
    ) -> _T:
        """Try the plan's deployments until one succeeds; the last error when none does.

        ``prepare`` makes the request fit a route (once per route); its refusal is handled like
        a failed attempt, so a prompt too long for one alias can go to its context fallbacks."""
        plan = self._plan(principal, route)
        prepared: dict[str, _R] = {}
        last: GatewayError | None = None
        for candidate, target in plan:
            try:
                if candidate.alias not in prepared:
                    prepared[candidate.alias] = prepare(candidate)
                async with self._attempt(target, ctx, out) as attempt:
                    result = await call(prepared[candidate.alias], target)
                    attempt.status = 200
                    return result
            except GatewayError as exc:
                last = exc
                if not plan.failed(candidate, exc):
                    raise
        assert last is not None  # a route has at least one deployment
        raise last

    # -- calls -------------------------------------------------------------------------
    async def chat(self, principal: Principal, request: ChatRequest, ctx: CallContext) -> ChatResult:
        route = self.route_for(principal, request.model)
        endpoint = "chat" if request.kind is GenerationKind.CHAT else "completions"
        async with self._request(principal, route, endpoint, ctx, streamed=False, body=request.body,
                                 request=request) as out:

            async def call(req: ChatRequest, target: Target) -> ChatResult:
                return await self._timed(ctx, target, endpoint, self._providers[target.provider].chat(req, target))

            prepare = partial(self._honourable, request=out.request or request)
            result = await self._first_success(principal, route, ctx, out, prepare, call)
            out.status, out.usage = 200, result.usage
            if result.usage.estimated:
                out.usage = Usage(estimate_prompt_tokens(request.body), result.usage.completion_tokens, estimated=True)
            return result

    async def stream(self, principal: Principal, request: ChatRequest, ctx: CallContext) -> AsyncIterator[bytes]:
        """Relay the provider's SSE bytes; account for them however the stream ends.

        Routing, the contract, admission and the wait for the first piece happen before the first
        yield, so errors there are raised when the caller first advances the iterator, before any
        byte is sent, and the next deployment may still be tried. Once a byte is sent, never.
        """
        route = self.route_for(principal, request.model)
        endpoint = "chat" if request.kind is GenerationKind.CHAT else "completions"
        async with self._request(principal, route, endpoint, ctx, streamed=True, body=request.body,
                                 request=request) as out:
            request = out.request or request
            plan = self._plan(principal, route)
            prepared: dict[str, ChatRequest] = {}
            last: GatewayError | None = None
            for candidate, target in plan:
                if candidate.alias not in prepared:
                    try:
                        prepared[candidate.alias] = self._honourable(candidate, request)
                    except GatewayError as exc:
                        last = exc
                        if plan.failed(candidate, exc):
                            continue
                        raise
                pieces = self._providers[target.provider].stream(prepared[candidate.alias], target)
                try:
                    async with self._attempt(target, ctx, out) as attempt:
                        started = time.perf_counter()
                        try:
                            first = await anext(pieces)
                        except StopAsyncIteration:
                            raise UpstreamError("The upstream ended the stream before sending anything.") from None
                        except GatewayError as exc:
                            last = exc
                            if not plan.failed(candidate, exc):
                                raise
                            attempt.status = exc.status_code
                            attempt.failure_is_the_models = exc.code in _MODEL_FAULTS
                            code = exc.code or str(exc.status_code)
                            self._metrics.upstream_errors.labels(target.provider, code).inc()
                            continue  # nothing was sent: the next deployment may serve it
                        ctx.upstream_s = time.perf_counter() - started
                        self._metrics.ttft.labels(target.alias, target.provider).observe(ctx.upstream_s)
                        piece: StreamPiece | None = first
                        while piece is not None:
                            out.events += piece.events
                            if piece.usage is not None:
                                out.usage = piece.usage
                            yield piece.data
                            piece = await anext(pieces, None)
                        attempt.status = out.status = 200
                        self._latency_hist(target, endpoint).observe(
                            time.perf_counter() - started)
                        return
                finally:
                    await pieces.aclose()  # type: ignore[attr-defined]
            assert last is not None  # a route has at least one deployment
            raise last

    async def embed(self, principal: Principal, request: EmbeddingRequest, ctx: CallContext) -> EmbeddingResult:
        route = self.route_for(principal, request.model)
        body = request.body or {}
        async with self._request(principal, route, "embeddings", ctx, streamed=False, body=body) as out:

            def prepare(candidate: Route) -> EmbeddingRequest:
                enforce_embeddings(candidate.capabilities)
                return request

            async def call(req: EmbeddingRequest, target: Target) -> EmbeddingResult:
                embedding = self._providers[target.provider].embed(req, target)
                return await self._timed(ctx, target, "embeddings", embedding)

            result = await self._first_success(principal, route, ctx, out, prepare, call)
            out.status, out.usage = 200, result.usage
            return result

    async def _timed(self, ctx: CallContext, target: Target, endpoint: str, call: Awaitable[_T]) -> _T:
        """Await a whole upstream call, noting how long it took."""
        started = time.perf_counter()
        try:
            return await call
        finally:
            ctx.upstream_s = time.perf_counter() - started
            self._latency_hist(target, endpoint).observe(ctx.upstream_s)

    async def upstream_status(self) -> list[dict[str, object]]:
        """For operators: each upstream's kind, reachability, models and loaded models."""

        async def one(name: str) -> dict[str, object]:
            spec = self.routing.upstreams[name]
            provider = self._providers[name]
            entry: dict[str, object] = {"name": name, "type": spec.type, "base_url": display_url(spec.base_url),
                                        "prefix_routing": spec.prefix_routing, "default": name == self.routing.default,
                                        "cooldown_s": round(self.cooldowns.remaining(name), 1)}
            try:
                entry["models"] = list(await asyncio.wait_for(provider.list_models(), _DISCOVERY_TIMEOUT))
                if isinstance(provider, ReportsRunningModels):
                    entry["running"] = list(await asyncio.wait_for(provider.running_models(), _DISCOVERY_TIMEOUT))
                entry["reachable"] = True
            except (GatewayError, TimeoutError) as exc:
                entry["reachable"] = False
                entry["error"] = exc.message if isinstance(exc, GatewayError) else "timed out"
            return entry

        return list(await asyncio.gather(*(one(n) for n in self._providers)))

    async def check_upstreams(self) -> dict[str, str | None]:
        """Readiness: each enabled upstream that serves a listed or routable model."""

        async def probe(provider: Provider) -> str | None:
            try:
                await provider.list_models()
                return None
            except GatewayError as exc:
                return exc.message

        names = list(self._providers)
        results = await asyncio.gather(*(probe(self._providers[n]) for n in names))
        return dict(zip(names, results, strict=True))


class _Attempt:
    """The context of one try on one deployment; a class, as this is on every request's path."""

    __slots__ = ("_ctx", "_gate", "_gw", "_in_flight", "_out", "_outcome", "_probe", "_target")

    def __init__(self, gateway: Gateway, target: Target, ctx: CallContext, out: _Outcome) -> None:
        self._gw, self._target, self._ctx, self._out = gateway, target, ctx, out
        self._probe = False
        self._gate: ConcurrencyGate | None = None
        self._outcome = _Outcome(target=target)
        self._in_flight: Any = None

    async def __aenter__(self) -> _Outcome:
        gw, target, ctx = self._gw, self._target, self._ctx
        self._out.target = target
        self._probe = gw.cooldowns.admit(target.breaker)  # a deployment cooling down is skipped, not tried
        ctx.attempts += 1
        ctx.deployment, ctx.model = target.deployment, target.alias
        gate = self._gate = gw._gate(target)
        if gate is not None:
            try:
                await gate.acquire()
            except GatewayError as exc:
                reason = "queue_timeout" if exc.status_code == 503 else "queue_full"
                gw._metrics.rejections.labels(target.alias, reason).inc()
                if self._probe:
                    gw.cooldowns.record(target.breaker, ok=True, probe=True)
                raise
        self._in_flight = gw._in_flight_gauge(target.alias)
        self._in_flight.inc()
        gw.in_flight += 1
        gw._busy[target.breaker] = gw._busy.get(target.breaker, 0) + 1
        if target.credential is not None and gw._on_credential_use is not None:
            gw._on_credential_use(target.credential)
        return self._outcome

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        gw, target, attempt = self._gw, self._target, self._outcome
        if isinstance(exc, GatewayError):
            attempt.status = exc.status_code
            attempt.failure_is_the_models = exc.code in _MODEL_FAULTS
            if isinstance(exc, UpstreamError | ServiceUnavailableError) or exc.status_code >= 500:
                gw._metrics.upstream_errors.labels(target.provider, exc.code or str(exc.status_code)).inc()
        elif isinstance(exc, Exception):
            attempt.status = 500
        self._in_flight.dec()
        gw.in_flight -= 1
        gw._busy[target.breaker] -= 1
        if self._gate is not None:
            self._gate.release()
        if attempt.failure_is_the_models:
            attempt.status = CLIENT_CLOSED  # e.g. a malformed tool call: no verdict on the upstream
        if attempt.status == 200 or attempt.status in _UPSTREAM_FAILURES:
            gw.cooldowns.record(target.breaker, ok=attempt.status == 200, probe=self._probe)
        elif self._probe:
            gw.cooldowns.record(target.breaker, ok=True, probe=True)  # no verdict: don't stay stuck
