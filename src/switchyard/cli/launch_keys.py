"""The keys ``switchyard launch`` makes: one per server, client and model, scoped to that model.

A key's secret is shown once (the server keeps only its hash), so the secrets of the keys
launch made are kept in ``launch-keys.json`` in the user's config dir
(``$XDG_CONFIG_HOME/switchyard``, mode 0600). A stored key is used again while the server
still holds it active, scoped to that one model, with the same secret; otherwise a new one is
made and stored in its place. Nothing is ever revoked here: a key that is no longer used shows
in ``switchyard keys list`` for an operator to revoke.

Keys are made over the admin API (``POST /admin/keys``), so each is in the audit log.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from switchyard.cli.local_admin import _write_private
from switchyard.cli.server_client import NETWORK_ERRORS, ServerClient
from switchyard.cli.status import _get

__all__ = ["LaunchKey", "key_name", "keys_file", "lookup", "make", "masked"]

FILE_NAME = "launch-keys.json"


@dataclass(frozen=True, slots=True)
class LaunchKey:
    id: str
    name: str
    secret: str
    reused: bool


def key_name(client: str, alias: str) -> str:
    return f"launch-{client}-{alias}"[:200]


def keys_file() -> Path:
    return Path(click.get_app_dir("switchyard")) / FILE_NAME


def masked(secret: str) -> str:
    return secret[:10] + "…" if len(secret) > 14 else "…"


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    entries = record.get("keys") if isinstance(record, dict) else None
    return [e for e in entries or [] if isinstance(e, dict)]


def _same(entry: dict[str, Any], server: str, name: str) -> bool:
    return entry.get("server") == server and entry.get("name") == name and isinstance(entry.get("key"), str) \
        and isinstance(entry.get("id"), str)


def _store(path: Path, server: str, key: LaunchKey, model: str) -> None:
    entries = [e for e in _read(path) if not _same(e, server, key.name)]
    entries.append({"server": server, "name": key.name, "id": key.id, "key": key.secret, "model": model,
                    "created_at": datetime.now(UTC).isoformat(timespec="seconds")})
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(path, json.dumps({"keys": entries}, indent=2) + "\n")


def _usable(client: ServerClient, entry: dict[str, Any], alias: str) -> str | None:
    """Why the stored key cannot be used again, or None when it can."""
    key_id = str(entry["id"])
    reply = _get(client.target.opener, f"{client.url}/admin/keys/{urllib.parse.quote(key_id, safe='')}",
                 client.target.key, client.timeout)
    if reply.status == 404:
        return f"{key_id} no longer exists on this server"
    if reply.status != 200 or not isinstance(reply.body, dict):
        raise click.ClickException(client.explain("GET", "/admin/keys/{id}", reply.status, reply.body))
    body = reply.body
    if not body.get("active") or body.get("revoked_at"):
        return f"{key_id} was revoked"
    expires = body.get("expires_at")
    if isinstance(expires, str) and datetime.fromisoformat(expires) <= datetime.now(UTC):
        return f"{key_id} has expired"
    if body.get("models") != [alias]:
        return f"{key_id} is no longer scoped to {alias} alone"
    if not str(entry["key"]).startswith(str(body.get("prefix") or "\0")):
        return f"{key_id} was given a new secret (rotated)"
    as_key = _get(client.target.opener, f"{client.url}/v1/models", str(entry["key"]), client.timeout)
    if as_key.status != 200:
        return f"the server refuses the stored secret of {key_id} ({as_key.status})"
    return None


def lookup(client: ServerClient, name: str, alias: str) -> tuple[LaunchKey | None, str | None]:
    """The stored key named ``name`` for this server when it may be used again, else why not."""
    entry = next((e for e in _read(keys_file()) if _same(e, client.url, name)), None)
    if entry is None:
        return None, None
    try:
        why = _usable(client, entry, alias)
    except NETWORK_ERRORS as exc:
        raise client.unreachable(exc) from None
    if why is not None:
        return None, why
    return LaunchKey(str(entry["id"]), name, str(entry["key"]), reused=True), None


def make(client: ServerClient, name: str, alias: str) -> LaunchKey:
    """A new key scoped to ``alias`` (``POST /admin/keys``), stored for the next launch."""
    body = client.call("POST", "/admin/keys", {"name": name, "models": [alias]})
    secret, key_id = body.get("key"), body.get("id")
    if not isinstance(secret, str) or not isinstance(key_id, str):
        raise click.ClickException("POST /admin/keys answered without a key")
    key = LaunchKey(key_id, name, secret, reused=False)
    _store(keys_file(), client.url, key, alias)
    return key

