"""GET /admin/audit, and who an admin request is for the audit log.

``GET /admin/audit`` (admin keys only) lists entries newest first. Filters: ``actor`` (an admin
key's id, ``static``, ``cli``), ``action`` (a prefix: ``key.`` finds every key action),
``object_id``, ``since`` and ``until`` (ISO 8601, Unix seconds, or an age such as ``30m``,
``24h``, ``7d``: that long ago), ``limit`` (default 100, at most 1000).

The admin services write the entries themselves; handlers only say who is acting
(:func:`admin_actor`).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.admin import Actor, Admin
from switchyard.core.audit import AuditEntry
from switchyard.errors import BadRequestError, ServiceUnavailableError
from switchyard.http.auth import require_admin
from switchyard.http.query import query_time
from switchyard.http.state import services

__all__ = ["admin_actor", "admin_of", "entry_json", "list_audit"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


async def admin_actor(request: Request) -> Actor:
    """Require an admin key; the actor it is in the audit log: the key's id (``static`` for keys from
    the settings, ``anonymous`` with auth off), with the client's address and the request id."""
    principal = await require_admin(request)
    state = request.scope.get("state") or {}
    return Actor(principal.key_id or principal.name, client_ip=request.client.host if request.client else None,
                 request_id=state.get("request_id"))


def admin_of(request: Request) -> Admin:
    """The admin services (keys, teams, credentials, the audit log) of this server."""
    admin = services(request).admin
    if admin is None:
        raise ServiceUnavailableError("The admin API is not available in this server.")
    return admin


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "object": "audit_entry",
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "details": entry.details,
        "client_ip": entry.client_ip,
        "request_id": entry.request_id,
    }


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequestError(f"'limit' must be an integer from 1 to {MAX_LIMIT}; got '{raw}'.", param="limit")
    return value


async def list_audit(request: Request) -> Response:
    await require_admin(request)
    audit = admin_of(request).audit
    q = request.query_params
    known = {"actor", "action", "object_id", "since", "until", "limit"}
    for name in q:
        if name not in known:
            raise BadRequestError(f"Unknown query parameter '{name}'; use one of {sorted(known)}.", param=name)
    since, until = query_time(request, "since"), query_time(request, "until")
    entries = await audit.query(actor=q.get("actor") or None, action=q.get("action") or None,
                                object_id=q.get("object_id") or None, since=since, until=until,
                                limit=_limit(q.get("limit")))
    body = {"object": "list", "data": [entry_json(e) for e in entries]}
    return Response(orjson.dumps(body), media_type="application/json")
