"""The console's session API. Sign-in takes a key (admin or not) once and keeps only its digest
on the server; the browser holds an opaque HttpOnly, SameSite=Strict cookie (Secure over TLS, or
behind a trusted proxy that says https) and, in memory, the CSRF token every change must send.

- ``POST /ui/api/session`` ``{"key": "sk-..."}``: sign in (429 past ``ui_sign_in_per_minute``);
- ``GET /ui/api/session``: who is signed in, and the CSRF token (after a reload);
- ``DELETE /ui/api/session``: sign out (needs the CSRF token);
- ``GET /ui/api/me``: the signed-in key, its budget's status and the models it may use;
- ``GET /ui/api/me/usage``: its own usage, as ``/admin/usage`` answers (``key`` is ignored).

Everything else the console does goes through the admin API and ``/v1`` with the cookie.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.core.budget_periods import budget_status
from switchyard.core.keys import Principal
from switchyard.errors import AuthenticationError, BadRequestError
from switchyard.http.auth import SESSION_COOKIE, authenticate
from switchyard.http.body import read_json
from switchyard.http.state import services
from switchyard.http.ui.pages import SECURITY_HEADERS
from switchyard.http.usage import usage_report
from switchyard.service.console_sessions import ConsoleSessions

__all__ = ["me", "my_usage", "session_info", "sign_in", "sign_out"]


def _sessions(request: Request) -> ConsoleSessions:
    sessions = services(request).console_sessions
    if sessions is None:
        raise RuntimeError("the console's session store is not configured")
    return sessions


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json",
                    headers=SECURITY_HEADERS)


def _who(principal: Principal, csrf_token: str, expires_in: float) -> dict[str, Any]:
    return {"object": "session", "name": principal.name, "key_id": principal.key_id, "admin": principal.is_admin,
            "csrf_token": csrf_token, "expires_in": round(expires_in)}


async def sign_in(request: Request) -> Response:
    sessions = _sessions(request)
    svc = services(request)
    await sessions.count_sign_in(request.client.host if request.client else "unknown")
    if "application/json" not in request.headers.get("content-type", ""):
        raise BadRequestError("Send the key as JSON: {\"key\": \"sk-...\"}.")
    body = await read_json(request, 64 * 1024)
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key:
        raise BadRequestError("'key' is required.", param="key")
    if svc.settings.auth:
        digest: str | None = svc.keys.digest(key)
        principal = await svc.keys.authenticate_digest(digest or "")
    else:
        digest, principal = None, Principal(key_id=None, name="anonymous", is_admin=True)
    await sessions.drop(request.cookies.get(SESSION_COOKIE, ""))  # a new sign-in ends the session it replaces
    made = await sessions.create(digest)
    response = _json(_who(principal, made.session.csrf_token, sessions.ttl))
    response.set_cookie(SESSION_COOKIE, made.id, max_age=int(sessions.ttl), path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


async def session_info(request: Request) -> Response:
    sessions = _sessions(request)
    session = await sessions.get(request.cookies.get(SESSION_COOKIE, ""))
    if session is None:
        raise AuthenticationError()
    principal = await authenticate(request)
    return _json(_who(principal, session.csrf_token, sessions.remaining(session)))


async def sign_out(request: Request) -> Response:
    sessions = _sessions(request)
    session_id = request.cookies.get(SESSION_COOKIE, "")
    if await sessions.get(session_id) is not None:
        await authenticate(request)  # the CSRF token: nobody else signs you out
        await sessions.drop(session_id)
    response = _json({"object": "session", "signed_out": True})
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response


async def me(request: Request) -> Response:
    principal = await authenticate(request)
    svc = services(request)
    body: dict[str, Any] = {"object": "me", "name": principal.name, "admin": principal.is_admin,
                            "key": None, "budget_status": None,
                            "models": [t.alias for t in svc.gateway.upstreams.models_for(principal)]}
    if principal.key_id is not None:
        from switchyard.http.keys import key_json

        key = await svc.keys.get(principal.key_id)
        team = svc.keys.cached_team(key.team_id) if key.team_id is not None else None
        body["key"] = key_json(key, team.name if team is not None else None)
        if key.budget is not None and svc.spent is not None:
            body["budget_status"] = await budget_status(svc.spent, f"key:{key.id}", key.budget)
    return _json(body)


async def my_usage(request: Request) -> Response:
    principal = await authenticate(request)
    if principal.key_id is None:  # a static or anonymous admin has no usage of its own: everything
        response = await usage_report(request)
    else:
        response = await usage_report(request, only_key=principal.key_id)
    response.headers.update(SECURITY_HEADERS)
    return response

