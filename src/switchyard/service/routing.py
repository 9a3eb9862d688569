"""Model name -> Target: exact alias, then ``provider/model`` prefix, then the default provider."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from switchyard.core.bounds import Bounds
from switchyard.core.capabilities import defaults_for, responses_mode, validate_drop
from switchyard.core.limits import RateLimits
from switchyard.core.models import Route, Target, UpstreamSpec
from switchyard.errors import ModelNotFoundError
from switchyard.settings import ConfigError, LocalModelConfig, ModelConfig, Settings

__all__ = ["LOCAL", "RoutingTable", "display_url", "local_models"]

LOCAL = "local"  # the provider name and type of models run in this process
_RESPONSES_WIRES = frozenset({"openai", "azure"})
_LOCAL_CONCURRENCY = {"bert": 4, "sentence_transformers": 4}
_EMBEDDING_ENGINES = {"bert", "sentence_transformers"}
_TOOL_ENGINES = {"llamacpp"}  # the local engines that call tools (local/tools.py)


def local_models(settings: Settings) -> list[LocalModelConfig]:
    """The enabled local models: the configured ones, plus the bundled ones when they are
    installed and ``bundled_models`` is on (or auto and nothing else is configured)."""
    models = [m for m in settings.local_models if m.enabled]
    mode = settings.bundled_models
    nothing_else = not (settings.models or settings.providers or settings.local_models)
    if mode == "on" or (mode == "auto" and nothing_else):
        from switchyard.local.bundled import bundled_models

        taken = {m.alias for m in settings.models} | {m.alias for m in settings.local_models}
        models += [m for m in bundled_models() if m.alias not in taken]
    return models


def display_url(url: str) -> str:
    """A base URL fit to show: any user:password@ part removed."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}" if sep else url


class RoutingTable:
    """Built from Settings (plus models from the database); lookups are dict hits on the hot path.

    ``secrets`` resolves ``credential:`` references (vault name -> plaintext). Without it (for
    checking a configuration offline) such references are accepted unresolved. ``default_model``
    is the alias meant by a request that names none (the stored model marked default).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        extra_models: Sequence[ModelConfig] = (),
        secrets: Mapping[str, str] | None = None,
        default_model: str | None = None,
    ) -> None:
        self._settings = settings
        self._secrets = secrets
        self.default_model = default_model
        self.bounds = Bounds(settings.max_tokens_ceiling, settings.max_tools_per_request,
                             settings.max_messages_per_request)
        self.upstreams: dict[str, UpstreamSpec] = {}
        self.credentials: dict[str, str] = {}  # upstream name -> vault credential it uses
        for name, cfg in settings.providers.items():
            if cfg.enabled:
                self.upstreams[name] = UpstreamSpec(
                    name=name,
                    type=cfg.type,
                    base_url=cfg.base_url,
                    api_key=self._secret(cfg.api_key, cfg.credential, f"provider '{name}'"),
                    timeout=cfg.timeout,
                    prefix_routing=cfg.prefix_routing,
                    max_concurrent=cfg.max_concurrent,
                    max_queue=cfg.max_queue,
                    queue_timeout=cfg.queue_timeout,
                    cooldown_failures=cfg.cooldown_failures,
                    cooldown_window=cfg.cooldown_window,
                    cooldown_seconds=cfg.cooldown_seconds,
                    api_version=cfg.api_version,
                )
                if cfg.credential:
                    self.credentials[name] = cfg.credential
        self.routes: dict[str, Route] = {}
        file_aliases = {m.alias for m in settings.models}
        models = [*settings.models, *(m for m in extra_models if m.alias not in file_aliases)]
        for model in models:
            if model.enabled:
                route = self._route(model)
                if route is not None:
                    self.routes[model.alias] = route
        self.local = local_models(settings)
        if self.local:
            self.upstreams[LOCAL] = UpstreamSpec(name=LOCAL, type=LOCAL, base_url="")
            for local in self.local:
                self.routes[local.alias] = self._local_route(local)
        self.default = settings.default_provider if settings.default_provider in self.upstreams else None

    @property
    def aliases(self) -> dict[str, Target]:
        return {alias: route.primary for alias, route in self.routes.items()}

    def _secret(self, api_key: SecretStr | None, credential: str | None, owner: str) -> str | None:
        if credential is None:
            return self._settings.resolve_secret(api_key)
        if self._secrets is None:
            return None
        if credential not in self._secrets:
            raise ConfigError(f"{owner}: credential '{credential}' is not in the vault, or is not active")
        return self._secrets[credential]

    def _spec_for(self, alias: str, provider: str, base_url: str | None, api_key: SecretStr | None,
                  credential: str | None) -> UpstreamSpec | None:
        base = self.upstreams.get(provider)
        if base is None and provider in self._settings.providers:
            return None  # the provider is disabled
        if base is None:
            if base_url is None:
                raise ConfigError(f"model '{alias}': base_url is required")
            name = f"{provider}@{base_url}"
            base = UpstreamSpec(name=name, type=provider, base_url=base_url)
        if base_url or api_key or credential:
            name = base.name if base_url is None else f"{base.type}@{base_url}"
            if api_key is not None or credential is not None:
                name = f"{name}#{alias}" if credential is None else f"{name}#{credential}"
            own_key = api_key is not None or credential is not None
            base = UpstreamSpec(
                name=name,
                type=base.type,
                base_url=base_url or base.base_url,
                api_key=self._secret(api_key, credential, f"model '{alias}'") if own_key else base.api_key,
                timeout=base.timeout,
                api_version=base.api_version,
                cooldown_failures=base.cooldown_failures,
                cooldown_window=base.cooldown_window,
                cooldown_seconds=base.cooldown_seconds,
            )
            if credential is not None:
                self.credentials[name] = credential
        self.upstreams.setdefault(base.name, base)
        return base

    def _route(self, model: ModelConfig) -> Route | None:
        if model.deployments:
            sources = [(d.provider, d.model, d.base_url, d.api_key, d.credential, d.weight, d.timeout)
                       for d in model.deployments]
        else:
            assert model.provider is not None  # model_problems() refused it otherwise
            sources = [(model.provider, model.model, model.base_url, model.api_key, model.credential, 1.0,
                        model.timeout)]
        targets: list[Target] = []
        weights: list[float] = []
        try:
            responses = responses_mode(model.capabilities)
        except ValueError as exc:
            raise ConfigError(f"model '{model.alias}': {exc}") from None
        for provider, upstream, base_url, api_key, credential, weight, timeout in sources:
            spec = self._spec_for(model.alias, provider, base_url, api_key, credential)
            if spec is None:
                continue  # on a disabled provider
            target = self._target(model.alias, upstream or model.alias, spec, model, timeout)
            if _speaks_responses(model.alias, spec, responses):
                target = replace(target, responses_native=True)
            if model.deployments:
                shown = f"{provider}/{target.upstream_model}"
                if any(t.deployment == shown for t in targets):
                    shown = f"{shown}#{len(targets)}"
                target = replace(target, deployment=shown, breaker=f"{spec.name}/{target.upstream_model}")
            else:
                target = replace(target, deployment=provider)
            targets.append(target)
            weights.append(weight)
        if not targets:
            return None
        caps = defaults_for(targets[0].provider_type)
        for target in targets[1:]:
            caps = caps.intersect(defaults_for(target.provider_type))
        try:
            caps = caps.merged(model.capabilities)
            drop = validate_drop(model.drop_params)
        except ValueError as exc:
            raise ConfigError(f"model '{model.alias}': {exc}") from None
        return Route(
            alias=model.alias,
            deployments=tuple(targets),
            capabilities=caps,
            weights=tuple(weights),
            strategy=model.routing,
            fallbacks=tuple(model.fallbacks),
            context_fallbacks=tuple(model.context_window_fallbacks),
            drop=drop,
            default_temperature=model.default_temperature,
            limits=RateLimits(**model.rate_limits.model_dump()) if model.rate_limits is not None else None,
            hosted_tools=model.hosted_tools,
            bounds=self.bounds,
        )

    def _local_route(self, model: LocalModelConfig) -> Route:
        if model.engine == "llamacpp" and model.max_concurrent is None:
            from switchyard.local.build import budget_of, parallel_slots

            cap = parallel_slots(model, budget_of(self._settings))  # one request per slot
        else:
            cap = model.max_concurrent or _LOCAL_CONCURRENCY.get(model.engine, model.max_batch)
        target = Target(
            alias=model.alias, provider=LOCAL, provider_type=LOCAL, upstream_model=model.alias, timeout=3600.0,
            max_concurrent=cap, max_queue=model.max_queue, queue_timeout=model.queue_timeout,
            gate=f"model:{model.alias}", deployment=LOCAL, breaker=f"{LOCAL}/{model.alias}",
        )
        caps = defaults_for(LOCAL)
        if model.engine in _EMBEDDING_ENGINES:
            caps = caps.merged({"json_object": False, "json_schema": False, "streaming": False, "chat": False,
                                "tools": False})
        else:  # a chat model: the local engines embed only with an embedding model
            caps = caps.merged({"embeddings": False} if model.engine in _TOOL_ENGINES
                               else {"embeddings": False, "tools": False})
        return Route(alias=model.alias, deployments=(target,), capabilities=caps,
                     default_temperature=model.default_temperature, bounds=self.bounds)

    def _target(self, alias: str, upstream: str, spec: UpstreamSpec, model: ModelConfig | None = None,
                timeout: float | None = None) -> Target:
        if timeout is None:
            timeout = model.timeout if model is not None and model.timeout is not None else spec.timeout
        own_cap = model is not None and model.max_concurrent is not None
        cap = model.max_concurrent if own_cap and model is not None else spec.max_concurrent
        queue = model.max_queue if model is not None and model.max_queue is not None else spec.max_queue
        wait = model.queue_timeout if model is not None and model.queue_timeout else spec.queue_timeout
        return Target(
            alias=alias,
            provider=spec.name,
            provider_type=spec.type,
            upstream_model=upstream,
            timeout=timeout,
            max_concurrent=cap,
            max_queue=queue,
            queue_timeout=wait,
            gate=f"model:{alias}" if own_cap else f"provider:{spec.name}",
            input_cost_per_1m=(model.input_cost_per_1m or 0.0) if model is not None else 0.0,
            output_cost_per_1m=(model.output_cost_per_1m or 0.0) if model is not None else 0.0,
            cache_read_cost_per_1m=model.cache_read_cost_per_1m if model is not None else None,
            cache_write_cost_per_1m=model.cache_write_cost_per_1m if model is not None else None,
            deployment=spec.name,
            breaker=spec.name,
            credential=self.credentials.get(spec.name),
        )

    def with_default_model(self, body: Any) -> Any:
        """A request body that names no model, naming the default model (when one is marked)."""
        if isinstance(body, dict) and not body.get("model") and self.default_model:
            return {**body, "model": self.default_model}
        return body

    def route(self, name: str) -> Route:
        """The route for a model name: alias, then ``provider/model``, then the default provider."""
        found = self.routes.get(name)
        if found is not None:
            return found
        prefix, sep, rest = name.partition("/")
        spec = None
        if sep and rest:
            spec = self.upstreams.get(prefix)
            if spec is not None and not spec.prefix_routing:
                spec = None
        if spec is None and self.default is not None:
            spec, rest = self.upstreams[self.default], name
        if spec is None:
            raise ModelNotFoundError(name)
        target = self._target(name, rest, spec)
        if _speaks_responses(name, spec, None):
            target = replace(target, responses_native=True)
        return Route(alias=name, deployments=(target,), capabilities=defaults_for(spec.type), bounds=self.bounds)

    def responses_native(self, route: Route) -> bool:
        """Whether ``/v1/responses`` on ``route`` is relayed as it is: every deployment that may serve
        it (its own and its fallbacks') speaks the Responses API, so failover never mixes the two."""
        if not route.responses_native:
            return False
        for alias in (*route.fallbacks, *route.context_fallbacks):
            found = self.routes.get(alias)
            if found is not None and not found.responses_native:
                return False
        return True

    def prices(self, route: Route) -> tuple[float, float]:
        """The dearest input and output prices (USD per token) of every deployment that may serve
        ``route``: its own and its fallbacks' (budgets reserve the worst case; a prompt token's
        dearest price may be a cache write's)."""
        routes = [route]
        for alias in (*route.fallbacks, *route.context_fallbacks):
            found = self.routes.get(alias)
            if found is not None:
                routes.append(found)
        targets = [t for r in routes for t in r.deployments]
        return (max(t.prompt_cost_per_1m for t in targets) / 1e6, max(t.output_cost_per_1m for t in targets) / 1e6)

    def resolve(self, name: str) -> Target:
        return self.route(name).primary

    def listed(self) -> Iterable[Target]:
        return [route.primary for route in self.routes.values()]

    def discoverable(self) -> list[UpstreamSpec]:
        """Upstreams whose own models are routable by name: prefix-routed ones and the default."""
        return [s for s in self.upstreams.values() if s.prefix_routing or s.name == self.default]

    def describe(self) -> list[tuple[str, str, str, str]]:
        """Rows of (model, provider, upstream model, base URL) for `config check`."""
        where = {m.alias: f"{m.engine}: {m.model}" for m in self.local}
        rows = [(t.alias, t.provider, t.upstream_model,
                 where.get(t.upstream_model, "") if t.provider == LOCAL else self.upstreams[t.provider].base_url)
                for route in self.routes.values() for t in route.deployments]
        for spec in self.upstreams.values():
            if spec.prefix_routing:
                rows.append((f"{spec.name}/*", spec.name, "*", spec.base_url))
        if self.default is not None:
            rows.append(("* (default)", self.default, "*", self.upstreams[self.default].base_url))
        return rows


def _speaks_responses(alias: str, spec: UpstreamSpec, mode: str | None) -> bool:
    """Whether ``/v1/responses`` is relayed to this deployment as it is: ``capabilities.responses``
    when set (``native`` only on an OpenAI or Azure OpenAI wire), else for Azure OpenAI and for
    OpenAI itself (``api.openai.com``); OpenAI-compatible servers are translated onto chat."""
    if mode == "native" and spec.type not in _RESPONSES_WIRES:
        raise ConfigError(f"model '{alias}': capabilities.responses: native needs an openai or azure provider, "
                          f"not {spec.type}")
    if mode is not None:
        return mode == "native"
    if spec.type == "azure":
        return True
    return spec.type == "openai" and urlsplit(spec.base_url).hostname == "api.openai.com"
