"""``switchyard teams``: create, list, update and delete teams on the store (the server may be down).

Also the limit and budget options ``keys create`` / ``keys update`` share with ``teams``. The
options become the admin API's JSON; ``TeamAdmin`` applies it and records each change in the
audit log with the actor ``cli``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from switchyard.admin import CLI
from switchyard.cli.store_options import load, run_with_runtime, store_options
from switchyard.core.budget_periods import budget_status
from switchyard.core.keys import Team
from switchyard.core.limits import Budget, RateLimits, limits_to_json
from switchyard.errors import GatewayError
from switchyard.protocol.admin import budget_json
from switchyard.runtime import Runtime
from switchyard.settings import Settings

__all__ = [
    "budget_options",
    "describe_budget",
    "describe_budget_status",
    "describe_limits",
    "limit_options",
    "limits_from_options",
    "merge_budget",
    "merge_limits",
    "parse_model_limit",
    "run",
    "spend_of",
    "teams",
]

LIMIT_NAMES = ("rpm", "tpm", "rph", "rpd", "max_parallel")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def run(settings: Settings, body: Callable[[Runtime], Awaitable[T]]) -> T:
    try:
        return run_with_runtime(settings, body)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None


def limit_options(fn: F) -> F:
    """--rpm, --tpm, --rph, --rpd, --max-parallel (0: no limit)."""
    for name, help_ in reversed((
        ("rpm", "Requests per minute."),
        ("tpm", "Tokens (prompt + completion) per minute."),
        ("rph", "Requests per hour."),
        ("rpd", "Requests per day."),
        ("max-parallel", "Requests in flight at once."),
    )):
        fn = click.option(f"--{name}", type=click.IntRange(min=0), default=None,
                          help=f"{help_} 0 removes the limit.")(fn)
    return fn


def budget_options(fn: F) -> F:
    fn = click.option("--budget-period", type=click.Choice(["daily", "monthly", "total"]), default=None,
                      help="When the budget resets (UTC): daily, monthly (default) or total (never).")(fn)
    fn = click.option("--budget", type=click.FloatRange(min=0), default=None, metavar="USD",
                      help="Spending ceiling in USD per period.")(fn)
    return fn


def limits_from_options(values: dict[str, int | None]) -> dict[str, int | None]:
    """The limit options given: a value sets a limit, 0 removes it (None)."""
    return {name: (value or None) for name, value in values.items() if value is not None}


def merge_limits(current: RateLimits | None, given: dict[str, int | None]) -> RateLimits | None:
    merged: dict[str, int | None] = dict(limits_to_json(current) or {})
    merged.update(given)
    values = {k: v for k, v in merged.items() if v is not None}
    return RateLimits(**values) if values else None


def merge_budget(current: Budget | None, amount: float | None, period: str | None) -> Budget | None:
    if amount is None and period is None:
        return current
    if amount is None:
        if current is None:
            raise click.UsageError("--budget-period needs --budget (the key or team has no budget)")
        amount = current.amount_usd
    return Budget(amount, period or (current.period if current else "monthly"))  # type: ignore[arg-type]


def parse_model_limit(value: str) -> tuple[str, RateLimits | None]:
    """``ALIAS:rpm=10,tpm=5000`` (``ALIAS:`` alone: no limits on that model)."""
    alias, sep, spec = value.rpartition(":")
    if not sep or not alias:
        raise click.BadParameter(f"'{value}': expected ALIAS:rpm=N,tpm=N,...", param_hint="--model-limit")
    values: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, eq, raw = part.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or name not in LIMIT_NAMES or not raw.strip().isdigit() or int(raw) <= 0:
            raise click.BadParameter(f"'{part}': expected one of {', '.join(LIMIT_NAMES)} = a positive integer",
                                     param_hint="--model-limit")
        values[name] = int(raw)
    return alias, RateLimits(**values) if values else None


def describe_limits(limits: RateLimits | None) -> str:
    js = limits_to_json(limits)
    return ",".join(f"{k}={v}" for k, v in js.items()) if js else "-"


def describe_budget(budget: Budget | None) -> str:
    return f"${budget.amount_usd:g}/{budget.period}" if budget is not None else "-"


_IN_PERIOD = {"daily": "today", "monthly": "this month", "total": "in total"}


def describe_budget_status(status: dict[str, Any]) -> str:
    """``$1.25 of $5 this month (2026-11-01 to 2026-12-01), $3.75 left``."""
    start, end = status["period_start"], status["period_end"]
    span = f" ({start[:10]} to {end[:10]})" if start and end else ""
    spent, left = status["spent_usd"], status["remaining_usd"]
    return (f"${spent:.6f}".rstrip("0").rstrip(".") + f" of ${spent + left:g} {_IN_PERIOD[status['period']]}{span}, "
            + f"${left:.6f}".rstrip("0").rstrip(".") + " left")


async def spend_of(rt: Runtime, scope: str, budget: Budget | None) -> dict[str, Any] | None:
    """Where ``scope``'s budget stands this period (``budget_status``); None without a budget."""
    return None if budget is None else await budget_status(rt.spent, scope, budget)


def _show(team: Team, status: dict[str, Any] | None = None) -> None:
    click.echo(f"id:      {team.id}\nname:    {team.name}\nlimits:  {describe_limits(team.limits)}\n"
               f"budget:  {describe_budget(team.budget)}")
    if status is not None:
        click.echo(f"spent:   {describe_budget_status(status)}")


@click.group()
def teams() -> None:
    """Manage teams: keys grouped under shared limits and a budget."""


@teams.command("create")
@click.argument("name")
@limit_options
@budget_options
@store_options
def create(name: str, config_file: Path | None, data_dir: Path | None, database_url: str | None,
           budget: float | None, budget_period: str | None, **limits: int | None) -> None:
    """Create a team."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)
    spec = {"name": name, "limits": limits_to_json(merge_limits(None, limits_from_options(limits))),
            "budget": budget_json(merge_budget(None, budget, budget_period))}

    async def body(rt: Runtime) -> Team:
        return await rt.admin.teams.create({k: v for k, v in spec.items() if v is not None}, actor=CLI)

    _show(run(settings, body))


@teams.command("list")
@store_options
def list_(config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """List teams with their limits, budget and number of keys."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> tuple[list[Team], dict[str, int]]:
        return await rt.teams.list(), await rt.teams.key_counts()

    rows, counts = run(settings, body)
    click.echo(f"{'ID':<21} {'NAME':<20} {'KEYS':>5} {'BUDGET':<18} LIMITS")
    for team in rows:
        click.echo(f"{team.id:<21} {team.name[:20]:<20} {counts.get(team.id, 0):>5} "
                   f"{describe_budget(team.budget):<18} {describe_limits(team.limits)}")


@teams.command("show")
@click.argument("team")
@store_options
def show(team: str, config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Show a team (by id or name): its limits, its budget and what its keys spent of it this period."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> tuple[Team, dict[str, Any] | None]:
        found = await rt.teams.get(team)
        return found, await spend_of(rt, f"team:{found.id}", found.budget)

    _show(*run(settings, body))


@teams.command("update")
@click.argument("team")
@click.option("--name", "new_name", default=None, help="Rename the team.")
@limit_options
@budget_options
@click.option("--no-limits", is_flag=True, help="Remove every limit (before applying the limit options).")
@click.option("--no-budget", is_flag=True, help="Remove the budget.")
@store_options
def update(team: str, new_name: str | None, no_limits: bool, no_budget: bool, config_file: Path | None,
           data_dir: Path | None, database_url: str | None, budget: float | None, budget_period: str | None,
           **limits: int | None) -> None:
    """Change a team (by id or name): its name, limits or budget."""
    if no_budget and (budget is not None or budget_period is not None):
        raise click.UsageError("--no-budget cannot be combined with --budget or --budget-period")
    settings = load(config_file, data_dir=data_dir, database_url=database_url)
    given = limits_from_options(limits)

    async def body(rt: Runtime) -> Team:
        current = await rt.admin.teams.get(team)
        changes: dict[str, Any] = {}  # each setting given, whole
        if new_name is not None:
            changes["name"] = new_name
        if given or no_limits:
            changes["limits"] = limits_to_json(merge_limits(None if no_limits else current.limits, given))
        if no_budget or budget is not None or budget_period is not None:
            changes["budget"] = None if no_budget else budget_json(merge_budget(current.budget, budget, budget_period))
        if not changes:
            raise click.UsageError("nothing to change: give --name, a limit or a budget option")
        return await rt.admin.teams.update(current.id, changes, actor=CLI, merge=False)

    _show(run(settings, body))


@teams.command("delete")
@click.argument("team")
@store_options
def delete(team: str, config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Delete a team (by id or name) that no key belongs to any more."""
    settings = load(config_file, data_dir=data_dir, database_url=database_url)

    async def body(rt: Runtime) -> Team:
        return await rt.admin.teams.delete(team, actor=CLI)

    removed = run(settings, body)
    click.echo(f"deleted {removed.id} ({removed.name})")
