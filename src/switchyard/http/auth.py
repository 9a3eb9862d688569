"""Who is calling: ``Authorization: Bearer`` or ``x-api-key``, checked identically, or else the web
console's session cookie (``/ui``, see docs/console.md).

A session is read from the database on every request made with the cookie (no process keeps a
copy, so a session ended on one replica fails on all); it names the key by its digest, never by
the key, so a key revoked, rotated or expired ends its sessions at once. A change (any method but
GET, HEAD and OPTIONS) made with the cookie must carry the session's ``x-csrf-token`` header, or
it gets 403.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from switchyard.core.keys import Principal
from switchyard.errors import AuthenticationError, PermissionDeniedError
from switchyard.http.state import Services, services

__all__ = ["CSRF_HEADER", "SESSION_COOKIE", "authenticate", "require_admin"]

SESSION_COOKIE = "switchyard_session"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ANONYMOUS = Principal(key_id=None, name="anonymous", is_admin=True)


def _presented(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("x-api-key")


async def _from_session(request: Request, svc: Services, session_id: str) -> Principal:
    store = svc.console_sessions
    session = await store.get(session_id) if store is not None else None
    if store is None or session is None:
        raise AuthenticationError()
    if request.method not in _SAFE_METHODS:
        token = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
            raise PermissionDeniedError(f"A change made with a console session needs its {CSRF_HEADER} header.")
    if session.key_digest is None:  # signed in while auth was off
        raise AuthenticationError()
    try:
        return await svc.keys.authenticate_digest(session.key_digest)
    except AuthenticationError:
        await store.drop(session_id)  # the key was revoked, rotated or expired: so is the session
        raise


async def authenticate(request: Request) -> Principal:
    svc = services(request)
    if not svc.settings.auth:
        return _ANONYMOUS
    presented = _presented(request)
    session_id = request.cookies.get(SESSION_COOKIE) if presented is None else None
    if session_id:
        principal = await _from_session(request, svc, session_id)
    else:
        principal = await svc.keys.authenticate(presented)
    request.scope.setdefault("state", {})["key_id"] = principal.key_id
    return principal


async def require_admin(request: Request) -> Principal:
    principal = await authenticate(request)
    if not principal.is_admin:
        raise PermissionDeniedError("This route needs an admin key.")
    return principal
