"""The Protocols the gateway pipeline depends on. Implementations are injected by app.py."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from switchyard.core.chat import ChatRequest, ChatResult, StreamPiece
from switchyard.core.embeddings import EmbeddingRequest, EmbeddingResult
from switchyard.core.keys import ApiKey
from switchyard.core.models import Target
from switchyard.core.usage import UsageRecord

__all__ = ["KeyStore", "ManagesModels", "Provider", "ReportsRunningModels", "UsageStore"]


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
    ) -> list[dict[str, object]]:
        """Totals from the hourly rollups, grouped by one or more of hour, day, key, model."""
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
