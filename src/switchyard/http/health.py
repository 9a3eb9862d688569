"""GET / (where things are, public), GET /health (liveness, public), GET /ready (readiness,
public), GET /metrics (admin)."""

from __future__ import annotations

import asyncio

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard import __version__
from switchyard.http.auth import require_admin
from switchyard.http.state import services
from switchyard.observability.metrics import CONTENT_TYPE

__all__ = ["health", "index", "metrics", "ready"]

_READY_TIMEOUT = 3.0


_INDEX = orjson.dumps({
    "name": "switchyard",
    "version": __version__,
    "message": "An OpenAI-compatible model gateway: send OpenAI (or Anthropic Messages) API requests under /v1, "
               "with a key in 'Authorization: Bearer ...'.",
    "api": "/v1",
    "models": "/v1/models",
    "health": "/health",
    "ready": "/ready",
    "docs": "https://platform.openai.com/docs/api-reference for the API under /v1; Switchyard's own guide is "
            "README.md and docs/ in its source.",
})


async def index(request: Request) -> Response:
    """What a person who opens the server's address in a browser sees: where the API is."""
    return Response(_INDEX, media_type="application/json")


async def health(request: Request) -> Response:
    return Response(orjson.dumps({"status": "healthy", "version": __version__}), media_type="application/json")


async def ready(request: Request) -> Response:
    svc = services(request)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(svc.ping_store(), _READY_TIMEOUT)
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"unreachable ({type(exc).__name__})"
    try:
        upstreams = await asyncio.wait_for(svc.gateway.upstreams.check(), _READY_TIMEOUT)
        for name, problem in upstreams.items():
            checks[f"upstream:{name}"] = problem or "ok"
    except TimeoutError:
        checks["upstreams"] = "timed out"
    ok = all(v == "ok" for v in checks.values())
    governance = svc.gateway.accounting.governance
    degraded = governance.degraded if governance is not None else []
    for part in degraded:  # still serving, on per-process limits: ready, but say so
        checks[f"redis:{part}"] = "unreachable: using per-process " + part
    status = "not_ready" if not ok else "degraded" if degraded else "ready"
    body = {"status": status, "checks": checks}
    return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json")


async def metrics(request: Request) -> Response:
    svc = services(request)
    if not svc.settings.metrics_public:
        await require_admin(request)
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE)
