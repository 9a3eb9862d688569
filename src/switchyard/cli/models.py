"""``switchyard models``: list, inspect, load and unload the models of a running server (over
HTTP, as ``switchyard status`` does); ``pull`` (in :mod:`switchyard.cli.pull`) downloads them.

rich is imported inside the commands that use it.
"""

from __future__ import annotations

import math
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from switchyard.cli.pull import pull
from switchyard.cli.server_client import connect, console, print_json, server_options
from switchyard.cli.status import _duration
from switchyard.core.time import parse_duration

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["models"]

KeepAlive = str | int | float | None



def _model_path(name: str, action: str) -> str:
    return f"/v1/models/{urllib.parse.quote(name, safe='/:@')}/{action}"


# ------------------------------------------------------------------ rendering
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


# ------------------------------------------------------------------ the commands
@click.group()
def models() -> None:
    """List, inspect, load, unload and pull models.

    list, ps, load and unload ask a running server: the one running from the data dir (it
    leaves its address and a local admin token there, readable by its user only), or --url.
    The key: --api-key or SWITCHYARD_ADMIN_KEY, else that token. pull talks to an Ollama
    provider of the config directly, or downloads from the Hugging Face hub.

    Exit status: 0 done; 1 the server, the provider or the hub refused or could not be reached.
    """


@models.command("list")
@server_options(timeout=10.0)
def list_models(url: str | None, api_key: str | None, config_file: Path | None, data_dir: Path | None,
                timeout: float, insecure: bool, as_json: bool) -> None:
    """The models the key may use (GET /v1/models)."""
    body = connect(url, api_key, config_file, data_dir, timeout, insecure).call("GET", "/v1/models")
    data = [m for m in body.get("data") or [] if isinstance(m, dict)]
    if as_json:
        print_json(data)
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
    out = console()
    if data:
        out.print(table)
    else:
        out.print("no models (none configured, or none this key may use)")


@models.command("ps")
@server_options(timeout=10.0)
@click.option("--all", "show_all", is_flag=True, help="Also list the models that are not loaded.")
def ps(url: str | None, api_key: str | None, config_file: Path | None, data_dir: Path | None,
       timeout: float, insecure: bool, as_json: bool, show_all: bool) -> None:
    """The models in memory, their memory and keep-alive, and the memory budget (GET /v1/status)."""
    body = connect(url, api_key, config_file, data_dir, timeout, insecure).call("GET", "/v1/status")
    if as_json:
        print_json(body)
        return
    out = console()
    local = [m for m in body.get("models") or [] if isinstance(m, dict)]
    shown = [m for m in local if show_all or m.get("state") != "unloaded"]
    upstream = [m for m in body.get("upstream_models") or [] if isinstance(m, dict)]
    budget = body.get("memory_budget_bytes")
    if local or (isinstance(budget, int) and budget > 0):
        loaded = sum(1 for m in local if m.get("state") == "loaded")
        limit = body.get("max_loaded_models")
        out.print(f"memory: {_size(body.get('memory_used_bytes'))} used of {_size(budget)}"
                      f" ({_size(body.get('memory_free_bytes'))} free); {loaded} loaded"
                      + (f" (at most {limit})" if limit else ""))
    if shown:
        out.print(_local_table(shown))
    if upstream:
        out.print(_upstream_table(upstream))
    if not shown and not upstream:
        out.print("no models loaded" + (" (--all lists the others)" if local and not show_all else ""))


def _local_table(models: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("MODEL", "ENGINE", "STATE", "MEMORY", "PINNED", "ACTIVE", "QUEUED", "SLOTS", "PREFIX HITS",
                   "KEEP ALIVE", "UNLOADS IN", "LAST USED"):
        table.add_column(column, no_wrap=column == "MODEL")
    for m in models:
        table.add_row(str(m.get("id")), str(m.get("engine") or "-"), str(m.get("state") or "-"),
                      _size(m.get("memory_bytes")), "yes" if m.get("pinned") else "no",
                      str(m.get("active", 0)), str(m.get("queued", 0)), _slots(m), _hits(m),
                      _seconds(m.get("keep_alive_seconds"), forever_below_zero=True),
                      _seconds(m.get("expires_in_seconds")), _when(m.get("last_used_at")))
    return table


def _slots(model: dict[str, Any]) -> str:
    """Busy of all slots (GGUF models), else -."""
    slots = model.get("slots")
    return f"{model.get('slots_busy', 0)}/{slots}" if isinstance(slots, int) else "-"


def _hits(model: dict[str, Any]) -> str:
    """The prefix cache's hit ratio over its requests (GGUF models), else -."""
    ratio, requests = model.get("prefix_hit_ratio"), model.get("requests")
    if not isinstance(ratio, int | float) or not isinstance(requests, int):
        return "-"
    return f"{ratio:.0%} of {requests}"


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
@server_options(timeout=600.0)
def load(name: str, keep_alive: KeepAlive, url: str | None, api_key: str | None, config_file: Path | None,
         data_dir: Path | None, timeout: float, insecure: bool, as_json: bool) -> None:
    """Load model NAME into memory now (POST /v1/models/NAME/load; an admin key)."""
    server = connect(url, api_key, config_file, data_dir, timeout, insecure)
    body: dict[str, object] | None = None if keep_alive is None else {"keep_alive": keep_alive}
    started = time.monotonic()
    with console(stderr=True).status(f"loading {name}…", spinner="dots"):
        reply = server.call("POST", _model_path(name, "load"), body)
    if as_json:
        print_json(reply)
        return
    seconds = reply.get("load_seconds")
    took = float(seconds) if isinstance(seconds, int | float) else time.monotonic() - started
    memory = reply.get("memory_bytes")
    extra = f", {_size(memory)} of memory" if isinstance(memory, int) else ""
    click.echo(f"loaded {reply.get('id', name)} in {took:.1f}s{extra}")


@models.command()
@click.argument("name")
@server_options(timeout=60.0)
def unload(name: str, url: str | None, api_key: str | None, config_file: Path | None, data_dir: Path | None,
           timeout: float, insecure: bool, as_json: bool) -> None:
    """Free the memory model NAME holds (POST /v1/models/NAME/unload; an admin key)."""
    reply = connect(url, api_key, config_file, data_dir, timeout, insecure).call(
        "POST", _model_path(name, "unload"))
    if as_json:
        print_json(reply)
    else:
        click.echo(f"unloaded {reply.get('id', name)}")


models.add_command(pull)
