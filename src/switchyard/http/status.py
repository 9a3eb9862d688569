"""GET /admin/status and /admin/upstreams: what a running server says about itself. Admin keys only."""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard import __version__
from switchyard.core.keys import Principal
from switchyard.http.auth import require_admin
from switchyard.http.state import services

__all__ = ["restarts", "status", "upstreams"]

_EVERYONE = Principal(key_id=None, name="status", is_admin=True)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def restarts(supervisor: dict[str, Any] | None) -> dict[str, Any]:
    """How often the supervisor started a worker again after one died, and the last crash."""
    supervisor = supervisor or {}
    return {"restarts": int(supervisor.get("restarts", 0)), "last_crash": supervisor.get("last_crash")}


async def upstreams(request: Request) -> Response:
    """GET /admin/upstreams: reachability, models and (Ollama) loaded models of each upstream."""
    await require_admin(request)
    return _json({"object": "list", "data": await services(request).gateway.upstreams.status()})


async def status(request: Request) -> Response:
    """GET /admin/status: what `switchyard status` shows about a running server (``started_at``
    and ``uptime_s``: the answering worker's, which starts again after a crash)."""
    await require_admin(request)
    svc = services(request)
    started = request.app.state.started_at
    supervisor = svc.supervision() if svc.supervision is not None else None
    return _json({
        "object": "status",
        "version": __version__,
        "pid": supervisor.get("pid", os.getpid()) if supervisor else os.getpid(),  # the one `stop` signals
        "worker_pid": os.getpid(),  # the process that answered
        **restarts(supervisor),
        "started_at": started,
        "uptime_s": round(time.time() - started, 1),
        "in_flight": svc.gateway.attempts.in_flight,
        "models": [t.alias for t in svc.gateway.upstreams.models_for(_EVERYONE)],
        "upstreams": await svc.gateway.upstreams.status(),
        "recent_errors": list(svc.gateway.accounting.recent_errors)[::-1],
    })
