"""Talking to a running server over HTTP, for ``switchyard models`` and ``switchyard run``: the
shared options (--url, --api-key, --config, --data-dir, --timeout, --insecure, --json), one JSON
call with its failures as one-line errors, and the console those commands print to.

The server and its key are found by :func:`switchyard.cli.status.resolve_server` (the data
dir's local admin token when no key is given).
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from switchyard import __version__
from switchyard.cli.status import ServerTarget, _get, _Reply, resolve_server

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["NETWORK_ERRORS", "ServerClient", "config_option", "connect", "console", "data_dir_option",
           "json_option", "print_json", "server_options"]

F = TypeVar("F", bound=Callable[..., Any])
NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)


@dataclass(frozen=True)
class ServerClient:
    target: ServerTarget
    timeout: float

    @property
    def url(self) -> str:
        return self.target.url

    def headers(self, body: bool = False) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": f"switchyard-cli/{__version__}"}
        if self.target.key:
            headers["Authorization"] = f"Bearer {self.target.key}"
        if body:
            headers["Content-Type"] = "application/json"
        return headers

    def unreachable(self, exc: BaseException) -> click.ClickException:
        """A network failure as the one-line error the CLI prints."""
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError):
            return click.ClickException(
                f"cannot verify the TLS certificate of {self.url} ({reason}); check --url, or pass --insecure")
        if isinstance(reason, TimeoutError):
            return click.ClickException(f"switchyard at {self.url} did not answer within {self.timeout:g}s "
                                        "(see --timeout)")
        return click.ClickException(f"switchyard is not running at {self.url} ({reason})")

    def call(self, method: str, path: str, body: dict[str, object] | None = None) -> dict[str, Any]:
        """One request; any failure becomes a one-line error (exit status 1)."""
        try:
            if method == "GET":
                reply = _get(self.target.opener, self.url + path, self.target.key, self.timeout)
            else:
                reply = self._send(method, path, body)
        except NETWORK_ERRORS as exc:
            raise self.unreachable(exc) from None
        if reply.status >= 400 or not isinstance(reply.body, dict):
            raise click.ClickException(self.explain(method, path, reply.status, reply.body))
        return reply.body

    def _send(self, method: str, path: str, body: dict[str, object] | None) -> _Reply:
        data = b"" if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data,  # noqa: S310 - http(s) only
                                         headers=self.headers(body is not None), method=method)
        try:
            with self.target.opener.open(request, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                status, raw = exc.code, exc.read()
        try:
            return _Reply(status, json.loads(raw))
        except ValueError:
            return _Reply(status, None)

    def explain(self, method: str, path: str, status: int, body: object) -> str:
        error = body.get("error") if isinstance(body, dict) else None
        message = str(error.get("message")) if isinstance(error, dict) else None
        where = f"{method} {path} answered {status}"
        if status == 401:
            return f"{where}: {self.target.refused(401)}"
        if status == 403:
            return f"{where}: {message or 'permission denied'} (this needs an admin key)"
        if status < 400:
            return f"{where} with something that is not a JSON object"
        return f"{where}: {message}" if message else where


def connect(url: str | None, api_key: str | None, config_file: Path | None, data_dir: Path | None,
            timeout: float, insecure: bool) -> ServerClient:
    """The server and its key, found as ``switchyard status`` finds them."""
    return ServerClient(resolve_server(url, api_key, config_file, data_dir, insecure), timeout)


config_option = click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
                             default=None, help="YAML config file.")
data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                               help="Data directory.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")


def server_options(timeout: float, with_json: bool = True) -> Callable[[F], F]:
    def wrap(fn: F) -> F:
        options = [
            click.option("--url", default=None, envvar="SWITCHYARD_URL", show_envvar=True,
                         help="The server's base URL (default: the server running from the data dir, else the "
                         "settings' host and port)."),
            click.option("--api-key", default=None, envvar="SWITCHYARD_ADMIN_KEY", show_envvar=True,
                         help="A key (default: the local admin token the server left in its data dir)."),
            config_option, data_dir_option,
            click.option("--timeout", type=float, default=timeout, show_default=True,
                         help="Seconds to wait for the answer."),
            click.option("--insecure", is_flag=True, help="HTTPS: do not verify the server's certificate."),
            *([json_option] if with_json else []),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return wrap


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out.width = max(out.width, 160)  # piped or captured: never fold a model name
    return out


def print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2))
