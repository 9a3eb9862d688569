"""The local admin token: CLI commands on the server's host, run by the server's user, talk to
it without a key, as ``docker`` and ``ollama`` do.

At every start ``switchyard serve`` makes a fresh random token, accepts it as an admin key, and
writes it with the server's URL to ``DATA_DIR/local-admin.json`` (mode 0600: only that user can
read it); with authentication off, only the URL. A clean shutdown removes the file. A client
that is given no key reads it, and sends the token only to the URL written beside it: the
server that wrote it. The token is never logged or printed.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from switchyard.settings import Settings

__all__ = ["FILE_NAME", "LocalAdmin", "discover", "issued", "local_url", "token_path"]

FILE_NAME = "local-admin.json"
_PREFIX = "sy-local-"


@dataclass(frozen=True, slots=True)
class LocalAdmin:
    """What a running server left in its data dir: where it listens, and its admin token."""

    url: str
    token: str | None  # None: the server runs without authentication
    certfile: Path | None  # the TLS certificate it serves, to verify it by


def token_path(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


def local_url(settings: Settings) -> str:
    """The URL a client on this host reaches the server at (a wildcard bind becomes loopback)."""
    host = settings.host
    if host in ("0.0.0.0", ""):  # noqa: S104 - a bind address, mapped to loopback to connect
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if settings.ssl_certfile else "http"
    return f"{scheme}://{host}:{settings.port}"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically (never readable by others, even briefly)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


@contextmanager
def issued(settings: Settings) -> Iterator[Settings]:
    """While serving: a fresh token in the data dir, and the settings that accept it as an admin key.

    The token is one more static admin key (so every worker process accepts it, and it shows as
    ``static`` in the audit log). With authentication off only the URL is written.
    """
    token = _PREFIX + secrets.token_urlsafe(32) if settings.auth else None
    path = token_path(settings.data_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = {"url": local_url(settings), "token": token,
              "certfile": str(settings.ssl_certfile) if settings.ssl_certfile else None}
    _write_private(path, json.dumps(record) + "\n")
    mine = record["url"], token
    try:
        if token is None:
            yield settings
        else:
            yield settings.model_copy(update={"api_keys": [*settings.api_keys, SecretStr(token)]})
    finally:
        with suppress(OSError, ValueError):
            written = json.loads(path.read_text(encoding="utf-8"))
            if (written.get("url"), written.get("token")) == mine:  # not a later server's
                path.unlink()


def discover(data_dir: Path) -> LocalAdmin | None:
    """The running server's URL and token from ``data_dir``, or None when there is no such file.

    Raises ``PermissionError`` when the file exists but this user cannot read it (it belongs to
    the server's user), and ``ValueError`` when it is not what the server writes.
    """
    path = token_path(data_dir)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    record = json.loads(raw)
    if not isinstance(record, dict) or not isinstance(record.get("url"), str) \
            or not isinstance(record.get("token"), str | None):
        raise ValueError(f"{path} is not a file switchyard serve wrote")
    cert = record.get("certfile")
    return LocalAdmin(url=record["url"], token=record.get("token"),
                      certfile=Path(cert) if isinstance(cert, str) else None)
