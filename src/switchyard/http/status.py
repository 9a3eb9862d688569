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

__all__ = ["status", "upstreams"]

_EVERYONE = Principal(key_id=None, name="status", is_admin=True)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def upstreams(request: Request) -> Response:
    """GET /admin/upstreams: reachability, models and (Ollama) loaded models of each upstream."""
    await require_admin(request)
    return _json({"object": "list", "data": await services(request).gateway.upstreams.status()})


async def status(request: Request) -> Response:
    """GET /admin/status: what `switchyard status` shows about a running server."""
    await require_admin(request)
    svc = services(request)
    started = request.app.state.started_at
    return _json({
        "object": "status",
        "version": __version__,
        "pid": os.getpid(),
        "started_at": started,
        "uptime_s": round(time.time() - started, 1),
        "in_flight": svc.gateway.attempts.in_flight,
        "models": [t.alias for t in svc.gateway.upstreams.models_for(_EVERYONE)],
        "upstreams": await svc.gateway.upstreams.status(),
        "recent_errors": list(svc.gateway.accounting.recent_errors)[::-1],
    })
