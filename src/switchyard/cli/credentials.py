"""``switchyard credentials``: the encrypted provider-key vault, on the store (the server may be down).

The master key comes from the settings (``SWITCHYARD_MASTER_KEY``), exactly as the server reads it.
``CredentialAdmin`` applies each change and records it in the audit log with the actor ``cli``
(never the key).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import click

from switchyard.admin import CLI
from switchyard.admin.vault import VaultError, VaultNotConfiguredError
from switchyard.cli.store_options import load, run_with_runtime, store_options
from switchyard.core.credentials import CREDENTIAL_PROVIDERS, Credential
from switchyard.errors import GatewayError
from switchyard.runtime import Runtime
from switchyard.settings import Settings

__all__ = ["credentials"]

T = TypeVar("T")


def _run(settings: Settings, body: Callable[[Runtime], Awaitable[T]]) -> T:
    try:
        return run_with_runtime(settings, body)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
    except VaultError as exc:
        raise click.ClickException(str(exc)) from None


def _need_master(settings: Settings) -> None:
    if settings.master_key is None:
        raise click.ClickException(str(VaultNotConfiguredError()))


def _read_secret(from_stdin: bool, what: str, confirm: bool = False) -> str:
    value: str
    if from_stdin:
        value = sys.stdin.read().strip()
    else:
        value = str(click.prompt(what, hide_input=True, confirmation_prompt=confirm)).strip()
    if not value:
        raise click.ClickException(f"{what} is empty")
    return value


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _check(cred: Credential) -> str:
    if cred.last_check_ok is None:
        return "unchecked"
    return f"{'ok' if cred.last_check_ok else 'FAILED'}@{_when(cred.last_checked_at).replace(' ', 'T')}"


def _row(cred: Credential) -> str:
    state = "active" if cred.active else "inactive"
    return (f"{cred.name[:24]:<24} {cred.id:<21} {cred.provider:<9} {cred.display:<12} {state:<8} "
            f"{cred.use_count:>7} {_when(cred.last_used_at):<16} {_check(cred)}")


@click.group()
def credentials() -> None:
    """Manage provider API keys in the encrypted vault."""


@credentials.command("add")
@click.argument("name")
@click.option("--provider", type=click.Choice(CREDENTIAL_PROVIDERS), required=True, help="The provider type.")
@click.option("--base-url", default=None, help="Upstream base URL (azure: required; others: the public API).")
@click.option("--api-key-stdin", is_flag=True, help="Read the key from stdin (default: a hidden prompt).")
@click.option("--no-check", is_flag=True, help="Store without checking the key against the provider.")
@store_options
def add(name: str, provider: str, base_url: str | None, api_key_stdin: bool, no_check: bool,
        config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Check a provider key with the provider's model list, then store it encrypted."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)
    _need_master(settings)
    secret = _read_secret(api_key_stdin, "API key")

    async def body(rt: Runtime) -> Credential:
        return await rt.admin.credentials.add(
            {"name": name, "provider": provider, "api_key": secret, "base_url": base_url, "check": not no_check},
            actor=CLI)

    cred = _run(settings, body)
    click.echo(f"id:       {cred.id}\nname:     {cred.name}\nprovider: {cred.provider}\nkey:      {cred.display}")
    click.echo(f"check:    {_check(cred)}")


@credentials.command("list")
@store_options
def list_(config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """List credentials (never their keys)."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> list[Credential]:
        return await rt.vault.list()

    rows = _run(settings, body)
    click.echo(f"{'NAME':<24} {'ID':<21} {'PROVIDER':<9} {'KEY':<12} {'STATE':<8} {'USES':>7} {'LAST USED':<16} CHECK")
    for cred in rows:
        click.echo(_row(cred))


@credentials.command("check")
@click.argument("name")
@store_options
def check(name: str, config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Check a stored key against its provider again and record the outcome (exit 1 if it fails)."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)
    _need_master(settings)

    async def body(rt: Runtime) -> tuple[Credential, bool]:
        return await rt.admin.credentials.check(name, actor=CLI)

    after, checked = _run(settings, body)
    if not checked:
        click.echo(f"{after.name}: not checked ({after.provider} without a base_url has nothing to check)")
    elif after.last_check_ok:
        click.echo(f"{after.name}: ok ({after.provider})")
    else:
        raise click.ClickException(f"{after.name}: check failed: {after.last_check_error}")


@credentials.command("remove")
@click.argument("name")
@store_options
def remove(name: str, config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Delete a credential (its name or id)."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> Credential:
        return await rt.admin.credentials.remove(name, actor=CLI)

    cred = _run(settings, body)
    click.echo(f"removed {cred.name} ({cred.id})")


@credentials.command("rekey")
@click.option("--new-master-key-stdin", is_flag=True, help="Read the new master key from stdin (default: prompt).")
@store_options
def rekey(new_master_key_stdin: bool, config_file: Path | None, data_dir: Path | None,
          database_url: str | None) -> None:
    """Re-encrypt every credential under a new master key, in one transaction."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)
    _need_master(settings)
    new_key = _read_secret(new_master_key_stdin, "New master key", confirm=True)

    async def body(rt: Runtime) -> tuple[int, str | None]:
        count = await rt.admin.credentials.rekey(new_key, actor=CLI)
        return count, rt.vault.fingerprint

    count, fingerprint = _run(settings, body)
    click.echo(f"re-encrypted {count} credential(s) under master key {fingerprint}")
    click.echo("Now set SWITCHYARD_MASTER_KEY to the new key on every replica (and in switchyard.env) and restart "
               "them: the old key no longer opens these credentials.", err=True)
