"""The provider pool: one provider per upstream of the routing table, swapped with the table when
models change at run time, plus what operators and clients ask about the upstreams (discovered
models, reachability, readiness)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

from switchyard.core.keys import Principal
from switchyard.core.models import Route, UpstreamSpec
from switchyard.core.ports import Provider, ReportsRunningModels
from switchyard.errors import GatewayError
from switchyard.service.cooldown import Cooldowns
from switchyard.service.routing import RoutingTable, display_url

__all__ = ["Upstreams"]

_DISCOVERY_TTL = 30.0
_DISCOVERY_TIMEOUT = 3.0
_RETIRED_GRACE = 600.0  # seconds a replaced provider stays open for the requests still using it


class Upstreams:
    """The routing table in force and the providers that serve its upstreams."""

    def __init__(
        self,
        routing: RoutingTable,
        providers: Mapping[str, Provider],
        *,
        provider_factory: Callable[[UpstreamSpec], Provider] | None = None,
        cooldowns: Cooldowns | None = None,
    ) -> None:
        self.routing = routing
        self._providers = dict(providers)
        self._provider_factory = provider_factory
        self._cooldowns = cooldowns  # for the status report
        self._discovered: dict[str, tuple[float, Sequence[str]]] = {}
        self._retired: list[tuple[float, Provider]] = []  # replaced providers, closed after a grace period
        self._closing: set[asyncio.Task[None]] = set()

    # -- the pool ------------------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        """The provider instance serving upstream ``name``."""
        return self._providers[name]

    def providers(self) -> dict[str, Provider]:
        return dict(self._providers)

    def apply_routing(self, routing: RoutingTable) -> None:
        """Serve from a new routing table. Upstreams whose spec is unchanged keep their provider
        (and its connections); changed or new ones get a new one."""
        if self._provider_factory is None:
            raise RuntimeError("these upstreams were built without a provider factory")
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
        self._providers = providers
        self.routing = routing
        self._discovered.clear()

    async def aclose(self) -> None:
        """Close every provider, current and replaced."""
        providers = [*self._providers.values(), *(p for _, p in self._retired)]
        self._retired.clear()
        await asyncio.gather(*(p.aclose() for p in providers), *self._closing, return_exceptions=True)

    # -- what a key may see --------------------------------------------------------------
    def models_for(self, principal: Principal) -> list[Route]:
        """The configured aliases this key may use."""
        return [r for r in self.routing.routes.values() if principal.may_use(r.alias)]

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

    # -- for operators -------------------------------------------------------------------
    async def status(self) -> list[dict[str, object]]:
        """Each upstream's kind, reachability, breaker state, models and loaded models."""
        breakers = self._cooldowns.report() if self._cooldowns is not None else {}

        async def one(name: str) -> dict[str, object]:
            spec = self.routing.upstreams[name]
            provider = self._providers[name]
            entry: dict[str, object] = {"name": name, "type": spec.type, "base_url": display_url(spec.base_url),
                                        "prefix_routing": spec.prefix_routing, "default": name == self.routing.default,
                                        **self._breaker(name, breakers)}
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

    @staticmethod
    def _breaker(name: str, breakers: dict[str, dict[str, object]]) -> dict[str, object]:
        """The upstream's breaker (closed, open, half_open or panic), and those of its deployments
        (one per model, for models with several deployments) that are not closed."""
        own = breakers.get(name, {"state": "closed", "cooldown_s": 0.0})
        deployments = [{"breaker": key, **value} for key, value in breakers.items() if key.startswith(f"{name}/")]
        return {"breaker": own["state"], "cooldown_s": own["cooldown_s"], "deployment_breakers": deployments}

    async def check(self) -> dict[str, str | None]:
        """Readiness: each upstream's problem (None when it answers)."""

        async def probe(provider: Provider) -> str | None:
            try:
                await provider.list_models()
                return None
            except GatewayError as exc:
                return exc.message

        names = list(self._providers)
        results = await asyncio.gather(*(probe(self._providers[n]) for n in names))
        return dict(zip(names, results, strict=True))
