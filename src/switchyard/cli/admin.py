"""``switchyard config check``, ``switchyard db upgrade`` and ``switchyard usage``."""

from __future__ import annotations

import asyncio
import csv
import re
import sys
from datetime import datetime
from pathlib import Path

import click

from switchyard.cli.store_options import load, run_with_runtime, store_options, time_option
from switchyard.core.latency import BUCKETS, percentile
from switchyard.runtime import Runtime
from switchyard.service.routing import RoutingTable
from switchyard.settings import ConfigError
from switchyard.store.usage import format_usd, parse_group_by

__all__ = ["config", "db", "usage"]


@click.group()
def config() -> None:
    """Inspect the configuration."""


_USERINFO = re.compile(r"(https?://)[^/@\s]*@")


def _no_userinfo(text: str) -> str:
    """A cell fit to print: the user:password@ part of any URL in it removed."""
    return _USERINFO.sub(r"\1", text)


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
    rows = [tuple(_no_userinfo(cell) for cell in row) for row in table.describe()]
    header = ("MODEL", "PROVIDER", "UPSTREAM MODEL", "BASE URL")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]  # nothing cut short
    for row in [header, *rows]:
        click.echo("  ".join(f"{cell:<{width}}" for cell, width in zip(row[:3], widths, strict=True))
                   + f"  {row[3]}")
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


def _micro_usd(nanos: int) -> str:
    """USD rounded to the micro-dollar, for the table (CSV keeps every nano-dollar)."""
    return format_usd((nanos + 500) // 1000 * 1000)[:-3]


_COUNTS = ["requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "errors", "estimated",
           "cache_read_tokens", "cache_write_tokens"]
_RATES = ["error_rate", "p50_ms", "p95_ms"]


def _rates(requests: int, errors: int, latency: list[int], fmt: str) -> list[str]:
    """Error rate (a fraction in CSV, a percentage in the table) and the latency percentiles."""
    none = "" if fmt == "csv" else "-"
    rate = (f"{errors / requests:.6f}" if fmt == "csv" else f"{100 * errors / requests:.1f}%") if requests else none
    cells = [rate]
    for q in (0.5, 0.95):
        value = percentile(latency, q)
        cells.append(none if value is None else f"{value:.1f}" if fmt == "csv" else f"{value:.0f}")
    return cells


@click.command()
@click.option("--since", default=None, help="From: an age (30m, 24h, 7d), an ISO 8601 time or Unix seconds.")
@click.option("--until", default=None, help="Until (excluded): an age, an ISO 8601 time or Unix seconds.")
@click.option("--key", "key", default=None, help="Only this key (its id or name).")
@click.option("--model", default=None, help="Only this model alias.")
@click.option("--group-by", "group_by", default="key,model", show_default=True,
              help="One or more of hour, day, key, team (the key's team when the request was made), model, "
              "session (an agent session: Claude Code's, Codex's), comma-separated.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table")
@store_options
def usage(since: str | None, until: str | None, key: str | None, model: str | None, group_by: str, fmt: str,
          config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Requests, tokens, cost, error rate and latency, from the hourly usage rollups (the server
    need not run).

    Hours are UTC; --since and --until select the hours that overlap the range. Cache read and
    write tokens are parts of the prompt tokens. P50_MS and P95_MS are the latency percentiles of
    the requests that succeeded, from the rollups' histogram (within 26 %). Grouping by session
    reads the raw usage rows, so it covers what the usage retention still keeps.
    """
    try:
        dims = parse_group_by(group_by)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--group-by") from None
    start, end = time_option(since, "--since"), time_option(until, "--until")
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> tuple[list[dict[str, object]], dict[str, str]]:
        keys = await rt.keys.list(include_revoked=True)
        names = {k.id: k.name for k in keys}
        if "team" in dims:
            names.update({f"team:{t.id}": t.name for t in await rt.teams.list()})
        key_id = key
        if key is not None and key not in names:
            matches = [k.id for k in keys if k.name == key]
            if len(matches) > 1:
                raise click.BadParameter(f"{len(matches)} keys are named {key!r}; give the id", param_hint="--key")
            if matches:
                key_id = matches[0]
        return await rt.usage.query(key_id=key_id, model=model, since=start, until=end, group_by=dims), names

    rows, names = run_with_runtime(settings, body)
    columns = [*(["period"] if "hour" in dims or "day" in dims else []),
               *(["key"] if "key" in dims else []), *(["team"] if "team" in dims else []),
               *(["model"] if "model" in dims else []), *(["session"] if "session" in dims else []),
               *_COUNTS, *_RATES]
    table: list[list[str]] = []
    total = dict.fromkeys(_COUNTS, 0)
    latency = [0] * BUCKETS
    for r in rows:
        line: list[str] = []
        period = r.get("period")
        if isinstance(period, datetime):
            if "day" in dims:
                line.append(period.strftime("%Y-%m-%d"))
            else:
                line.append(period.isoformat() if fmt == "csv" else period.strftime("%Y-%m-%d %H:00"))
        if "key" in dims:
            key_id = r["key_id"]
            line.append(names.get(str(key_id), str(key_id)) if key_id is not None else "(static/anonymous)")
        if "team" in dims:
            team_id = r["team_id"]
            line.append(names.get(f"team:{team_id}", str(team_id)) if team_id is not None else "(none)")
        if "model" in dims:
            line.append(str(r["model"]))
        if "session" in dims:
            line.append(str(r["session_id"]) if r["session_id"] is not None else "(none)")
        for c in _COUNTS:
            value = int(str(r["cost_nanousd" if c == "cost_usd" else c]))
            total[c] += value
            line.append((format_usd(value) if fmt == "csv" else _micro_usd(value)) if c == "cost_usd" else str(value))
        counts: list[int] = list(r["latency_counts"])  # type: ignore[call-overload]
        latency = [a + b for a, b in zip(latency, counts, strict=True)]
        line += _rates(int(str(r["requests"])), int(str(r["errors"])), counts, fmt)
        table.append(line)
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(table)
        return
    labels = len(columns) - len(_COUNTS) - len(_RATES)
    footer = [*(["TOTAL"] if labels else []), *([""] * (labels - 1)),
              *(_micro_usd(total[c]) if c == "cost_usd" else str(total[c]) for c in _COUNTS),
              *_rates(total["requests"], total["errors"], latency, fmt)]
    widths = [max(len(c), len(footer[i]), *(len(row[i]) for row in table)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for line in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    click.echo("  ".join(v.ljust(w) for v, w in zip(footer, widths, strict=True)).rstrip())
