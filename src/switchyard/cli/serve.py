"""``switchyard serve``: prepare the store, print a first admin key once, run uvicorn."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from switchyard.cli.common import load, run_with_runtime
from switchyard.core.keys import NewKey
from switchyard.observability.logging import configure_logging
from switchyard.runtime import Runtime
from switchyard.service.routing import RoutingTable
from switchyard.settings import ConfigError

__all__ = ["serve"]


@click.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080).")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="YAML config file (models, providers, settings).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="SQLite file and server secret (default ~/.local/share/switchyard).")
@click.option("--workers", type=int, default=None, help="Worker processes (default 1).")
@click.option("--api-key", "api_keys", multiple=True, help="A static key (repeatable; also SWITCHYARD_API_KEY).")
@click.option("--no-auth", is_flag=True, default=False, help="Serve without keys (loopback addresses only).")
@click.option("--database-url", default=None, help="SQLAlchemy URL, e.g. postgresql+asyncpg://user@host/db.")
@click.option("--drain-timeout", type=float, default=None, help="Seconds SIGTERM waits for in-flight work.")
@click.option("--log-level", default=None, help="debug, info, warning, error.")
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
    log_level: str | None,
) -> None:
    """Run the gateway (OpenAI API under /v1)."""
    settings = load(
        config_file, host=host, port=port, data_dir=data_dir, workers=workers,
        api_keys=list(api_keys) or None, auth=False if no_auth else None,
        database_url=database_url, drain_timeout=drain_timeout, log_level=log_level,
    )
    if not settings.auth and not settings.is_loopback:
        raise click.UsageError(
            f"refusing to bind {settings.host} with authentication off: anyone who can reach it could use "
            "every model. Bind 127.0.0.1, or drop --no-auth and use API keys."
        )
    try:
        RoutingTable(settings)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error:\n{exc}") from None
    configure_logging(settings.log_level, settings.log_json)

    async def prepare(runtime: Runtime) -> NewKey | None:
        return await runtime.keys.ensure_admin() if settings.auth else None

    created = run_with_runtime(settings, prepare)
    if created is not None:
        click.echo(
            "Created the first admin key. It is shown once; only its hash is stored:\n\n"
            f"    {created.secret}\n\n"
            "Use it as the API key (Authorization: Bearer ...). Create more with 'switchyard keys create'.\n",
        )
    if not settings.auth:
        click.echo("warning: authentication is off (loopback only)", err=True)
    _run(settings)


def _exit_cleanly(signum: int, frame: object) -> None:
    """uvicorn re-raises the signal it drained on; after a clean drain that means exit 0."""
    sys.exit(0)


def _run(settings: object) -> None:
    import uvicorn

    from switchyard.app import create_app
    from switchyard.settings import Settings

    assert isinstance(settings, Settings)
    common = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "server_header": False,
        "timeout_graceful_shutdown": settings.drain_timeout,
        "timeout_keep_alive": 30,
    }
    click.echo(f"Switchyard listening on http://{settings.host}:{settings.port}/v1", err=True)
    if settings.workers > 1:
        settings.export_for_workers()
        uvicorn.run("switchyard.app:worker_app", factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]
        return
    config = uvicorn.Config(create_app(settings), **common)  # type: ignore[arg-type]
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    uvicorn.Server(config).run()
