"""``switchyard stop``: signal the server that holds the data dir's pid file, and the helpers
that tell a live switchyard from a stale pid file (``doctor`` uses them too).

The pid file's lock says whether a server runs (see ``pid_file``); /proc says what became of
the pid in a stale file, for the messages."""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from pathlib import Path
from typing import NoReturn

import click

from switchyard.cli.pid_file import holder, read_pid_file, remove_stale
from switchyard.settings import ConfigError, Settings, load_settings

__all__ = ["is_switchyard", "live_server_pid", "stop"]


# ---------------------------------------------------------------- processes (Linux /proc)
def _proc_state(pid: int) -> str | None:
    """The process's state letter (R, S, Z, ...), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[0]


def _alive(pid: int) -> bool:
    return _proc_state(pid) not in (None, "Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_switchyard(pid: int) -> bool:
    """Is ``pid`` a ``switchyard serve`` process (``switchyard serve`` or ``python -m switchyard serve``)?"""
    argv = _cmdline(pid)
    named = any(Path(part).name == "switchyard" for part in argv)
    return named and "serve" in argv


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


def live_server_pid(settings: Settings) -> int | None:
    """The pid of the switchyard serving from this data dir, or None (no pid file, or a stale one)."""
    running = holder(settings.pid_file)
    return running.pid if running is not None else None


def _remove_pid_file(path: Path) -> None:
    with suppress(OSError):
        remove_stale(path)


# ---------------------------------------------------------------- stop
def _stale(path: Path) -> NoReturn:
    """No process holds the pid file: say what became of the pid in it, remove it, exit 1."""
    found = read_pid_file(path)
    pid = found.pid if found is not None else None
    _remove_pid_file(path)
    if pid is None:
        raise click.ClickException(f"removed the damaged pid file {path}; switchyard is not running")
    if not _alive(pid):
        raise click.ClickException(
            f"switchyard is not running: process {pid} is gone; removed the stale pid file {path}"
        )
    if not is_switchyard(pid):
        command = " ".join(_cmdline(pid))[:200] or "?"
        raise click.ClickException(
            f"switchyard is not running: pid {pid} from {path} now belongs to another program ({command}); "
            "left it alone and removed the stale pid file"
        )
    raise click.ClickException(
        f"switchyard is not running from {path.parent}: pid {pid} is a switchyard that does not hold its pid "
        "file (it serves another data dir); left it alone and removed the stale pid file"
    )


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@click.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="YAML config file (to find the data dir).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="The running server's data dir (its pid file is DATA_DIR/switchyard.pid).")
@click.option("--timeout", type=float, default=None,
              help="Seconds to wait for the server to drain and exit (default: drain_timeout + 10).")
@click.option("--force", is_flag=True, help="Send SIGKILL if it is still running after --timeout.")
def stop(config_file: Path | None, data_dir: Path | None, timeout: float | None, force: bool) -> None:
    """Stop the server running from this data dir (SIGTERM: it drains in-flight requests first).

    Exit status: 0 stopped; 1 nothing was running (a stale pid file is removed), or it did not
    exit within --timeout.
    """
    try:
        settings = load_settings(config_file, data_dir=data_dir)
        path, drain = settings.pid_file, settings.drain_timeout
    except ConfigError as exc:
        if data_dir is None:  # without the config, the data dir is unknown
            raise click.ClickException(f"configuration error:\n{exc}") from None
        path, drain = data_dir / "switchyard.pid", 30.0
    if not path.exists():
        raise click.ClickException(f"switchyard is not running from {path.parent} (no pid file at {path})")
    running = holder(path)
    if running is None:
        _stale(path)
    pid = running.pid
    if pid is None:
        raise click.ClickException(f"a switchyard holds {path} but its pid cannot be read from it")
    wait = timeout if timeout is not None else drain + 10
    family = _descendants(pid)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _remove_pid_file(path)
        click.echo(f"switchyard (pid {pid}) had already exited")
        return
    except PermissionError:
        raise click.ClickException(
            f"not allowed to signal pid {pid}: run this as the user the server runs as (or use systemctl stop)"
        ) from None
    click.echo(f"sent SIGTERM to switchyard (pid {pid}); waiting up to {wait:g}s for it to drain and exit",
               err=True)
    if _wait_gone(pid, wait):
        _remove_pid_file(path)
        click.echo(f"stopped switchyard (pid {pid})")
        return
    if not force:
        raise click.ClickException(
            f"switchyard (pid {pid}) is still running after {wait:g}s; wait longer (--timeout) or add --force"
        )
    for target in [pid, *family, *_descendants(pid)]:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)
    if not _wait_gone(pid, 10):
        raise click.ClickException(f"switchyard (pid {pid}) survived SIGKILL")
    _remove_pid_file(path)
    click.echo(f"killed switchyard (pid {pid}) after {wait:g}s: in-flight requests were cut")
