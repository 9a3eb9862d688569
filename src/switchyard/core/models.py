"""Routing targets (where a model name resolves to), and model configurations stored over the admin API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from switchyard.core.bounds import DEFAULT_BOUNDS, Bounds
from switchyard.core.capabilities import Capabilities
from switchyard.core.limits import RateLimits
from switchyard.core.usage import Usage

__all__ = ["DuplicateAliasError", "Route", "StoredModel", "Target", "UpstreamSpec"]


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved route: which provider instance serves a request, and under which name.

    ``alias`` is what the client asked for (or the prefixed name); ``upstream_model`` is the
    name the upstream knows. ``provider`` is the configured provider's name (a key of the
    provider registry built at start), ``provider_type`` its kind (``openai``, ``ollama``).
    """

    alias: str
    provider: str
    provider_type: str
    upstream_model: str
    timeout: float
    max_concurrent: int | None = None
    max_queue: int = 0
    queue_timeout: float = 30.0
    gate: str = ""  # which concurrency cap applies: the alias's own, or its provider's (shared)
    input_cost_per_1m: float = 0.0
    output_cost_per_1m: float = 0.0
    deployment: str = ""  # this deployment's name for clients (the x-switchyard-deployment header)
    breaker: str = ""  # the key its cooldown state is kept under (an upstream, or upstream/model)
    credential: str | None = None  # the vault credential it uses, for use counts
    cache_read_cost_per_1m: float | None = None  # None: cache reads cost the input price
    cache_write_cost_per_1m: float | None = None  # None: cache writes cost the input price
    responses_native: bool = False  # its upstream speaks the Responses API: /v1/responses is relayed as it is

    def cost(self, usage: Usage) -> float:
        """USD for ``usage`` at the configured prices (0 when none are set).

        Uncached input at the input price, cache reads and writes at their own prices (the
        input price where unset), output at the output price. ``usage.prompt_tokens`` includes
        the cached tokens, so each prompt token is charged exactly once.
        """
        if not (self.input_cost_per_1m or self.output_cost_per_1m or self.cache_read_cost_per_1m
                or self.cache_write_cost_per_1m):
            return 0.0  # no prices (most self-hosted models): on every request's path
        read = self.input_cost_per_1m if self.cache_read_cost_per_1m is None else self.cache_read_cost_per_1m
        write = self.input_cost_per_1m if self.cache_write_cost_per_1m is None else self.cache_write_cost_per_1m
        return (usage.uncached_prompt_tokens * self.input_cost_per_1m + usage.cache_read_tokens * read
                + usage.cache_write_tokens * write + usage.completion_tokens * self.output_cost_per_1m) / 1e6

    @property
    def prompt_cost_per_1m(self) -> float:
        """The dearest price a prompt token may be charged at (budgets hold the worst case)."""
        return max(self.input_cost_per_1m, self.cache_read_cost_per_1m or 0.0, self.cache_write_cost_per_1m or 0.0)


@dataclass(frozen=True, slots=True)
class Route:
    """Everything an alias resolves to: its deployments (tried in the strategy's order), the
    aliases to fall back to, and the contract of what requests it can honour."""

    alias: str
    deployments: tuple[Target, ...]
    capabilities: Capabilities
    weights: tuple[float, ...] = ()
    strategy: str = "weighted"  # or "least_busy"
    fallbacks: tuple[str, ...] = ()
    context_fallbacks: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    default_temperature: float | None = None
    limits: RateLimits | None = None  # this model's own limits, across every key
    hosted_tools: str = "remove"  # /v1/responses: hosted tools removed, or "reject"ed with 400
    bounds: Bounds = DEFAULT_BOUNDS  # the server-wide caps every request to it is checked against

    @property
    def primary(self) -> Target:
        return self.deployments[0]

    @property
    def responses_native(self) -> bool:
        """Every deployment's upstream speaks the Responses API itself."""
        return all(target.responses_native for target in self.deployments)


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """A configured provider instance, with its credential resolved."""

    name: str
    type: str
    base_url: str
    api_key: str | None = None
    timeout: float = 600.0
    prefix_routing: bool = False
    max_concurrent: int | None = None
    max_queue: int = 32
    queue_timeout: float = 30.0
    cooldown_failures: int = 5
    cooldown_window: float = 30.0
    cooldown_seconds: float = 30.0
    api_version: str | None = None  # azure's api-version


@dataclass(frozen=True, slots=True)
class StoredModel:
    """A model configuration stored over /admin/models: ``config`` is the API record without
    alias, active and default."""

    id: str
    alias: str
    config: Mapping[str, Any]
    active: bool
    is_default: bool
    revision: int
    created_at: datetime
    updated_at: datetime


class DuplicateAliasError(Exception):
    """Another stored model already has this alias."""

    def __init__(self, alias: str) -> None:
        super().__init__(f"a stored model already has the alias '{alias}'")
        self.alias = alias
