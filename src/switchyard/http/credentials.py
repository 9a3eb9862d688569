"""/admin/credentials: the encrypted credential vault (admin keys only), and the internal decrypt route.

Answers show a key only as ``sk-pr…wxyz``. The decrypt route (``/internal/credentials/{id}/decrypt``,
and the seed system's ``/api/api-keys/{id}/decrypt``) exists only when ``internal_secret`` is set,
is opened by the ``x-internal-secret`` header alone (never by an API key), and logs every use.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.admin import CredentialAdmin
from switchyard.admin.vault import VaultError
from switchyard.core.credentials import Credential
from switchyard.errors import AuthenticationError, BadRequestError, NotFoundError, ServiceUnavailableError
from switchyard.http.audit import admin_actor, admin_of
from switchyard.http.auth import require_admin
from switchyard.http.body import read_json
from switchyard.http.routes import INTERNAL_DECRYPT_PATHS
from switchyard.http.state import services
from switchyard.settings import Settings

__all__ = [
    "INTERNAL_DECRYPT_PATHS",
    "activate_credential",
    "check_credential",
    "create_credential",
    "credential_json",
    "deactivate_credential",
    "delete_credential",
    "get_credential",
    "internal_decrypt",
    "internal_routes",
    "list_credentials",
]

log = logging.getLogger("switchyard.credentials")
T = TypeVar("T")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def credential_json(cred: Credential) -> dict[str, Any]:
    return {
        "id": cred.id,
        "object": "credential",
        "name": cred.name,
        "provider": cred.provider,
        "base_url": cred.base_url,
        "display": cred.display,
        "active": cred.active,
        "key_version": cred.key_version,
        "created_at": _iso(cred.created_at),
        "updated_at": _iso(cred.updated_at),
        "use_count": cred.use_count,
        "last_used_at": _iso(cred.last_used_at),
        "last_checked_at": _iso(cred.last_checked_at),
        "last_check_ok": cred.last_check_ok,
        "last_check_error": cred.last_check_error,
    }


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _credentials(request: Request) -> CredentialAdmin:
    credentials = admin_of(request).credentials
    if services(request).vault is None:
        raise ServiceUnavailableError("The credential vault is not available in this server.",
                                      code="vault_not_configured")
    return credentials


async def _guard(call: Awaitable[T]) -> T:
    """Vault failures (no master key, wrong master key, altered rows) as 503s naming the credential."""
    try:
        return await call
    except VaultError as exc:
        raise ServiceUnavailableError(str(exc), code=exc.code) from None


def _flag(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise BadRequestError(f"Query parameter '{name}' must be true or false.", param=name)


async def list_credentials(request: Request) -> Response:
    await require_admin(request)
    creds = await _credentials(request).list()
    return _json({"object": "list", "data": [credential_json(c) for c in creds]})


async def create_credential(request: Request) -> Response:
    actor = await admin_actor(request)
    credentials = _credentials(request)
    check = _flag(request, "check", True)
    body = await read_json(request, services(request).settings.max_body_bytes)
    cred = await _guard(credentials.add(body, actor=actor, check=check))
    return _json(credential_json(cred), 201)


async def get_credential(request: Request) -> Response:
    await require_admin(request)
    return _json(credential_json(await _credentials(request).get(request.path_params["credential_id"])))


async def delete_credential(request: Request) -> Response:
    actor = await admin_actor(request)
    cred = await _credentials(request).remove(request.path_params["credential_id"], actor=actor)
    return _json({"id": cred.id, "object": "credential", "name": cred.name, "deleted": True})


async def check_credential(request: Request) -> Response:
    """Re-validate against the provider; 200 either way, with the outcome in last_check_*."""
    actor = await admin_actor(request)
    cred, checked = await _guard(_credentials(request).check(request.path_params["credential_id"], actor=actor))
    return _json({**credential_json(cred), "checked": checked})


async def _set_active(request: Request, active: bool) -> Response:
    actor = await admin_actor(request)
    cred = await _credentials(request).set_active(request.path_params["credential_id"], active, actor=actor)
    return _json(credential_json(cred))


async def activate_credential(request: Request) -> Response:
    return await _set_active(request, True)


async def deactivate_credential(request: Request) -> Response:
    return await _set_active(request, False)


async def internal_decrypt(request: Request) -> Response:
    """GET .../{credential_id}/decrypt with ``x-internal-secret``: {"id", "name", "provider", "api_key"}."""
    svc = services(request)
    expected = svc.settings.internal_secret
    if expected is None:  # never routed then; answer as the router would
        raise NotFoundError(f"Unknown route: {request.method} {request.url.path}")
    credential_id = request.path_params["credential_id"]
    client = request.client.host if request.client else None
    presented = request.headers.get("x-internal-secret", "").encode("utf-8", "surrogateescape")
    # digests first: compare_digest would leak the secret's length through its timing
    if not hmac.compare_digest(hashlib.sha256(presented).digest(),
                               hashlib.sha256(expected.get_secret_value().encode("utf-8")).digest()):
        log.warning("credential decrypt refused", extra={"credential_id": credential_id, "client": client})
        raise AuthenticationError()
    cred, secret = await _guard(_credentials(request).vault.decrypt(credential_id))
    log.info("credential decrypted", extra={"credential_id": cred.id, "credential": cred.name, "client": client})
    return _json({"id": cred.id, "name": cred.name, "provider": cred.provider, "api_key": secret},
                 headers={"Cache-Control": "no-store"})


def internal_routes(settings: Settings) -> list[Route]:
    """The decrypt routes, only when ``internal_secret`` is set: otherwise they do not exist (404)."""
    if settings.internal_secret is None:
        return []
    return [Route(path, internal_decrypt, methods=["GET"]) for path in INTERNAL_DECRYPT_PATHS]
