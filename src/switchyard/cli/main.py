"""``switchyard``: serve the gateway, and manage its keys, config, store and usage."""

from __future__ import annotations

import click

from switchyard import __version__
from switchyard.cli.admin import config, db, usage
from switchyard.cli.audit import audit
from switchyard.cli.credentials import credentials
from switchyard.cli.doctor import doctor
from switchyard.cli.init import init
from switchyard.cli.keys import keys
from switchyard.cli.ops import stop
from switchyard.cli.serve import serve
from switchyard.cli.status import status
from switchyard.cli.teams import teams

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="switchyard")
def cli() -> None:
    """Switchyard: one OpenAI-compatible endpoint and one key system for every model."""


cli.add_command(serve)
cli.add_command(keys)
cli.add_command(teams)
cli.add_command(audit)
cli.add_command(credentials)
cli.add_command(config)
cli.add_command(db)
cli.add_command(usage)
cli.add_command(status)
cli.add_command(stop)
cli.add_command(doctor)
cli.add_command(init)


def main() -> None:
    cli()
