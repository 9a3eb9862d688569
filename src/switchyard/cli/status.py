"""``switchyard status``: an operator's view of a running server, over HTTP (``/health``,
``/ready``, ``/admin/status``), with the standard library only."""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from switchyard import __version__
from switchyard.cli.local_admin import discover, local_url, token_path
from switchyard.settings import ConfigError, Settings, load_settings

__all__ = ["status"]

EXIT_DOWN = 1
EXIT_NEEDS_ADMIN = 2


class _Reply:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body


def _opener(url: str, own_cert: Path | None, insecure: bool) -> urllib.request.OpenerDirector:
    """No proxies (the server is usually on loopback). HTTPS to the URL derived from the settings
    (``own_cert`` given): the server must present the configured certificate, whatever names it
    holds (it is usually issued for a public name, not 127.0.0.1). HTTPS to a given --url: the
    system's CAs and the host name. --insecure skips verification."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if url.startswith("https://"):
        if insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif own_cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            try:
                context.load_verify_locations(cafile=str(own_cert))
            except (OSError, ssl.SSLError) as exc:
                raise click.ClickException(f"cannot read the server's certificate {own_cert}: {exc}") from None
        else:
            context = ssl.create_default_context()
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def _get(opener: urllib.request.OpenerDirector, url: str, key: str | None, timeout: float) -> _Reply:
    headers = {"Accept": "application/json", "User-Agent": f"switchyard-cli/{__version__}"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) only, checked by status
    try:
        with opener.open(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, raw = exc.code, exc.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return _Reply(status, body)


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {s:02d}s" if minutes else f"{s}s"


def _running(entry: dict[str, Any]) -> str:
    parts = []
    for model in entry.get("running") or []:
        name = str(model.get("name", "?"))
        extra = []
        if model.get("size_vram"):
            extra.append(f"{int(model['size_vram']) / 1e9:.1f} GB VRAM")
        if model.get("expires_at"):
            extra.append(f"until {str(model['expires_at'])[:19].replace('T', ' ')}")
        parts.append(f"{name} ({', '.join(extra)})" if extra else name)
    return ", ".join(parts) or "none"


_BREAKER_STATES = {
    "open": "cooling down: skipped while another deployment can serve",
    "half_open": "cooling down: the next request probes it",
    "panic": "cooling down, serving anyway (panic: nothing else can)",
}


def _breakers(up: dict[str, Any]) -> list[str]:
    """The upstream's breakers that are not closed, its own and its deployments'."""
    own = [{"breaker": up.get("name"), "state": up.get("breaker"), "cooldown_s": up.get("cooldown_s")}]
    lines = []
    for breaker in own + list(up.get("deployment_breakers") or []):
        state = _BREAKER_STATES.get(str(breaker.get("state")))
        if state is not None:
            lines.append(f"breaker {breaker.get('breaker')}: {state} ({breaker.get('cooldown_s', 0)} s left)")
    return lines


def _print_status(url: str, ready: _Reply, admin: dict[str, Any], errors: int) -> None:
    readiness = "ready" if ready.status == 200 else "NOT READY"
    click.echo(f"switchyard {admin.get('version', '?')} at {url}: healthy, {readiness}")
    worker = admin.get("worker_pid")
    shown = f" (worker {worker})" if worker is not None and worker != admin.get("pid") else ""
    click.echo(f"  pid {admin.get('pid', '?')}{shown}, up {_duration(float(admin.get('uptime_s', 0)))}, "
               f"{admin.get('in_flight', 0)} requests in flight")
    crash = admin.get("last_crash")
    if admin.get("restarts"):
        last = f"; last: {crash.get('description')}" if isinstance(crash, dict) else ""
        click.echo(f"  restarts: {admin['restarts']} (a worker died and was started again){last}")
    if ready.status != 200 and isinstance(ready.body, dict):
        for name, state in (ready.body.get("checks") or {}).items():
            if state != "ok":
                click.echo(f"  not ready: {name}: {state}")
    models = [str(m) for m in admin.get("models") or []]
    click.echo(f"models ({len(models)}): {', '.join(models) if models else '(no aliases configured)'}")
    click.echo("upstreams:")
    upstreams = admin.get("upstreams") or []
    if not upstreams:
        click.echo("  (none configured)")
    for up in upstreams:
        flags = [f for f, on in (("default", up.get("default")), ("prefix", up.get("prefix_routing"))) if on]
        head = f"  {up.get('name')}  {up.get('type')}  {up.get('base_url')}"
        head += f"  [{', '.join(flags)}]" if flags else ""
        if up.get("reachable"):
            click.echo(f"{head}  reachable, {len(up.get('models') or [])} models")
            if "running" in up:
                click.echo(f"      loaded: {_running(up)}")
        else:
            click.echo(f"{head}  UNREACHABLE: {up.get('error', 'no answer')}")
        for line in _breakers(up):
            click.echo(f"      {line}")
    recent = sorted(admin.get("recent_errors") or [], key=lambda e: str(e.get("at", "")), reverse=True)
    if not recent:
        click.echo("recent errors: none")
        return
    click.echo(f"recent errors (newest first, {min(errors, len(recent))} of {len(recent)}):")
    for err in recent[:errors]:
        at = str(err.get("at", ""))[:19].replace("T", " ")
        click.echo(f"  {at}  {err.get('status')}  {err.get('model')} via {err.get('provider')}  "
                   f"{err.get('message')}  [request {err.get('request_id')}]")


@dataclass(frozen=True)
class ServerTarget:
    """A running server as the CLI reaches it: its URL, the key to send (and where it came from)."""

    url: str
    key: str | None
    opener: urllib.request.OpenerDirector
    key_source: str | None  # "given", "local" (the data dir's token), "SWITCHYARD_API_KEY", or None
    token_file: Path | None  # the data dir's token file, looked for when no key was given
    token_problem: str | None = None  # why that file could not be used

    def refused(self, status: int) -> str:
        """Why the server answered 401 or 403 to this key, and what to do, in one sentence."""
        if status == 403:
            return "the key is not an admin key; pass an admin key with --api-key or SWITCHYARD_ADMIN_KEY"
        if self.key_source == "local":
            return (f"the local admin token in {self.token_file} was refused: the server at {self.url} is not the "
                    "one that wrote it (restart it, or pass --api-key or set SWITCHYARD_ADMIN_KEY)")
        if self.key is not None:
            return "the key was refused; pass an admin key with --api-key or set SWITCHYARD_ADMIN_KEY"
        where = f" ({self.token_problem})" if self.token_problem else ""
        return (f"no key was given, and no local admin token was found{where}: run this as the server's user with "
                "the server's --data-dir, or pass --api-key or set SWITCHYARD_ADMIN_KEY")


def _same_server(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def resolve_server(url: str | None, api_key: str | None, config_file: Path | None, data_dir: Path | None,
                   insecure: bool) -> ServerTarget:
    """The running server's URL, key and an opener for it. The URL: --url, else the settings'
    host and port when they are set, else the one the data dir's server wrote beside its local
    admin token, else the default address.
    The key: --api-key (or SWITCHYARD_ADMIN_KEY), else that token when the URL is its server's,
    else the first static key of the settings (SWITCHYARD_API_KEY). The CLI commands that talk to
    a running server (status, models, run) all find it this way."""
    settings: Settings | None
    try:
        settings = load_settings(config_file, data_dir=data_dir)
    except ConfigError as exc:
        if url is None or api_key is None:
            raise click.ClickException(f"configuration error:\n{exc}") from None
        settings = None
    local, problem, token_file = None, None, None
    if settings is not None and api_key is None:
        token_file = token_path(settings.data_dir)
        try:
            local = discover(settings.data_dir)
        except PermissionError:
            problem = f"{token_file} belongs to another user"
        except (OSError, ValueError) as exc:
            problem = f"cannot read {token_file}: {exc}"
        if local is None and problem is None:
            problem = f"no {token_file}: is the server running with this data dir?"
    own_cert = None
    if url is None:
        assert settings is not None
        if local is not None and not {"host", "port", "ssl_certfile"} & settings.model_fields_set:
            url, own_cert = local.url, local.certfile  # no address was asked for: the data dir's server
        else:
            url, own_cert = local_url(settings), settings.ssl_certfile
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("use an http:// or https:// URL", param_hint="--url")
    source: str | None = "given" if api_key else None
    if api_key is None and local is not None:
        if _same_server(local.url, url):
            api_key, source = local.token, "local" if local.token else None
        else:
            problem = f"{token_file} is for the server at {local.url}, not {url}"
    if api_key is None and settings is not None and settings.api_keys:
        api_key, source = settings.api_keys[0].get_secret_value(), "SWITCHYARD_API_KEY"
    return ServerTarget(url, api_key, _opener(url, own_cert, insecure), source, token_file, problem)


@click.command()
@click.option("--url", default=None, help="The server's base URL (default: the server running from the data dir, "
              "else the settings' host and port).")
@click.option("--api-key", default=None, envvar="SWITCHYARD_ADMIN_KEY", show_envvar=True,
              help="An admin key (default: the local admin token the server left in its data dir).")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="YAML config file (host, port, TLS, static keys).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Data directory.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for each answer.")
@click.option("--errors", "max_errors", type=int, default=10, show_default=True, help="Recent errors to show.")
@click.option("--insecure", is_flag=True, help="HTTPS: do not verify the server's certificate.")
@click.option("--json", "as_json", is_flag=True, help="Print /admin/status as JSON.")
def status(url: str | None, api_key: str | None, config_file: Path | None, data_dir: Path | None, timeout: float,
           max_errors: int, insecure: bool, as_json: bool) -> None:
    """Health, version, uptime, models, upstreams and recent errors of a running server.

    Exit status: 0 healthy and ready; 1 not running, unhealthy or not ready (an upstream or
    the store fails); 2 the server refused the key, or none was found (run as the server's user
    with its --data-dir, or give one with --api-key or SWITCHYARD_ADMIN_KEY).
    """
    target = resolve_server(url, api_key, config_file, data_dir, insecure)
    url, api_key, opener = target.url, target.key, target.opener

    try:
        health = _get(opener, url + "/health", None, timeout)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError):
            click.echo(f"cannot verify the TLS certificate of {url} ({reason}); check --url, or pass --insecure",
                       err=True)
        else:
            click.echo(f"switchyard is not running at {url} ({reason})", err=True)
        raise SystemExit(EXIT_DOWN) from None
    if health.status != 200 or not isinstance(health.body, dict) or health.body.get("status") != "healthy":
        click.echo(f"switchyard at {url} is unhealthy: GET /health answered {health.status}", err=True)
        raise SystemExit(EXIT_DOWN)
    try:
        ready = _get(opener, url + "/ready", None, timeout)
        admin = _get(opener, url + "/admin/status", api_key, timeout)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        click.echo(f"switchyard at {url} stopped answering ({getattr(exc, 'reason', exc)})", err=True)
        raise SystemExit(EXIT_DOWN) from None
    if admin.status in (401, 403):
        click.echo(f"switchyard {health.body.get('version', '?')} at {url}: healthy", err=True)
        click.echo(f"error: status details need an admin key: {target.refused(admin.status)}", err=True)
        raise SystemExit(EXIT_NEEDS_ADMIN)
    if admin.status != 200 or not isinstance(admin.body, dict):
        click.echo(f"switchyard at {url}: GET /admin/status answered {admin.status}", err=True)
        raise SystemExit(EXIT_DOWN)
    if as_json:
        click.echo(json.dumps(admin.body, indent=2))
    else:
        _print_status(url, ready, admin.body, max_errors)
    if ready.status != 200:
        raise SystemExit(EXIT_DOWN)
