"""The Protocols the services depend on. Implementations are injected by app.py (and runtime.py).

    Provider, ReportsRunningModels, ManagesModels   upstreams (providers/, local/)
    KeyStore, TeamStore, UsageStore, AuditStore,    stores (store/: SQL)
    ModelStore, ResponseStore, ConsoleSessionStore
    MetricsSink                                     metrics (observability/: Prometheus)

The rate-limit and budget engines' Protocols, ``Limiter`` and ``BudgetLedger``, are in
``core/limits.py`` (implemented in limits/).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar, runtime_checkable

from switchyard.core.audit import AuditEntry
from switchyard.core.chat import ChatRequest, ChatResult, StreamPiece
from switchyard.core.console import ConsoleSession
from switchyard.core.embeddings import EmbeddingRequest, EmbeddingResult
from switchyard.core.keys import ApiKey, Team
from switchyard.core.models import StoredModel, Target
from switchyard.core.responses import SealedResponse
from switchyard.core.usage import UsageRecord

__all__ = [
    "AuditStore",
    "ConsoleSessionStore",
    "Counter",
    "Gauge",
    "Histogram",
    "HoldsResponses",
    "KeyStore",
    "Labelled",
    "ManagesModels",
    "MetricsSink",
    "ModelStore",
    "Provider",
    "ReportsRunningModels",
    "ResponseStore",
    "TeamStore",
    "UsageStore",
]

_Child_co = TypeVar("_Child_co", covariant=True)


@runtime_checkable
class Provider(Protocol):
    """One upstream (or local engine). Errors are raised as ``switchyard.errors`` types."""

    async def chat(self, request: ChatRequest, target: Target) -> ChatResult: ...

    def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamPiece]:
        """OpenAI SSE events, ending with ``data: [DONE]``. Raises mid-stream on failure."""
        ...

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResult: ...

    async def list_models(self) -> Sequence[str]:
        """The upstream's model names; also the readiness probe."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class HoldsResponses(Protocol):
    """Optional: providers whose upstream keeps Responses API responses (OpenAI, Azure OpenAI)."""

    async def held_response(self, method: str, response_id: str, action: str = "", query: str = "") -> bytes:
        """``METHOD <responses>/{id}[/action][?query]`` at the upstream: its body. Raises on failure."""
        ...


@runtime_checkable
class ReportsRunningModels(Protocol):
    """Optional: providers that know which models are loaded in memory (Ollama's /api/ps)."""

    async def running_models(self) -> Sequence[dict[str, object]]: ...


@runtime_checkable
class ManagesModels(Protocol):
    """Optional: providers whose upstream loads, unloads and downloads models on request (Ollama)."""

    async def load_model(self, model: str, keep_alive: str | int | float | None = None) -> None:
        """Load ``model`` into the upstream's memory; ``keep_alive``: seconds or a duration
        (``"10m"``), negative for ever, None for the upstream's default."""
        ...

    async def unload_model(self, model: str) -> None:
        """Free the memory ``model`` holds on the upstream now."""
        ...

    def pull(self, model: str) -> AsyncIterator[dict[str, object]]:
        """Download ``model`` to the upstream: its progress objects (``status``, and ``digest``,
        ``total``, ``completed`` while a layer downloads). Raises on failure."""
        ...


class KeyStore(Protocol):
    async def add(self, key: ApiKey) -> None: ...

    async def get(self, key_id: str) -> ApiKey | None: ...

    async def find_by_hash(self, key_hash: str) -> ApiKey | None: ...

    async def list(self, *, include_revoked: bool = False) -> list[ApiKey]: ...

    async def revoke(self, key_id: str, at: datetime) -> bool: ...

    async def replace_secret(self, key_id: str, prefix: str, key_hash: str, at: datetime) -> bool: ...

    async def changed_since(self, since: datetime) -> builtins.list[ApiKey]:
        """Keys created, revoked or rotated after ``since`` (for cache refresh)."""
        ...

    async def count(self) -> int: ...

    async def touch(self, uses: dict[str, tuple[int, datetime]]) -> None:
        """Add use counts and set last-used times, in one batch: {key_id: (count, last)}."""
        ...


class UsageStore(Protocol):
    async def write(self, records: Sequence[UsageRecord]) -> None: ...

    async def summary(self, since: datetime | None = None) -> list[dict[str, object]]:
        """Per key and model: requests, prompt/completion tokens, errors."""
        ...

    async def query(
        self,
        *,
        key_id: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: str | Sequence[str] = "day",
        latency: bool = True,
    ) -> list[dict[str, object]]:
        """Totals from the usage rollups, grouped by one or more of hour, day, key, team, model
        (session: from the raw rows), with the latency percentiles unless ``latency`` is False."""
        ...

    async def spent(self, scope: str | None = None, since: datetime | None = None) -> float:
        """USD spent since ``since`` by a key id or a ``key:``/``model:`` scope (None: all)."""
        ...

    async def spent_by_keys(
        self, key_ids: Iterable[str], since: datetime | None = None, *, model: str | None = None
    ) -> float:
        """USD spent by a set of keys (a team's) since ``since``."""
        ...

    async def prune(self, max_rows: int, max_age: timedelta, now: datetime | None = None) -> int:
        """Delete raw rows older than ``max_age`` and beyond the newest ``max_rows``; rollups stay."""
        ...

    async def ping(self) -> None:
        """Raise if the store is unreachable (readiness)."""
        ...


class TeamStore(Protocol):
    """Teams. Lookups take an id or a name; ``add`` and ``update`` raise
    ``core.keys.DuplicateTeamError`` for a name already taken."""

    async def add(self, team: Team) -> None: ...

    async def get(self, id_or_name: str) -> Team | None: ...

    async def list(self) -> builtins.list[Team]: ...

    async def changed_since(self, since: datetime) -> builtins.list[Team]:
        """Teams created or changed after ``since`` (for cache refresh)."""
        ...

    async def update(self, team: Team) -> bool:
        """Write the team's name, limits and budget; False if it is gone."""
        ...

    async def remove(self, team_id: str) -> bool:
        """Delete a team no live key belongs to; False if it is gone or in use."""
        ...

    async def key_counts(self) -> dict[str, int]:
        """Keys not revoked, per team id."""
        ...


class AuditStore(Protocol):
    async def write(self, entries: Sequence[AuditEntry]) -> None: ...

    async def query(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        object_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first; ``action`` is a prefix; ``since`` inclusive, ``until`` exclusive."""
        ...


class ModelStore(Protocol):
    """Models stored over /admin/models. ``revision`` changes whenever anything changed (replicas
    poll it); ``add`` and ``update`` raise ``core.models.DuplicateAliasError`` for an alias taken."""

    async def get(self, model_id: str) -> StoredModel | None: ...

    async def get_by_alias(self, alias: str) -> StoredModel | None: ...

    async def list(self) -> builtins.list[StoredModel]: ...

    async def revision(self) -> int: ...

    async def add(
        self, alias: str, config: Mapping[str, Any], *, at: datetime, active: bool = True,
        is_default: bool = False, model_id: str | None = None,
    ) -> StoredModel: ...

    async def update(
        self, model_id: str, *, alias: str, config: Mapping[str, Any], active: bool, is_default: bool, at: datetime,
    ) -> StoredModel | None: ...

    async def delete(self, model_id: str, at: datetime) -> bool: ...


class ResponseStore(Protocol):
    """Responses API responses kept for ``previous_response_id`` and retrieval (sealed content)."""

    async def add(self, response: SealedResponse) -> None: ...

    async def get(self, response_id: str) -> SealedResponse | None: ...

    async def chain(self, response_id: str, limit: int) -> builtins.list[SealedResponse]:
        """The response and its ancestors through ``previous_response_id``, newest first, at most
        ``limit``; the walk stops at an ancestor that is gone."""
        ...

    async def delete(self, response_id: str) -> bool: ...

    async def prune(self, max_rows: int, max_age: timedelta, now: datetime | None = None) -> int:
        """Delete responses older than ``max_age`` and beyond the newest ``max_rows``."""
        ...


class ConsoleSessionStore(Protocol):
    """Web console sessions, by the digest of their id: shared by every worker and replica."""

    async def add(self, session: ConsoleSession) -> None: ...

    async def get(self, id_digest: str) -> ConsoleSession | None: ...

    async def seen(self, id_digest: str, at: datetime) -> None:
        """Note that the session was used at ``at``."""
        ...

    async def delete(self, id_digest: str) -> bool: ...

    async def prune(self, now: datetime) -> int:
        """Delete the sessions expired by ``now``; the number deleted."""
        ...


# -- metrics ------------------------------------------------------------------------------------
class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...

    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...

    def set_function(self, f: Callable[[], float]) -> None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class Labelled(Protocol[_Child_co]):
    """A metric with labels: one child per set of label values."""

    def labels(self, *labelvalues: str) -> _Child_co: ...

    def remove(self, *labelvalues: str) -> None: ...


class MetricsSink(Protocol):
    """The metrics the services record (names and meaning: docs/metrics.md)."""

    @property
    def in_flight(self) -> Labelled[Gauge]: ...  # model

    @property
    def upstream_latency(self) -> Labelled[Histogram]: ...  # model, provider, endpoint

    @property
    def ttft(self) -> Labelled[Histogram]: ...  # model, provider

    @property
    def overhead(self) -> Histogram: ...

    @property
    def queue_depth(self) -> Labelled[Gauge]: ...  # gate

    @property
    def loaded_bytes(self) -> Labelled[Gauge]: ...  # provider, model

    @property
    def loaded_vram_bytes(self) -> Labelled[Gauge]: ...  # provider, model

    @property
    def cooldowns(self) -> Labelled[Counter]: ...  # provider

    @property
    def cooling_down(self) -> Labelled[Gauge]: ...  # provider

    @property
    def panic(self) -> Labelled[Gauge]: ...  # provider

    @property
    def panic_requests(self) -> Labelled[Counter]: ...  # provider

    @property
    def rejections(self) -> Labelled[Counter]: ...  # model, reason

    @property
    def upstream_errors(self) -> Labelled[Counter]: ...  # provider, code

    def observe(
        self, model: str, provider: str, endpoint: str, status: int, seconds: float, prompt: int, completion: int,
        cost: float = 0.0,
    ) -> None:
        """One finished request: its count, latency, tokens and cost."""
        ...

    def model_unloaded(self, provider: str, model: str) -> None:
        """An upstream no longer has ``model`` loaded (its loaded-model gauges go)."""
        ...
