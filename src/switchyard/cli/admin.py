"""``switchyard config check``, ``switchyard db upgrade`` and ``switchyard usage``."""

from __future__ import annotations

import asyncio
import csv
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from switchyard.cli.store_options import load, run_with_runtime, store_options
from switchyard.runtime import Runtime
from switchyard.service.routing import RoutingTable
from switchyard.settings import ConfigError

__all__ = ["config", "db", "usage"]


@click.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="YAML config file.")
def check(config_file: Path | None) -> None:
    """Validate the config and print the resolved routing table."""
    settings = load(config_file)
    try:
        table = RoutingTable(settings)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error:\n{exc}") from None
    rows = table.describe()
    width = max([len(r[0]) for r in rows] + [5])
    click.echo(f"{'MODEL':<{width}}  {'PROVIDER':<24}  {'UPSTREAM MODEL':<24}  BASE URL")
    for model, provider, upstream, url in rows:
        click.echo(f"{model:<{width}}  {provider[:24]:<24}  {upstream[:24]:<24}  {url}")
    if not rows:
        click.echo("(no models configured)")
    click.echo(f"config ok: {len(table.aliases)} aliases, {len(table.upstreams)} upstreams", err=True)


@click.group()
def db() -> None:
    """Manage the store's schema."""


@db.command("upgrade")
@store_options
def upgrade(config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Apply database migrations (the server also applies them at start)."""
    from switchyard.store.migrate import upgrade as run_upgrade

    settings = load(config_file, data_dir=data_dir, database_url=database_url)
    if settings.database_url is None:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(run_upgrade(settings.resolved_database_url))
    click.echo("database is up to date")


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    match = re.fullmatch(r"(\d+)([mhd])", value)
    if not match:
        raise click.BadParameter("use a duration such as 30m, 24h or 7d", param_hint="--since")
    unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})


@click.command()
@click.option("--since", default=None, help="Only the last 30m, 24h, 7d, ...")
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table")
@store_options
def usage(since: str | None, fmt: str, config_file: Path | None, data_dir: Path | None,
          database_url: str | None) -> None:
    """Requests and tokens per key and model."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)
    start = _since(since)

    async def body(rt: Runtime) -> tuple[list[dict[str, object]], dict[str, str]]:
        names = {k.id: k.name for k in await rt.keys.list(include_revoked=True)}
        return await rt.usage.summary(start), names

    rows, names = run_with_runtime(settings, body)
    columns = ["key", "model", "requests", "prompt_tokens", "completion_tokens", "errors", "estimated"]
    table = [
        [str(names.get(str(r["key_id"]), r["key_id"] or "(static/anonymous)")), str(r["model"]),
         *(str(r[c]) for c in columns[2:])]
        for r in rows
    ]
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(table)
        return
    widths = [max(len(c), *(len(row[i]) for row in table)) if table else len(c) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
