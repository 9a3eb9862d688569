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
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.core.credentials import Credential
from switchyard.errors import AuthenticationError, BadRequestError, NotFoundError, ServiceUnavailableError
from switchyard.http.audit import record
from switchyard.http.auth import require_admin
from switchyard.http.body import read_json
from switchyard.http.routes import INTERNAL_DECRYPT_PATHS
from switchyard.http.state import services
from switchyard.service.vault import Vault, VaultError
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


class CreateCredential(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    provider: str
    api_key: SecretStr
    base_url: str | None = None
    check: bool = True


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


def _vault(request: Request) -> Vault:
    vault = services(request).vault
    if vault is None:
        raise ServiceUnavailableError("The credential vault is not available in this server.",
                                      code="vault_not_configured")
    return vault


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


async def _credentials_changed(request: Request) -> None:
    """Routing holds decrypted credentials: rebuild it now rather than at the next model change."""
    catalog = services(request).catalog
    if catalog is not None:
        await catalog.reload()


async def list_credentials(request: Request) -> Response:
    await require_admin(request)
    creds = await _vault(request).list()
    return _json({"object": "list", "data": [credential_json(c) for c in creds]})


async def create_credential(request: Request) -> Response:
    principal = await require_admin(request)
    vault = _vault(request)
    check = _flag(request, "check", True)
    try:
        spec = CreateCredential.model_validate(await read_json(request, services(request).settings.max_body_bytes))
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise BadRequestError(f"Invalid request: {param}: {err['msg']}", param=param) from None
    cred = await _guard(vault.add(spec.name, spec.provider, spec.api_key.get_secret_value(), base_url=spec.base_url,
                                  check=check and spec.check))
    await _credentials_changed(request)
    record(request, principal, "credential.add", "credential", cred.id,  # never the api_key
           {"name": cred.name, "provider": cred.provider, "base_url": cred.base_url, "checked": check and spec.check})
    return _json(credential_json(cred), 201)


async def get_credential(request: Request) -> Response:
    await require_admin(request)
    return _json(credential_json(await _vault(request).get(request.path_params["credential_id"])))


async def delete_credential(request: Request) -> Response:
    principal = await require_admin(request)
    cred = await _vault(request).remove(request.path_params["credential_id"])
    await _credentials_changed(request)
    record(request, principal, "credential.remove", "credential", cred.id, {"name": cred.name})
    return _json({"id": cred.id, "object": "credential", "name": cred.name, "deleted": True})


async def check_credential(request: Request) -> Response:
    """Re-validate against the provider; 200 either way, with the outcome in last_check_*."""
    principal = await require_admin(request)
    vault = _vault(request)
    before = await vault.get(request.path_params["credential_id"])
    cred = await _guard(vault.check(before.id))
    record(request, principal, "credential.check", "credential", cred.id,
           {"name": cred.name, "ok": cred.last_check_ok})
    return _json({**credential_json(cred), "checked": cred.last_checked_at != before.last_checked_at})


async def _set_active(request: Request, active: bool) -> Response:
    principal = await require_admin(request)
    cred = await _vault(request).set_active(request.path_params["credential_id"], active)
    await _credentials_changed(request)
    record(request, principal, "credential.activate" if active else "credential.deactivate", "credential", cred.id,
           {"name": cred.name})
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
    cred, secret = await _guard(_vault(request).decrypt(credential_id))
    log.info("credential decrypted", extra={"credential_id": cred.id, "credential": cred.name, "client": client})
    return _json({"id": cred.id, "name": cred.name, "provider": cred.provider, "api_key": secret},
                 headers={"Cache-Control": "no-store"})


def internal_routes(settings: Settings) -> list[Route]:
    """The decrypt routes, only when ``internal_secret`` is set: otherwise they do not exist (404)."""
    if settings.internal_secret is None:
        return []
    return [Route(path, internal_decrypt, methods=["GET"]) for path in INTERNAL_DECRYPT_PATHS]
