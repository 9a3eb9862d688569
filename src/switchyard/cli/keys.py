"""``switchyard keys``: create, list, revoke and rotate keys on the store (the server may be down)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from switchyard.cli.store_options import load, run_with_runtime, store_options
from switchyard.core.keys import ApiKey, NewKey
from switchyard.errors import GatewayError
from switchyard.runtime import Runtime

__all__ = ["keys"]


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _row(key: ApiKey) -> str:
    models = ",".join(key.allowed_models) if key.allowed_models is not None else "*"
    state = "active" if key.active else "revoked"
    return (f"{key.id:<21} {key.name[:20]:<20} {key.prefix + '…':<14} {'yes' if key.is_admin else 'no':<5} "
            f"{state:<8} {key.use_count:>7} {_when(key.last_used_at):<16} {models}")


def _show_secret(new: NewKey) -> None:
    click.echo(f"id:     {new.key.id}\nname:   {new.key.name}\nkey:    {new.secret}")
    click.echo("The key is shown once; only its hash is stored.", err=True)


@click.group()
def keys() -> None:
    """Manage the gateway's API keys."""


@keys.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May use the admin API and /metrics.")
@click.option("--model", "models", multiple=True, help="Allowed model or pattern (repeatable; default all).")
@click.option("--expires-in", type=float, default=None, help="Days until the key expires.")
@store_options
def create(name: str, admin: bool, models: tuple[str, ...], expires_in: float | None,
           config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Create a key and print its secret once."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)
    expires = datetime.now(UTC) + timedelta(days=expires_in) if expires_in else None

    async def body(rt: Runtime) -> NewKey:
        return await rt.keys.create(name, is_admin=admin, allowed_models=list(models) or None, expires_at=expires)

    _show_secret(run_with_runtime(settings, body))


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@store_options
def list_(include_revoked: bool, config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """List keys (never their secrets)."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> list[ApiKey]:
        return await rt.keys.list(include_revoked=include_revoked)

    rows = run_with_runtime(settings, body)
    click.echo(f"{'ID':<21} {'NAME':<20} {'PREFIX':<14} {'ADMIN':<5} {'STATE':<8} {'USES':>7} {'LAST USED':<16} MODELS")
    for key in rows:
        click.echo(_row(key))


@keys.command("revoke")
@click.argument("key_id")
@store_options
def revoke(key_id: str, config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Revoke a key. A running server refuses it within a second."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> None:
        await rt.keys.revoke(key_id)

    try:
        run_with_runtime(settings, body)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"revoked {key_id}")


@keys.command("rotate")
@click.argument("key_id")
@store_options
def rotate(key_id: str, config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Give a key a new secret (same id, name and scope); the old secret stops working."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> NewKey:
        return await rt.keys.rotate(key_id)

    try:
        _show_secret(run_with_runtime(settings, body))
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
