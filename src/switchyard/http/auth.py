"""Who is calling: ``Authorization: Bearer`` or ``x-api-key``, checked identically."""

from __future__ import annotations

from starlette.requests import Request

from switchyard.core.keys import Principal
from switchyard.errors import PermissionDeniedError
from switchyard.http.state import services

__all__ = ["authenticate", "require_admin"]

_ANONYMOUS = Principal(key_id=None, name="anonymous", is_admin=True)


def _presented(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("x-api-key")


async def authenticate(request: Request) -> Principal:
    svc = services(request)
    if not svc.settings.auth:
        return _ANONYMOUS
    principal = await svc.keys.authenticate(_presented(request))
    request.scope.setdefault("state", {})["key_id"] = principal.key_id
    return principal


async def require_admin(request: Request) -> Principal:
    principal = await authenticate(request)
    if not principal.is_admin:
        raise PermissionDeniedError("This route needs an admin key.")
    return principal
