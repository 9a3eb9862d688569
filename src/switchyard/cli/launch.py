"""``switchyard launch claude|codex|opencode|aider``: start a coding agent pointed at a running
server, on one model, with a key scoped to that model (as ``ollama launch`` does).

The server and the admin key are found as ``switchyard run`` finds them (the data dir's local
admin token, or --url and --api-key / SWITCHYARD_URL and SWITCHYARD_ADMIN_KEY). The model
is checked against ``GET /v1/models``; the key is made or reused by
:mod:`switchyard.cli.launch_keys`; what each client is given comes from
:mod:`switchyard.cli.launch_clients`. The client runs as a child with the terminal: its exit
status is launch's, the signals sent to launch reach it, and its temporary config files are
removed when it exits.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Any

import click

from switchyard.cli.launch_clients import CLIENTS, Plan, plan_for
from switchyard.cli.launch_keys import LaunchKey, key_name, keys_file, lookup, make, masked
from switchyard.cli.server_client import NETWORK_ERRORS, ServerClient, connect, server_options
from switchyard.cli.status import _get

__all__ = ["launch"]

NO_AUTH_KEY = "switchyard"  # what a client is given when the server asks for no key
NO_KEY_ID = "-"
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _say(text: str) -> None:
    click.echo(f"switchyard launch: {text}", err=True)


def _capabilities(model: dict[str, Any]) -> dict[str, Any]:
    caps = model.get("capabilities")
    return caps if isinstance(caps, dict) else {}


def _is_chat(model: dict[str, Any]) -> bool:
    caps = _capabilities(model)
    return bool(caps.get("chat", not caps.get("embeddings", False)))


def _server_default(client: ServerClient) -> str | None:
    """The model the server answers when a request names none (``GET /admin/models``), if any."""
    try:
        reply = _get(client.target.opener, client.url + "/admin/models", client.target.key, client.timeout)
    except NETWORK_ERRORS:
        return None
    default = reply.body.get("default") if reply.status == 200 and isinstance(reply.body, dict) else None
    return default if isinstance(default, str) else None


def _pick(client: ServerClient, models: list[dict[str, Any]], wanted: str | None) -> tuple[dict[str, Any], str]:
    """The model to launch on, and why it was picked."""
    by_id = {str(m.get("id")): m for m in models}
    if wanted is not None:
        model = by_id.get(wanted)
        if model is None:
            names = ", ".join(by_id) or "none"
            raise click.ClickException(f"model {wanted!r} is not served at {client.url} (or the key may not use "
                                       f"it); its models: {names}")
        if not _is_chat(model):
            raise click.ClickException(f"model {wanted!r} is an embedding model; a coding agent needs a chat model")
        return model, "--model"
    chat = [m for m in models if _is_chat(m)]
    if not chat:
        raise click.ClickException(f"the server at {client.url} has no chat model to launch on")
    default = _server_default(client)
    if default is not None and default in by_id and _is_chat(by_id[default]):
        return by_id[default], "the server's default model; pick another with --model"
    return chat[0], "the first chat model; pick another with --model"


def _key(client: ServerClient, name: str, alias: str, dry_run: bool) -> LaunchKey | None:
    """The key the client gets: a stored one that still works, else a new one (None in a dry
    run that would make one)."""
    key, why = lookup(client, name, alias)
    if why is not None:
        _say(f"not using the stored key {name} again: {why}")
    if key is not None or dry_run:
        return key
    return make(client, name, alias)


def _shell(plan: Plan, shown_key: str) -> str:
    """The launch as a shell would run it, the key masked."""
    lines = [f"unset {name}" for name in plan.unset]
    for name, value in plan.env.items():
        lines.append(f"export {name}={shlex.quote(shown_key if name in plan.secret_vars else value)}")
    for path, text in plan.files.items():
        lines.append(f"cat > {shlex.quote(str(path))} <<'EOF'\n{text.rstrip()}\nEOF")
    lines.append(shlex.join(plan.argv))
    return "\n".join(lines)


def _in_terminal_foreground() -> bool:
    """True when a signal from the terminal (Ctrl-C, Ctrl-\\) reaches the client without us."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def _run(plan: Plan, binary: str) -> int:
    """Run the client to its end with its files in a private temporary dir; its exit status."""
    env = {k: v for k, v in os.environ.items() if k not in plan.unset}
    env.update(plan.env)
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGINT, signal.SIGQUIT) and _in_terminal_foreground():
            return  # the terminal sent it to the client's process group too
        for proc in child:
            with suppress(ProcessLookupError):
                proc.send_signal(signum)

    # handlers, not SIG_IGN: the client starts with the default dispositions
    previous = {s: signal.signal(s, forward) for s in _FORWARDED}
    try:
        for path, text in plan.files.items():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
        try:
            child.append(subprocess.Popen([binary, *plan.argv[1:]], env=env))  # noqa: S603 - the user's client
        except OSError as exc:
            raise click.ClickException(f"cannot start {binary}: {exc}") from None
        code = child[0].wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("client_name", metavar="CLIENT", type=click.Choice(list(CLIENTS)))
@click.argument("client_args", metavar="[-- CLIENT ARGS]", nargs=-1, type=click.UNPROCESSED)
@click.option("--model", "wanted", default=None, metavar="ALIAS",
              help="The model (default: the server's default model, else its first chat model).")
@click.option("--dry-run", "--print-env", "dry_run", is_flag=True,
              help="Print the environment, config files and command (the key masked), and run nothing.")
@server_options(timeout=30.0, with_json=False)
def launch(client_name: str, client_args: tuple[str, ...], wanted: str | None, dry_run: bool, url: str | None,
           api_key: str | None, config_file: Path | None, data_dir: Path | None, timeout: float,
           insecure: bool) -> None:
    """Start a coding agent on a model of a running server: claude (Claude Code), codex
    (Codex CLI), opencode or aider.

    The agent gets a key scoped to that one model, named launch-CLIENT-MODEL. It is made
    with the admin API the first time, its secret kept in launch-keys.json in your config
    dir (mode 0600), and used again while the server still holds it active; nothing is
    revoked. Arguments after -- go to the agent, e.g. switchyard launch claude -- -p "hi".

    The server and the admin key: as for switchyard run (the server running from the data
    dir and its local admin token, or --url and --api-key / SWITCHYARD_URL and
    SWITCHYARD_ADMIN_KEY).

    Exit status: the agent's; 1 when it is not installed, the model is not on the server,
    or the server cannot be reached or refuses the key.
    """
    spec = CLIENTS[client_name]
    binary = shutil.which(spec.binary)
    if binary is None and not dry_run:
        raise click.ClickException(f"{spec.title} is not installed ({spec.binary!r} is not on PATH). "
                                   f"Install it with: {spec.install}")
    client = connect(url, api_key, config_file, data_dir, timeout, insecure)
    models = [m for m in client.call("GET", "/v1/models").get("data") or [] if isinstance(m, dict)]
    model, why = _pick(client, models, wanted)
    alias = str(model["id"])
    context = _capabilities(model).get("context_length")
    name = key_name(client_name, alias)
    if client.target.key is None:  # the server answered without one: it runs without authentication
        key: LaunchKey | None = LaunchKey(NO_KEY_ID, name, NO_AUTH_KEY, reused=True)
        said = "no key (the server runs without authentication)"
    else:
        key = _key(client, name, alias, dry_run)
        said = (f"key {name} ({key.id}, {'reused' if key.reused else 'made now'}, scoped to {alias})"
                if key is not None else f"a new key {name} scoped to {alias} (not made: --dry-run)")
    _say(f"{spec.title} on {alias} ({why}) at {client.url}, with {said}")
    if key is not None and not key.reused:
        _say(f"its secret is kept in {keys_file()} for the next launch")
    if dry_run:
        plan = plan_for(client_name, client.url, alias, key.secret if key else "", list(client_args),
                        Path("<temporary dir>"), context if isinstance(context, int) else None)
        shown = "<new key>" if key is None else NO_AUTH_KEY if key.id == NO_KEY_ID else masked(key.secret)
        if binary is None:
            _say(f"{spec.title} is not installed ({spec.install})")
        click.echo(_shell(plan, shown))
        return
    assert key is not None and binary is not None
    config_dir = Path(tempfile.mkdtemp(prefix=f"switchyard-launch-{client_name}-"))
    try:
        plan = plan_for(client_name, client.url, alias, key.secret, list(client_args), config_dir,
                        context if isinstance(context, int) else None)
        code = _run(plan, binary)
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)
    raise SystemExit(code)
