"""Model name -> Target: exact alias, then ``provider/model`` prefix, then the default provider."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from switchyard.core.models import Target, UpstreamSpec
from switchyard.errors import ModelNotFoundError
from switchyard.settings import ConfigError, ModelConfig, Settings

__all__ = ["RouteEntry", "RoutingTable", "display_url"]


def display_url(url: str) -> str:
    """A base URL fit to show: any user:password@ part removed."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}" if sep else url


@dataclass(frozen=True, slots=True)
class RouteEntry:
    target: Target
    spec: UpstreamSpec


class RoutingTable:
    """Built once from Settings; lookups are dict hits on the hot path."""

    def __init__(self, settings: Settings) -> None:
        self.upstreams: dict[str, UpstreamSpec] = {}
        for name, cfg in settings.providers.items():
            if cfg.enabled:
                self.upstreams[name] = UpstreamSpec(
                    name=name,
                    type=cfg.type,
                    base_url=cfg.base_url,
                    api_key=settings.resolve_secret(cfg.api_key),
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
        self.aliases: dict[str, Target] = {}
        for model in settings.models:
            if model.enabled:
                spec = self._spec_for(model, settings)
                if spec is not None:
                    self.aliases[model.alias] = self._target(model.alias, model.upstream_model, spec, model)
        self.default = settings.default_provider if settings.default_provider in self.upstreams else None

    def _spec_for(self, model: ModelConfig, settings: Settings) -> UpstreamSpec | None:
        base = self.upstreams.get(model.provider)
        if base is None and model.provider in settings.providers:
            return None  # the provider is disabled
        if base is None:
            if model.base_url is None:
                raise ConfigError(f"model '{model.alias}': base_url is required")
            name = f"{model.provider}@{model.base_url}"
            base = UpstreamSpec(name=name, type=model.provider, base_url=model.base_url)
        if model.base_url or model.api_key:
            name = base.name if model.base_url is None else f"{base.type}@{model.base_url}"
            base = UpstreamSpec(
                name=name if model.api_key is None else f"{name}#{model.alias}",
                type=base.type,
                base_url=model.base_url or base.base_url,
                api_key=settings.resolve_secret(model.api_key) if model.api_key else base.api_key,
                timeout=base.timeout,
                api_version=base.api_version,
            )
        self.upstreams.setdefault(base.name, base)
        return base

    @staticmethod
    def _target(alias: str, upstream: str, spec: UpstreamSpec, model: ModelConfig | None = None) -> Target:
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
        )

    def resolve(self, name: str) -> Target:
        target = self.aliases.get(name)
        if target is not None:
            return target
        prefix, sep, rest = name.partition("/")
        if sep and rest:
            spec = self.upstreams.get(prefix)
            if spec is not None and spec.prefix_routing:
                return self._target(name, rest, spec)
        if self.default is not None:
            return self._target(name, name, self.upstreams[self.default])
        raise ModelNotFoundError(name)

    def listed(self) -> Iterable[Target]:
        return self.aliases.values()

    def discoverable(self) -> list[UpstreamSpec]:
        """Upstreams whose own models are routable by name: prefix-routed ones and the default."""
        return [s for s in self.upstreams.values() if s.prefix_routing or s.name == self.default]

    def describe(self) -> list[tuple[str, str, str, str]]:
        """Rows of (model, provider, upstream model, base URL) for `config check`."""
        rows = [(t.alias, t.provider, t.upstream_model, self.upstreams[t.provider].base_url) for t in self.listed()]
        for spec in self.upstreams.values():
            if spec.prefix_routing:
                rows.append((f"{spec.name}/*", spec.name, "*", spec.base_url))
        if self.default is not None:
            rows.append(("* (default)", self.default, "*", self.upstreams[self.default].base_url))
        return rows
