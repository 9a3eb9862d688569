"""``switchyard serve``: take the data dir's pid file, prepare the store, print a first admin
key once, say which models it serves, then supervise the workers that serve (``supervisor.py``)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from switchyard.cli import local_admin
from switchyard.cli.banner import log_models
from switchyard.cli.pid_file import PidFile, ServerRunningError
from switchyard.cli.store_options import load, run_with_runtime
from switchyard.core.keys import NewKey
from switchyard.observability.logging import configure_logging, json_logs
from switchyard.runtime import Runtime, check_credentials
from switchyard.settings import ConfigError, Settings

__all__ = ["serve"]

F = TypeVar("F", bound=Callable[..., Any])
SYSTEM_ACTOR = "system"  # the audit log's actor for what the server does by itself


def _flag(name: str, type_: Any = None, default: str | None = None) -> Callable[[F], F]:
    """A ``serve`` option for the Settings field ``name``: its help and default come from the
    field (one source for both), and an unset flag leaves the field to the other sources.
    ``default``: the text for a default computed at run time (a factory is never called here:
    importing this module reads no environment)."""
    field = Settings.model_fields[name]
    if default is None and field.default_factory is None and field.default is not None:
        default = str(field.default)
    shown = f" [default: {default}]" if default is not None else ""
    return click.option(f"--{name.replace('_', '-')}", name, type=type_, default=None,
                        help=f"{field.description}{shown}")


@click.command()
@_flag("host")
@_flag("port", int)
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="YAML config file (models, providers, settings).")
@_flag("data_dir", click.Path(path_type=Path), "$XDG_DATA_HOME/switchyard, else ~/.local/share/switchyard")
@_flag("workers", int)
@click.option("--api-key", "api_keys", multiple=True,
              help=f"{Settings.model_fields['api_keys'].description} Repeatable.")
@click.option("--no-auth", is_flag=True, default=False, help="Serve without keys (loopback addresses only).")
@_flag("database_url")
@_flag("drain_timeout", float)
@_flag("ssl_certfile", click.Path(path_type=Path, dir_okay=False, exists=True))
@_flag("ssl_keyfile", click.Path(path_type=Path, dir_okay=False, exists=True))
@_flag("forwarded_allow_ips", default="127.0.0.1")
@_flag("memory_budget")
@_flag("max_loaded_models", int)
@_flag("log_level")
@click.option("--log-json/--log-text", "log_json", default=None,
              help=Settings.model_fields["log_json"].description)
def serve(
    host: str | None,
    port: int | None,
    config_file: Path | None,
    data_dir: Path | None,
    workers: int | None,
    api_keys: tuple[str, ...],
    no_auth: bool,
    database_url: str | None,
    drain_timeout: float | None,
    ssl_certfile: Path | None,
    ssl_keyfile: Path | None,
    forwarded_allow_ips: str | None,
    memory_budget: str | None,
    max_loaded_models: int | None,
    log_level: str | None,
    log_json: bool | None,
) -> None:
    """Run the gateway (OpenAI API under /v1)."""
    settings = load(
        config_file, host=host, port=port, data_dir=data_dir, workers=workers,
        api_keys=list(api_keys) or None, auth=False if no_auth else None,
        database_url=database_url, drain_timeout=drain_timeout, log_level=log_level,
        ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, forwarded_allow_ips=forwarded_allow_ips,
        memory_budget=memory_budget, max_loaded_models=max_loaded_models, log_json=log_json,
    )
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise click.UsageError("--ssl-certfile and --ssl-keyfile go together")
    if not settings.auth and not settings.is_loopback:
        raise click.UsageError(
            f"refusing to bind {settings.host} with authentication off: anyone who can reach it could use "
            "every model. Bind 127.0.0.1, or drop --no-auth and use API keys."
        )
    from switchyard.app import create_app  # here, so other commands don't load the server

    try:
        create_app(settings)  # no I/O: checks routing, credentials and optional extras up front
    except ConfigError as exc:
        raise click.ClickException(f"configuration error:\n{exc}") from None
    settings = settings.model_copy(update={"log_json": json_logs(settings.log_json)})  # workers log alike
    pid_file = PidFile(settings.pid_file)
    try:  # before anything is printed, created or bound
        pid_file.acquire(_address(settings))
    except ServerRunningError as exc:
        raise click.ClickException(
            f"{exc}. Stop it first (switchyard stop --data-dir {settings.data_dir}), or serve from another "
            "--data-dir."
        ) from None
    except OSError as exc:
        raise click.ClickException(f"cannot take the pid file {settings.pid_file}: {exc.strerror}; serve needs "
                                   "to write in its data dir (--data-dir)") from None
    try:
        _serve(settings)
    finally:
        pid_file.release()


def _address(settings: Settings) -> str:
    scheme = "https" if settings.ssl_certfile else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{scheme}://{host}:{settings.port}"


def _serve(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_json)

    async def prepare(runtime: Runtime) -> tuple[NewKey | None, list[str]]:
        await check_credentials(settings, runtime.vault)
        created = await runtime.keys.ensure_admin() if settings.auth else None
        if created is not None:  # written when the runtime closes, like the CLI's entries
            runtime.audit.record(SYSTEM_ACTOR, "key.create", "api_key", created.key.id,
                                 {"name": created.key.name, "admin": True, "reason": "first start"})
        stored = [m.alias for m in await runtime.models.list() if m.active]
        return created, stored

    try:
        created, stored = run_with_runtime(settings, prepare)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error:\n{exc}") from None
    if created is not None:
        click.echo(
            "Created the first admin key. It is shown once; only its hash is stored:\n\n"
            f"    {created.secret}\n\n"
            "Use it as the API key (Authorization: Bearer ...). Create more with 'switchyard keys create'.\n",
        )
    if not settings.auth:
        click.echo("warning: authentication is off (loopback only)", err=True)
    log_models(settings, stored)
    _run(settings)


def supervised(settings: Settings) -> bool:
    """Whether ``serve`` runs its app in workers under a supervisor: with several workers, or
    when it serves local models, whose native code (llama.cpp, torch) could crash the process; a
    supervisor then reports the crash and starts a fresh worker. A gateway of upstreams only runs
    in one process, which costs less memory and CPU (docs/local-models.md)."""
    from switchyard.service.routing import local_models

    return settings.workers > 1 or bool(local_models(settings))


def _exit_cleanly(signum: int, frame: object) -> None:
    """uvicorn re-raises the signal it drained on; after a clean drain that means exit 0."""
    sys.exit(0)


def _run(settings: Settings) -> None:
    from switchyard.app import worker_share
    from switchyard.cli.supervisor import supervise

    common = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "ws": "none",  # no WebSocket routes: the websockets library is never imported
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "server_header": False,
        "timeout_graceful_shutdown": settings.drain_timeout,
        "timeout_keep_alive": 30,
        "proxy_headers": True,
        "forwarded_allow_ips": ",".join(settings.forwarded_allow_ips),
        "ssl_certfile": str(settings.ssl_certfile) if settings.ssl_certfile else None,
        "ssl_keyfile": str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
    }
    click.echo(f"Switchyard listening on {_address(settings)}/v1", err=True)
    with local_admin.issued(settings) as settings:
        if not supervised(settings):  # no native model code here: one process, as lean as it gets
            import uvicorn

            from switchyard.app import create_app

            config = uvicorn.Config(create_app(settings), **common)  # type: ignore[arg-type]
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, _exit_cleanly)
            uvicorn.Server(config).run()
            return
        # This process supervises the workers (one unless --workers N), keeps the pid file's lock
        # and the listening socket, and starts a worker again when one dies (cli/supervisor.py).
        try:
            with worker_share(settings) as share:  # with several workers and no Redis: their limits
                settings.export_for_workers()
                status = supervise("switchyard.app:worker_app", share, settings.workers, **common)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    if status:
        raise click.ClickException("a worker failed to start (the log above says why)")
