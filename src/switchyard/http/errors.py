"""The one place gateway errors become HTTP: an OpenAI error body, or a final SSE event.

Routes match exactly (no trailing-slash redirects). An unknown path is a 404 and a known path
with another method a 405, both in OpenAI's shape and only after authentication: without a key
they are the same 401 as any other route, so nothing about the route table is given away. A
wrong method on a public path (``/health``, ``/ready``, ``/metrics`` when public) needs no key.
"""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from switchyard.errors import GatewayError, NotFoundError
from switchyard.http.auth import authenticate
from switchyard.http.state import services

__all__ = ["error_event", "error_response", "exception_handlers"]

log = logging.getLogger("switchyard.http")
_INTERNAL = {"error": {"message": "Internal server error.", "type": "server_error", "param": None, "code": None}}


def error_response(exc: GatewayError) -> Response:
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return Response(orjson.dumps(exc.to_dict()), status_code=exc.status_code, headers=headers,
                    media_type="application/json")


def error_event(exc: GatewayError) -> bytes:
    return b"data: " + orjson.dumps(exc.to_dict()) + b"\n\n"


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


def _public(request: Request) -> bool:
    from switchyard.http.routes import PUBLIC_PATHS  # (routes imports the handlers, which import this)

    route = request.scope.get("route")  # set by the router when only the method did not match
    path = getattr(route, "path", None)
    return path in PUBLIC_PATHS or (path == "/metrics" and services(request).settings.metrics_public)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405) and not _public(request):
        try:
            await authenticate(request)
        except GatewayError as refused:
            return error_response(refused)
    if exc.status_code == 404:
        return error_response(NotFoundError(f"Unknown route: {request.method} {request.url.path}"))
    err = GatewayError(str(exc.detail), code=None)
    err.status_code = exc.status_code
    err.error_type = "invalid_request_error"
    if exc.status_code == 405:
        err.code = "method_not_allowed"
        err.message = f"Method {request.method} is not allowed on {request.url.path}."
    err.headers.update(exc.headers or {})
    return error_response(err)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc, extra={"request_id": request.scope.get("state", {}).get("request_id")})
    return Response(orjson.dumps(_INTERNAL), status_code=500, media_type="application/json")


exception_handlers = {GatewayError: _gateway_error, HTTPException: _http_exception, Exception: _unexpected}
