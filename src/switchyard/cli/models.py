"""``switchyard models``: list, inspect, load and unload the models of a running server (over
HTTP, as ``switchyard status`` does), and pull models into an Ollama provider or from the
Hugging Face hub.

rich and huggingface_hub are imported inside the commands that use them.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from switchyard import __version__
from switchyard.cli.status import _duration, _get, _Reply, resolve_server
from switchyard.core.time import parse_duration
from switchyard.settings import ConfigError, ProviderConfig, Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.table import Table

__all__ = ["models"]

F = TypeVar("F", bound=Callable[..., Any])
KeepAlive = str | int | float | None

_HUB_NAME = r"[A-Za-z0-9_](?:[\w.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"(?:{_HUB_NAME}/)?{_HUB_NAME}", re.ASCII)
_NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)


# ------------------------------------------------------------------ talking to the server
@dataclass(frozen=True)
class _Server:
    url: str
    key: str | None
    opener: urllib.request.OpenerDirector
    timeout: float

    def call(self, method: str, path: str, body: dict[str, object] | None = None) -> dict[str, Any]:
        """One request; any failure becomes a one-line error (exit status 1)."""
        try:
            if method == "GET":
                reply = _get(self.opener, self.url + path, self.key, self.timeout)
            else:
                reply = self._send(method, path, body)
        except _NETWORK_ERRORS as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError):
                raise click.ClickException(
                    f"cannot verify the TLS certificate of {self.url} ({reason}); check --url, or pass --insecure"
                ) from None
            if isinstance(reason, TimeoutError):
                raise click.ClickException(f"switchyard at {self.url} did not answer within {self.timeout:g}s "
                                           "(see --timeout)") from None
            raise click.ClickException(f"switchyard is not running at {self.url} ({reason})") from None
        if reply.status >= 400 or not isinstance(reply.body, dict):
            raise click.ClickException(self._explain(method, path, reply))
        return reply.body

    def _send(self, method: str, path: str, body: dict[str, object] | None) -> _Reply:
        headers = {"Accept": "application/json", "User-Agent": f"switchyard-cli/{__version__}"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = b""
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, headers=headers,  # noqa: S310 - http(s) only
                                         method=method)
        try:
            with self.opener.open(request, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                status, raw = exc.code, exc.read()
        try:
            return _Reply(status, json.loads(raw))
        except ValueError:
            return _Reply(status, None)

    def _explain(self, method: str, path: str, reply: _Reply) -> str:
        error = reply.body.get("error") if isinstance(reply.body, dict) else None
        message = str(error.get("message")) if isinstance(error, dict) else None
        where = f"{method} {path} answered {reply.status}"
        if reply.status == 401:
            why = "no key was given" if not self.key else "the key was refused"
            return f"{where}: {why}; pass --api-key or set SWITCHYARD_API_KEY"
        if reply.status == 403:
            return f"{where}: {message or 'permission denied'} (loading and unloading models needs an admin key)"
        if reply.status < 400:
            return f"{where} with something that is not a JSON object"
        return f"{where}: {message}" if message else where


def _connect(url: str | None, api_key: str | None, config_file: Path | None, data_dir: Path | None,
             timeout: float, insecure: bool) -> _Server:
    """The server's URL and key, found as ``switchyard status`` finds them."""
    where, key, opener = resolve_server(url, api_key, config_file, data_dir, insecure)
    return _Server(where, key, opener, timeout)


def _server_options(timeout: float) -> Callable[[F], F]:
    def wrap(fn: F) -> F:
        options = [
            click.option("--url", default=None, help="The server's base URL (default: from the settings' host "
                         "and port)."),
            click.option("--api-key", default=None, help="A key (default: the first of SWITCHYARD_API_KEY)."),
            _config_option, _data_dir_option,
            click.option("--timeout", type=float, default=timeout, show_default=True,
                         help="Seconds to wait for the answer."),
            click.option("--insecure", is_flag=True, help="HTTPS: do not verify the server's certificate."),
            _json_option,
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return wrap


_config_option = click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
                              default=None, help="YAML config file.")
_data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                                help="Data directory.")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")


def _model_path(name: str, action: str) -> str:
    return f"/v1/models/{urllib.parse.quote(name, safe='/:@')}/{action}"


# ------------------------------------------------------------------ rendering
def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 160)  # piped or captured: never fold a model name
    return console


def _size(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    n = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _seconds(value: object, forever_below_zero: bool = False) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if value < 0 and forever_below_zero:
        return "forever"
    return _duration(max(float(value), 0.0))


def _when(value: object) -> str:
    """An ISO time or a Unix time, as local wall time to the second."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            return value
    return "-"


def _until(value: object) -> str:
    """Time left until an ISO time (Ollama's expires_at)."""
    if not isinstance(value, str) or not value:
        return "-"
    try:
        left = (datetime.fromisoformat(value) - datetime.now(UTC)).total_seconds()
    except (ValueError, TypeError):
        return value
    return "forever" if left > 5 * 365 * 86400 else _duration(max(left, 0.0))  # Ollama's keep_alive -1


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2))


# ------------------------------------------------------------------ the commands
@click.group()
def models() -> None:
    """List, inspect, load, unload and pull models.

    list, ps, load and unload ask a running server (--url, or the settings' host and port; key
    from --api-key or SWITCHYARD_API_KEY; load and unload need an admin key). pull talks to an
    Ollama provider of the config directly, or downloads from the Hugging Face hub.

    Exit status: 0 done; 1 the server, the provider or the hub refused or could not be reached.
    """


@models.command("list")
@_server_options(timeout=10.0)
def list_models(url: str | None, api_key: str | None, config_file: Path | None, data_dir: Path | None,
                timeout: float, insecure: bool, as_json: bool) -> None:
    """The models the key may use (GET /v1/models)."""
    body = _connect(url, api_key, config_file, data_dir, timeout, insecure).call("GET", "/v1/models")
    data = [m for m in body.get("data") or [] if isinstance(m, dict)]
    if as_json:
        _print_json(data)
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("MODEL", "OWNED BY", "CONTEXT", "FEATURES"):
        table.add_column(column, no_wrap=column == "MODEL")
    for model in data:
        raw_caps = model.get("capabilities")
        caps: dict[str, Any] = raw_caps if isinstance(raw_caps, dict) else {}
        features = [f for f in ("tools", "vision", "embeddings", "streaming") if caps.get(f)]
        context = caps.get("context_length")
        table.add_row(str(model.get("id")), str(model.get("owned_by", "-")), str(context) if context else "-",
                      ", ".join(features) or "-")
    console = _console()
    if data:
        console.print(table)
    else:
        console.print("no models (none configured, or none this key may use)")


@models.command("ps")
@_server_options(timeout=10.0)
@click.option("--all", "show_all", is_flag=True, help="Also list the models that are not loaded.")
def ps(url: str | None, api_key: str | None, config_file: Path | None, data_dir: Path | None,
       timeout: float, insecure: bool, as_json: bool, show_all: bool) -> None:
    """The models in memory, their memory and keep-alive, and the memory budget (GET /v1/status)."""
    body = _connect(url, api_key, config_file, data_dir, timeout, insecure).call("GET", "/v1/status")
    if as_json:
        _print_json(body)
        return
    console = _console()
    local = [m for m in body.get("models") or [] if isinstance(m, dict)]
    shown = [m for m in local if show_all or m.get("state") != "unloaded"]
    upstream = [m for m in body.get("upstream_models") or [] if isinstance(m, dict)]
    budget = body.get("memory_budget_bytes")
    if local or (isinstance(budget, int) and budget > 0):
        loaded = sum(1 for m in local if m.get("state") == "loaded")
        limit = body.get("max_loaded_models")
        console.print(f"memory: {_size(body.get('memory_used_bytes'))} used of {_size(budget)}"
                      f" ({_size(body.get('memory_free_bytes'))} free); {loaded} loaded"
                      + (f" (at most {limit})" if limit else ""))
    if shown:
        console.print(_local_table(shown))
    if upstream:
        console.print(_upstream_table(upstream))
    if not shown and not upstream:
        console.print("no models loaded" + (" (--all lists the others)" if local and not show_all else ""))


def _local_table(models: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("MODEL", "ENGINE", "STATE", "MEMORY", "PINNED", "ACTIVE", "QUEUED", "KEEP ALIVE",
                   "UNLOADS IN", "LAST USED"):
        table.add_column(column, no_wrap=column == "MODEL")
    for m in models:
        table.add_row(str(m.get("id")), str(m.get("engine") or "-"), str(m.get("state") or "-"),
                      _size(m.get("memory_bytes")), "yes" if m.get("pinned") else "no",
                      str(m.get("active", 0)), str(m.get("queued", 0)),
                      _seconds(m.get("keep_alive_seconds"), forever_below_zero=True),
                      _seconds(m.get("expires_in_seconds")), _when(m.get("last_used_at")))
    return table


def _upstream_table(models: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False, title="in upstream memory", title_justify="left")
    for column in ("MODEL", "PROVIDER", "UPSTREAM MODEL", "SIZE", "VRAM", "UNLOADS IN"):
        table.add_column(column, no_wrap=column in ("MODEL", "UPSTREAM MODEL"))
    for m in models:
        if m.get("error"):  # an upstream that did not say what it holds
            table.add_row("-", str(m.get("provider") or "-"), f"({m['error']})", "-", "-", "-")
            continue
        table.add_row(str(m.get("id")), str(m.get("provider") or "-"), str(m.get("upstream_model") or "-"),
                      _size(m.get("memory_bytes")), _size(m.get("vram_bytes")), _until(m.get("expires_at")))
    return table


def _keep_alive(ctx: click.Context, param: click.Parameter, value: str | None) -> KeepAlive:
    """Seconds (``600``, ``-1`` for ever) or a duration (``10m``, ``1.5h``)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return int(value)
    except ValueError:
        pass
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        parse_duration(value)
    except ValueError:
        pass
    else:
        return value
    raise click.BadParameter(f"{value!r}: use seconds (600; -1 keeps it loaded) or a duration such as 10m or 1.5h")


@models.command()
@click.argument("name")
@click.option("--keep-alive", callback=_keep_alive, default=None,
              help="How long it stays loaded when idle: seconds (-1: until unloaded) or a duration (10m, 2h).")
@_server_options(timeout=600.0)
def load(name: str, keep_alive: KeepAlive, url: str | None, api_key: str | None, config_file: Path | None,
         data_dir: Path | None, timeout: float, insecure: bool, as_json: bool) -> None:
    """Load model NAME into memory now (POST /v1/models/NAME/load; an admin key)."""
    server = _connect(url, api_key, config_file, data_dir, timeout, insecure)
    body: dict[str, object] | None = None if keep_alive is None else {"keep_alive": keep_alive}
    started = time.monotonic()
    with _console(stderr=True).status(f"loading {name}…", spinner="dots"):
        reply = server.call("POST", _model_path(name, "load"), body)
    if as_json:
        _print_json(reply)
        return
    seconds = reply.get("load_seconds")
    took = float(seconds) if isinstance(seconds, int | float) else time.monotonic() - started
    memory = reply.get("memory_bytes")
    extra = f", {_size(memory)} of memory" if isinstance(memory, int) else ""
    click.echo(f"loaded {reply.get('id', name)} in {took:.1f}s{extra}")


@models.command()
@click.argument("name")
@_server_options(timeout=60.0)
def unload(name: str, url: str | None, api_key: str | None, config_file: Path | None, data_dir: Path | None,
           timeout: float, insecure: bool, as_json: bool) -> None:
    """Free the memory model NAME holds (POST /v1/models/NAME/unload; an admin key)."""
    reply = _connect(url, api_key, config_file, data_dir, timeout, insecure).call(
        "POST", _model_path(name, "unload"))
    if as_json:
        _print_json(reply)
    else:
        click.echo(f"unloaded {reply.get('id', name)}")


# ------------------------------------------------------------------ pull
@models.command()
@click.argument("name")
@click.option("--provider", default=None, help="The Ollama provider to pull into (default: the first in the config).")
@click.option("--hub", is_flag=True, help="Download NAME (a repo id) from the Hugging Face hub into DATA_DIR/models.")
@_config_option
@_data_dir_option
@click.option("--database-url", default=None, help="The store (only for a provider whose key is in the vault).")
@click.option("--json", "as_json", is_flag=True, help="Print each progress object as a JSON line.")
def pull(name: str, provider: str | None, hub: bool, config_file: Path | None, data_dir: Path | None,
         database_url: str | None, as_json: bool) -> None:
    """Download model NAME: into an Ollama provider of the config (its /api/pull), or with --hub
    (or when no Ollama provider is configured) from the Hugging Face hub."""
    if hub and provider:
        raise click.UsageError("--hub and --provider exclude each other")
    overrides: dict[str, object] = {"data_dir": data_dir}
    if database_url:
        overrides["database_url"] = database_url
    try:
        settings = load_settings(config_file, **overrides)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error:\n{exc}") from None
    ollama = {n: c for n, c in settings.providers.items() if c.type == "ollama" and c.enabled}
    if provider is not None:
        cfg = settings.providers.get(provider)
        if cfg is None or cfg.type != "ollama" or not cfg.enabled:
            known = ", ".join(ollama) or "none"
            raise click.ClickException(f"no enabled Ollama provider named {provider!r} (Ollama providers: {known})")
        _pull_ollama(settings, provider, cfg, name, as_json)
    elif ollama and not hub:
        first = next(iter(ollama))
        _pull_ollama(settings, first, ollama[first], name, as_json)
    else:
        _pull_hub(settings, name, as_json)


def _ollama_key(settings: Settings, provider: str, cfg: ProviderConfig) -> str | None:
    if cfg.credential is None:
        try:
            return settings.resolve_secret(cfg.api_key)
        except ConfigError as exc:
            raise click.ClickException(f"provider {provider!r}: {exc}") from None
    from switchyard.admin.vault import VaultError
    from switchyard.cli.store_options import run_with_runtime
    from switchyard.errors import GatewayError

    credential = cfg.credential
    try:
        _, secret = run_with_runtime(settings, lambda rt: rt.vault.decrypt(credential))
    except (VaultError, GatewayError) as exc:
        raise click.ClickException(f"provider {provider!r}: its credential {credential!r}: {exc}") from None
    return secret


def _pull_ollama(settings: Settings, provider: str, cfg: ProviderConfig, name: str, as_json: bool) -> None:
    from switchyard.core.models import UpstreamSpec
    from switchyard.errors import GatewayError
    from switchyard.providers.ollama.client import OllamaProvider
    from switchyard.service.routing import display_url

    spec = UpstreamSpec(name=provider, type="ollama", base_url=cfg.base_url,
                        api_key=_ollama_key(settings, provider, cfg), timeout=cfg.timeout)
    show = _Progress(as_json)

    async def run() -> None:
        client = OllamaProvider(spec)
        try:
            async for line in client.pull(name):
                show.update(line)
        finally:
            await client.aclose()

    try:
        with show:
            asyncio.run(run())
    except GatewayError as exc:
        raise click.ClickException(
            f"cannot pull {name} into {provider} ({display_url(cfg.base_url)}): {exc.message}") from None
    if not as_json:
        click.echo(f"pulled {name} into {provider} ({display_url(cfg.base_url)})")


class _Progress:
    """Ollama's pull progress on stderr: a rich bar per layer (by digest), a line per other status,
    in the order they come (the bars of a stage end before the next status line). With --json,
    each progress object as a JSON line on stdout instead."""

    def __init__(self, as_json: bool) -> None:
        self._json = as_json
        self._console = None if as_json else _console(stderr=True)
        self._bars: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_bars()

    def _end_bars(self) -> None:
        if self._bars is not None:
            self._bars.stop()  # the bars stay, in their last state
            self._bars = None
            self._tasks.clear()

    def _start_bars(self) -> Progress:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=self._console)
        bars.start()
        return bars

    def update(self, line: dict[str, object]) -> None:
        if self._console is None:
            click.echo(json.dumps(line))
            return
        status, digest = str(line.get("status", "")), line.get("digest")
        if not isinstance(digest, str) or not digest:
            self._end_bars()
            self._console.print(status)
            return
        if self._bars is None:
            self._bars = self._start_bars()
        task = self._tasks.get(digest)
        if task is None:
            task = self._tasks[digest] = self._bars.add_task(status, total=None)
        total, completed = line.get("total"), line.get("completed", 0)
        self._bars.update(task, total=float(total) if isinstance(total, int | float) else None,
                          completed=float(completed) if isinstance(completed, int | float) else 0.0)


def _pull_hub(settings: Settings, repo: str, as_json: bool) -> None:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise click.ClickException("no Ollama provider is configured, and downloading from the Hugging Face hub "
                                   "needs huggingface_hub (pip install huggingface_hub)") from None
    if not _REPO_ID.fullmatch(repo) or ".." in repo or "--" in repo:
        raise click.ClickException(f"{repo!r} is not a Hugging Face repo id (owner/name, or name)")
    root = Path(settings.data_dir) / "models"
    target = root / repo
    why: str | None = None
    try:
        path = snapshot_download(repo_id=repo, local_dir=target)
    except LocalEntryNotFoundError:
        why = "the hub cannot be reached (or HF_HUB_OFFLINE is set) and it has not been downloaded before"
    except GatedRepoError:
        why = "the repository is gated: accept its terms on the hub and set HF_TOKEN"
    except RepositoryNotFoundError:
        why = "no such repository on the hub (or it is private: set HF_TOKEN)"
    except RevisionNotFoundError:
        why = "no such revision on the hub"
    except (HfHubHTTPError, OSError, ValueError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if why is not None:
        _remove_empty(target, root)
        raise click.ClickException(f"cannot download {repo} from the Hugging Face hub: {why}")
    if as_json:
        _print_json({"repo": repo, "path": str(path)})
    else:
        click.echo(f"downloaded {repo} to {path}")


def _remove_empty(path: Path, root: Path) -> None:
    """Take back the empty folders a failed download left, up to and including ``root``."""
    for folder in [path, *path.parents]:
        if not folder.is_relative_to(root.parent) or folder == root.parent:
            break
        try:
            folder.rmdir()  # only if empty
        except OSError:
            break
