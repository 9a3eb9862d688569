"""``switchyard audit``: the admin audit log, newest first, from the store (the server need not run)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click
import orjson

from switchyard.cli.store_options import load, run_with_runtime, store_options, time_option
from switchyard.core.audit import AuditEntry
from switchyard.runtime import Runtime

__all__ = ["audit"]

_COLUMNS = ["at", "actor", "action", "object_type", "object_id", "client_ip", "details"]


def _details(entry: AuditEntry) -> str:
    return orjson.dumps(entry.details, option=orjson.OPT_SORT_KEYS).decode() if entry.details else ""


@click.command()
@click.option("--since", default=None, help="From: an age (30m, 24h, 7d), an ISO 8601 time or Unix seconds.")
@click.option("--until", default=None, help="Until (excluded): an age, an ISO 8601 time or Unix seconds.")
@click.option("--actor", default=None,
              help="Only this actor: an admin key's id, 'static', 'cli' or 'system' (the server itself).")
@click.option("--action", default=None, help="Only actions starting with this (key., team.create, ...).")
@click.option("--object", "object_id", default=None, help="Only entries about this object id.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table", show_default=True)
@store_options
def audit(since: str | None, until: str | None, actor: str | None, action: str | None, object_id: str | None,
          limit: int, fmt: str, config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Who did what to which object, and when: every admin action (never a secret)."""
    start, end = time_option(since, "--since"), time_option(until, "--until")
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> list[AuditEntry]:
        return await rt.audit.query(actor=actor, action=action, object_id=object_id, since=start, until=end,
                                    limit=limit)

    entries = run_with_runtime(settings, body)
    rows = [[e.at.isoformat(timespec="seconds"), e.actor, e.action, e.object_type, e.object_id or "",
             e.client_ip or "", _details(e)] for e in entries]
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(_COLUMNS)
        writer.writerows(rows)
        return
    click.echo(f"{'AT':<25} {'ACTOR':<21} {'ACTION':<22} {'OBJECT':<26} {'CLIENT':<15} DETAILS")
    for at, who, what, _kind, obj, client, details in rows:
        click.echo(f"{at:<25} {who:<21} {what:<22} {obj or '-':<26} {client or '-':<15} {details}")
