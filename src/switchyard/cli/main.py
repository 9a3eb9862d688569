"""``switchyard``: serve the gateway, and manage its keys, config, store and usage.

Subcommands are imported when they run, so ``switchyard serve`` does not carry every other
command's code in the server's memory.
"""

from __future__ import annotations

from importlib import import_module

import click

from switchyard import __version__

__all__ = ["cli", "main"]

# name -> "module:attribute", in the order --help lists them
COMMANDS: dict[str, str] = {
    "serve": "switchyard.cli.serve:serve",
    "keys": "switchyard.cli.keys:keys",
    "teams": "switchyard.cli.teams:teams",
    "audit": "switchyard.cli.audit:audit",
    "credentials": "switchyard.cli.credentials:credentials",
    "config": "switchyard.cli.admin:config",
    "db": "switchyard.cli.admin:db",
    "usage": "switchyard.cli.admin:usage",
    "status": "switchyard.cli.status:status",
    "models": "switchyard.cli.models:models",
    "run": "switchyard.cli.chat:run",
    "launch": "switchyard.cli.launch:launch",
    "stop": "switchyard.cli.ops:stop",
    "doctor": "switchyard.cli.doctor:doctor",
    "init": "switchyard.cli.init:init",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command: click.Command = getattr(import_module(module), attr)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="switchyard")
def cli() -> None:
    """Switchyard: one OpenAI-compatible endpoint and one key system for every model."""


def main() -> None:
    cli()
