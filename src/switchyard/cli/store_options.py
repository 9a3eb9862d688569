"""Options and plumbing shared by the CLI commands."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from switchyard.core.time import parse_since
from switchyard.runtime import Runtime, open_runtime
from switchyard.settings import ConfigError, Settings, load_settings

__all__ = ["load", "run_with_runtime", "store_options", "time_option"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def store_options(fn: F) -> F:
    """--config, --data-dir and --database-url: where the settings and the store are."""
    fn = click.option("--database-url", default=None, help="SQLAlchemy URL (default: SQLite in the data dir).")(fn)
    fn = click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Data directory.")(fn)
    fn = click.option(
        "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
        help="YAML config file.",
    )(fn)
    return fn


def time_option(value: str | None, option: str) -> datetime | None:
    """--since and --until: an age (30m, 24h, 7d), an ISO 8601 time or Unix seconds (``core.time``)."""
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def load(config_file: Path | None = None, **overrides: Any) -> Settings:
    try:
        return load_settings(config_file, **overrides)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error:\n{exc}") from None


def run_with_runtime(settings: Settings, body: Callable[[Runtime], Awaitable[T]]) -> T:
    async def main() -> T:
        runtime = await open_runtime(settings)
        try:
            return await body(runtime)
        finally:
            await runtime.keys.flush_uses()
            await runtime.aclose()

    try:
        return asyncio.run(main())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
