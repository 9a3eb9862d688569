"""``switchyard``: serve the gateway, and manage its keys, config, store and usage."""

from __future__ import annotations

import click

from switchyard import __version__
from switchyard.cli.admin import config, db, usage
from switchyard.cli.keys import keys
from switchyard.cli.serve import serve

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="switchyard")
def cli() -> None:
    """Switchyard: one OpenAI-compatible endpoint and one key system for every model."""


cli.add_command(serve)
cli.add_command(keys)
cli.add_command(config)
cli.add_command(db)
cli.add_command(usage)


def main() -> None:
    cli()
