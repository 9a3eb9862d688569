"""The admin audit log: ``record`` queues an entry (never waits on the database), a background
task writes them in batches, and readers flush first so they see every action taken so far.

The admin services (``KeyAdmin``, ``TeamAdmin``, ``CredentialAdmin``, ``ModelCatalog``) record
each action they apply themselves, for the :class:`Actor` the edge names: an HTTP handler the
admin key that called it (with the client's address and the request id), the CLI ``cli``.

Details are scrubbed before they are queued: a field whose name says secret (``api_key``,
``key``, ``secret``, ``password``, ``token``, ``authorization``, ...) keeps its name with the
value ``"[redacted]"``, and any string that looks like a key (``sk-...``, a Switchyard key,
``Bearer ...``) is redacted wherever it appears.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from switchyard.core.audit import AuditEntry
from switchyard.core.ports import AuditStore
from switchyard.service.batches import BatchWriter

__all__ = ["CLI", "REDACTED", "Actor", "AuditEntry", "AuditLog", "scrub"]

log = logging.getLogger("switchyard.audit")
REDACTED = "[redacted]"
_MAX_BUFFER = 100_000
_MAX_DEPTH = 8
_MAX_STRING = 2000

_SECRET_NAME = re.compile(
    r"(^key$|secret|api[-_]?key|apikey|password|passwd|token$|tokens?_?value|authorization|bearer|"
    r"private|ciphertext|master|credential_value|^auth$|key_hash)",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"(sk-[A-Za-z0-9_-]{8,}|(?:pk|rk)-[A-Za-z0-9_-]{16,}|AIza[0-9A-Za-z_-]{20,}|"
    r"(?i:bearer)\s+\S+|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)"
)


def scrub(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of ``value`` with secrets redacted (see the module docstring)."""
    if depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            name = str(k)
            out[name] = REDACTED if _SECRET_NAME.search(name) and v is not None else scrub(v, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v, depth + 1) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value[:_MAX_STRING])
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value), depth + 1)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who takes an admin action: an admin key's id, ``static`` (a key from the settings),
    ``anonymous`` (auth off) or ``cli`` (the command line on the store)."""

    id: str
    client_ip: str | None = None
    request_id: str | None = None


CLI = Actor("cli")


class AuditLog:
    """Queue admin actions; write them off the request path.

    Without :meth:`start` (the CLI), nothing is written until :meth:`flush` or :meth:`aclose`.
    A failed write keeps its entries for the next attempt (up to ``_MAX_BUFFER``).
    """

    def __init__(self, store: AuditStore, interval: float = 0.5, clock: Callable[[], datetime] = _now) -> None:
        self._store = store
        self._clock = clock
        self._batches = BatchWriter[AuditEntry](store.write, what="audit entries", log=log, interval=interval,
                                                max_buffer=_MAX_BUFFER)

    @property
    def pending(self) -> int:
        return self._batches.pending

    def record(
        self,
        actor_key_id: str,
        action: str,
        object_type: str,
        object_id: str | None,
        details: Mapping[str, Any] | None = None,
        *,
        client_ip: str | None = None,
        request_id: str | None = None,
    ) -> AuditEntry:
        entry = AuditEntry(
            at=self._clock(),
            actor=actor_key_id,
            action=action,
            object_type=object_type,
            object_id=object_id,
            details=scrub(dict(details or {})),
            client_ip=client_ip,
            request_id=request_id,
        )
        self._batches.add(entry)
        return entry

    def action(self, actor: Actor, action: str, object_type: str, object_id: str | None,
               details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Queue the entry of an action ``actor`` took (and that succeeded)."""
        return self.record(actor.id, action, object_type, object_id, details, client_ip=actor.client_ip,
                           request_id=actor.request_id)

    def start(self) -> None:
        self._batches.start("switchyard-audit-writer")

    async def flush(self) -> None:
        await self._batches.flush()

    async def query(self, **filters: Any) -> list[AuditEntry]:
        """:meth:`AuditStore.query`, after writing what is queued."""
        await self.flush()
        return await self._store.query(**filters)

    async def aclose(self) -> None:
        await self._batches.aclose()
