"""``switchyard models pull``: a model into an Ollama provider of the config (its /api/pull, with
progress bars), or from the Hugging Face hub into DATA_DIR/models.

rich and huggingface_hub are imported inside the command.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from switchyard.cli.server_client import config_option, console, data_dir_option, print_json
from switchyard.settings import ConfigError, ProviderConfig, Settings, load_settings

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["pull"]

_HUB_NAME = r"[A-Za-z0-9_](?:[\w.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"(?:{_HUB_NAME}/)?{_HUB_NAME}", re.ASCII)


@click.command()
@click.argument("name")
@click.option("--provider", default=None, help="The Ollama provider to pull into (default: the first in the config).")
@click.option("--hub", is_flag=True, help="Download NAME (a repo id) from the Hugging Face hub into DATA_DIR/models.")
@config_option
@data_dir_option
@click.option("--database-url", default=None, help="The store (only for a provider whose key is in the vault).")
@click.option("--json", "as_json", is_flag=True, help="Print each progress object as a JSON line.")
def pull(name: str, provider: str | None, hub: bool, config_file: Path | None, data_dir: Path | None,
         database_url: str | None, as_json: bool) -> None:
    """Download model NAME: into an Ollama provider of the config (its /api/pull), or with --hub
    from the Hugging Face hub. With no Ollama provider configured, a hub repo id (owner/name)
    is downloaded from the hub without --hub."""
    if hub and provider:
        raise click.UsageError("--hub and --provider exclude each other")
    overrides: dict[str, object] = {"data_dir": data_dir}
    if database_url:
        overrides["database_url"] = database_url
    try:
        settings = load_settings(config_file, **overrides)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error:\n{exc}") from None
    ollama = {n: c for n, c in settings.providers.items() if c.type == "ollama" and c.enabled}
    if provider is not None:
        cfg = settings.providers.get(provider)
        if cfg is None or cfg.type != "ollama" or not cfg.enabled:
            known = ", ".join(ollama) or "none"
            raise click.ClickException(f"no enabled Ollama provider named {provider!r} (Ollama providers: {known})")
        _pull_ollama(settings, provider, cfg, name, as_json)
    elif hub:
        _pull_hub(settings, name, as_json)
    elif ollama:
        first = next(iter(ollama))
        _pull_ollama(settings, first, ollama[first], name, as_json)
    elif "/" in name and ":" not in name:
        _pull_hub(settings, name, as_json)
    else:
        raise click.ClickException(
            f"cannot pull {name}: no Ollama provider is configured{_in_config(settings)}. Add one (type: ollama) "
            "to pull Ollama models; to download from the Hugging Face hub, give a repo id (owner/name) with --hub")


def _in_config(settings: Settings) -> str:
    if settings.config_file is None:
        return " (no config file was given: pass --config FILE, or set SWITCHYARD_CONFIG_FILE)"
    return f" in {settings.config_file}"


def _ollama_key(settings: Settings, provider: str, cfg: ProviderConfig) -> str | None:
    if cfg.credential is None:
        try:
            return settings.resolve_secret(cfg.api_key)
        except ConfigError as exc:
            raise click.ClickException(f"provider {provider!r}: {exc}") from None
    from switchyard.admin.vault import VaultError
    from switchyard.cli.store_options import run_with_runtime
    from switchyard.errors import GatewayError

    credential = cfg.credential
    try:
        _, secret = run_with_runtime(settings, lambda rt: rt.vault.decrypt(credential))
    except (VaultError, GatewayError) as exc:
        raise click.ClickException(f"provider {provider!r}: its credential {credential!r}: {exc}") from None
    return secret


def _pull_ollama(settings: Settings, provider: str, cfg: ProviderConfig, name: str, as_json: bool) -> None:
    from switchyard.core.models import UpstreamSpec
    from switchyard.errors import GatewayError, ModelNotFoundError, UpstreamConnectionError, UpstreamTimeoutError
    from switchyard.providers.ollama.client import OllamaProvider
    from switchyard.service.routing import display_url

    spec = UpstreamSpec(name=provider, type="ollama", base_url=cfg.base_url,
                        api_key=_ollama_key(settings, provider, cfg), timeout=cfg.timeout)
    show = _Progress(as_json)

    async def run() -> None:
        client = OllamaProvider(spec)
        try:
            async for line in client.pull(name):
                show.update(line)
        finally:
            await client.aclose()

    try:
        with show:
            asyncio.run(run())
    except UpstreamConnectionError:
        raise click.ClickException(
            f"cannot pull {name}: Ollama is not reachable at {display_url(cfg.base_url)} (provider {provider!r}"
            f"{_in_config(settings)}): is it running there?") from None
    except UpstreamTimeoutError:
        raise click.ClickException(
            f"cannot pull {name}: Ollama at {display_url(cfg.base_url)} did not answer within {cfg.timeout:g}s "
            f"(provider {provider!r}'s timeout)") from None
    except ModelNotFoundError:
        hint = "; for the Hugging Face hub, add --hub" if "/" in name and not name.startswith("hf.co/") else ""
        raise click.ClickException(
            f"cannot pull {name} into {provider} ({display_url(cfg.base_url)}): Ollama's registry has no model "
            f"'{name}'{hint}") from None
    except GatewayError as exc:
        raise click.ClickException(
            f"cannot pull {name} into {provider} ({display_url(cfg.base_url)}): {exc.message}") from None
    if not as_json:
        click.echo(f"pulled {name} into {provider} ({display_url(cfg.base_url)})")


class _Progress:
    """Ollama's pull progress on stderr: a rich bar per layer (by digest), a line per other status,
    in the order they come (the bars of a stage end before the next status line). With --json,
    each progress object as a JSON line on stdout instead."""

    def __init__(self, as_json: bool) -> None:
        self._json = as_json
        self._console = None if as_json else console(stderr=True)
        self._bars: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_bars()

    def _end_bars(self) -> None:
        if self._bars is not None:
            self._bars.stop()  # the bars stay, in their last state
            self._bars = None
            self._tasks.clear()

    def _start_bars(self) -> Progress:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=self._console)
        bars.start()
        return bars

    def update(self, line: dict[str, object]) -> None:
        if self._console is None:
            click.echo(json.dumps(line))
            return
        status, digest = str(line.get("status", "")), line.get("digest")
        if not isinstance(digest, str) or not digest:
            self._end_bars()
            self._console.print(status)
            return
        if self._bars is None:
            self._bars = self._start_bars()
        task = self._tasks.get(digest)
        if task is None:
            task = self._tasks[digest] = self._bars.add_task(status, total=None)
        total, completed = line.get("total"), line.get("completed", 0)
        self._bars.update(task, total=float(total) if isinstance(total, int | float) else None,
                          completed=float(completed) if isinstance(completed, int | float) else 0.0)


def _pull_hub(settings: Settings, repo: str, as_json: bool) -> None:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise click.ClickException(f"cannot download {repo} from the Hugging Face hub: that needs the "
                                   "huggingface_hub package (pip install huggingface_hub)") from None
    if not _REPO_ID.fullmatch(repo) or ".." in repo or "--" in repo:
        raise click.ClickException(f"{repo!r} is not a Hugging Face repo id (owner/name, or name)")
    root = Path(settings.data_dir) / "models"
    target = root / repo
    why: str | None = None
    try:
        path = snapshot_download(repo_id=repo, local_dir=target)
    except LocalEntryNotFoundError:
        why = "the hub cannot be reached (or HF_HUB_OFFLINE is set) and it has not been downloaded before"
    except GatedRepoError:
        why = "the repository is gated: accept its terms on the hub and set HF_TOKEN"
    except RepositoryNotFoundError:
        why = "no such repository on the hub (or it is private: set HF_TOKEN)"
    except RevisionNotFoundError:
        why = "no such revision on the hub"
    except (HfHubHTTPError, OSError, ValueError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if why is not None:
        _remove_empty(target, root)
        raise click.ClickException(f"cannot download {repo} from the Hugging Face hub: {why}")
    if as_json:
        print_json({"repo": repo, "path": str(path)})
    else:
        click.echo(f"downloaded {repo} to {path}")


def _remove_empty(path: Path, root: Path) -> None:
    """Take back the empty folders a failed download left, up to and including ``root``."""
    for folder in [path, *path.parents]:
        if not folder.is_relative_to(root.parent) or folder == root.parent:
            break
        try:
            folder.rmdir()  # only if empty
        except OSError:
            break
