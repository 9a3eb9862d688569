"""``switchyard keys``: create, list, update, revoke and rotate keys on the store (the server may be down).

The options become the admin API's JSON; ``KeyAdmin`` applies it and records each change in the
audit log with the actor ``cli``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from switchyard.admin import CLI
from switchyard.cli.store_options import load, run_with_runtime, store_options
from switchyard.cli.teams import (
    budget_options,
    describe_budget,
    describe_budget_status,
    describe_limits,
    limit_options,
    limits_from_options,
    merge_budget,
    merge_limits,
    parse_model_limit,
    run,
    spend_of,
)
from switchyard.core.keys import ApiKey, NewKey
from switchyard.core.limits import RateLimits, limits_to_json, model_limits_to_json
from switchyard.errors import GatewayError
from switchyard.protocol.admin import budget_json
from switchyard.runtime import Runtime

__all__ = ["keys"]


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _row(key: ApiKey, team_names: dict[str, str]) -> str:
    models = ",".join(key.allowed_models) if key.allowed_models is not None else "*"
    state = "active" if key.active else "revoked"
    team = team_names.get(key.team_id, key.team_id) if key.team_id is not None else "-"
    return (f"{key.id:<21} {key.name[:20]:<20} {key.prefix + '…':<14} {'yes' if key.is_admin else 'no':<5} "
            f"{state:<8} {key.use_count:>7} {_when(key.last_used_at):<16} {team[:16]:<16} {models}")


def _settings_lines(key: ApiKey) -> str:
    lines = []
    if key.user_id is not None:
        lines.append(f"user:   {key.user_id}")
    if key.team_id is not None:
        lines.append(f"team:   {key.team_id}")
    if key.limits is not None:
        lines.append(f"limits: {describe_limits(key.limits)}")
    for alias, limits in key.model_limits.items():
        lines.append(f"limits: {alias}: {describe_limits(limits)}")
    if key.budget is not None:
        lines.append(f"budget: {describe_budget(key.budget)}")
    return "".join(line + "\n" for line in lines)


def _show_secret(new: NewKey) -> None:
    click.echo(f"id:     {new.key.id}\nname:   {new.key.name}\n{_settings_lines(new.key)}key:    {new.secret}")
    click.echo("The key is shown once; only its hash is stored.", err=True)


def _model_limits(values: tuple[str, ...], current: dict[str, RateLimits] | None = None) -> dict[str, RateLimits]:
    out = dict(current or {})
    for value in values:
        alias, limits = parse_model_limit(value)
        if limits is None:
            out.pop(alias, None)
        else:
            out[alias] = limits
    return out


@click.group()
def keys() -> None:
    """Manage the gateway's API keys."""


@keys.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May use the admin API and /metrics.")
@click.option("--model", "models", multiple=True, help="Allowed model or pattern (repeatable; default all).")
@click.option("--expires-in", type=float, default=None, help="Days until the key expires.")
@click.option("--user", default=None, help="The user the key belongs to (any identifier, e.g. an e-mail).")
@click.option("--team", default=None, help="The team (id or name) the key belongs to.")
@limit_options
@click.option("--model-limit", "model_limit", multiple=True, metavar="ALIAS:rpm=N,...",
              help="Limits of this key on one model or pattern (repeatable), e.g. 'gpt-4o:rpm=10,tpm=20000'.")
@budget_options
@store_options
def create(name: str, admin: bool, models: tuple[str, ...], expires_in: float | None, user: str | None,
           team: str | None, model_limit: tuple[str, ...], budget: float | None, budget_period: str | None,
           config_file: Path | None, data_dir: Path | None, database_url: str | None, **limits: int | None) -> None:
    """Create a key and print its secret once."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)
    expires = datetime.now(UTC) + timedelta(days=expires_in) if expires_in else None
    spec: dict[str, Any] = {
        "name": name, "admin": admin, "models": list(models) or None, "expires_at": expires, "user": user,
        "team": team, "limits": limits_to_json(merge_limits(None, limits_from_options(limits))),
        "model_limits": model_limits_to_json(_model_limits(model_limit)),
        "budget": budget_json(merge_budget(None, budget, budget_period)),
    }

    async def body(rt: Runtime) -> NewKey:
        return await rt.admin.keys.create({k: v for k, v in spec.items() if v is not None}, actor=CLI)

    try:
        _show_secret(run_with_runtime(settings, body))
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None


@keys.command("update")
@click.argument("key_id")
@click.option("--name", default=None, help="Rename the key.")
@click.option("--model", "models", multiple=True, help="Allowed model or pattern (repeatable; replaces the list).")
@click.option("--all-models", is_flag=True, help="Allow every model.")
@click.option("--user", default=None, help="The user the key belongs to.")
@click.option("--no-user", is_flag=True, help="The key belongs to no user.")
@click.option("--team", default=None, help="Move the key to this team (id or name).")
@click.option("--no-team", is_flag=True, help="Take the key out of its team.")
@limit_options
@click.option("--no-limits", is_flag=True, help="Remove every limit of the key (before applying limit options).")
@click.option("--model-limit", "model_limit", multiple=True, metavar="ALIAS:rpm=N,...",
              help="Set the key's limits on one model ('ALIAS:' alone removes them; repeatable).")
@budget_options
@click.option("--no-budget", is_flag=True, help="Remove the key's budget.")
@store_options
def update(key_id: str, name: str | None, models: tuple[str, ...], all_models: bool, user: str | None,
           no_user: bool, team: str | None, no_team: bool, no_limits: bool, model_limit: tuple[str, ...],
           budget: float | None, budget_period: str | None, no_budget: bool, config_file: Path | None,
           data_dir: Path | None, database_url: str | None, **limits: int | None) -> None:
    """Change a key's name, models, owners, limits or budget; a running server applies it within a second."""
    for flag, value, opposite in (("--all-models", all_models, models), ("--no-user", no_user, user),
                                  ("--no-team", no_team, team), ("--no-budget", no_budget, budget)):
        if value and opposite:
            raise click.UsageError(f"{flag} contradicts the option that sets it")
    settings = load(config_file, data_dir=data_dir, database_url=database_url)
    given = limits_from_options(limits)

    async def body(rt: Runtime) -> ApiKey:
        current = await rt.admin.keys.get(key_id)
        changes: dict[str, Any] = {}  # each setting given, whole
        if name is not None:
            changes["name"] = name
        if models or all_models:
            changes["models"] = None if all_models else list(models)
        if user is not None or no_user:
            changes["user"] = None if no_user else user
        if team is not None or no_team:
            changes["team"] = None if no_team else team
        if given or no_limits:
            changes["limits"] = limits_to_json(merge_limits(None if no_limits else current.limits, given))
        if model_limit or no_limits:
            changes["model_limits"] = model_limits_to_json(
                _model_limits(model_limit, None if no_limits else current.model_limits))
        if no_budget or budget is not None or budget_period is not None:
            changes["budget"] = None if no_budget else budget_json(merge_budget(current.budget, budget, budget_period))
        if not changes:
            raise click.UsageError("nothing to change")
        return await rt.admin.keys.update(key_id, changes, actor=CLI, merge=False)

    try:
        key = run_with_runtime(settings, body)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"id:     {key.id}\nname:   {key.name}\n{_settings_lines(key)}", nl=False)


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@store_options
def list_(include_revoked: bool, config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """List keys (never their secrets)."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> tuple[list[ApiKey], dict[str, str]]:
        return await rt.keys.list(include_revoked=include_revoked), {t.id: t.name for t in await rt.teams.list()}

    rows, team_names = run_with_runtime(settings, body)
    click.echo(f"{'ID':<21} {'NAME':<20} {'PREFIX':<14} {'ADMIN':<5} {'STATE':<8} {'USES':>7} {'LAST USED':<16} "
               f"{'TEAM':<16} MODELS")
    for key in rows:
        click.echo(_row(key, team_names))


@keys.command("show")
@click.argument("key_id")
@store_options
def show(key_id: str, config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Show a key (never its secret): its scope, limits, budget and what it spent of it this period."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> tuple[ApiKey, dict[str, Any] | None]:
        key = await rt.keys.get(key_id)
        return key, await spend_of(rt, f"key:{key.id}", key.budget)

    key, status = run(settings, body)
    models = ",".join(key.allowed_models) if key.allowed_models is not None else "*"
    click.echo(f"id:     {key.id}\nname:   {key.name}\nprefix: {key.prefix}…\n"
               f"state:  {'active' if key.active and key.revoked_at is None else 'revoked'}\n"
               f"admin:  {'yes' if key.is_admin else 'no'}\nmodels: {models}\n"
               f"uses:   {key.use_count} (last {_when(key.last_used_at)})\n{_settings_lines(key)}", nl=False)
    if status is not None:
        click.echo(f"spent:  {describe_budget_status(status)}")


@keys.command("revoke")
@click.argument("key_id")
@store_options
def revoke(key_id: str, config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Revoke a key. A running server refuses it within a second."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> None:
        await rt.admin.keys.revoke(key_id, actor=CLI)

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
        return await rt.admin.keys.rotate(key_id, actor=CLI)

    try:
        _show_secret(run_with_runtime(settings, body))
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
