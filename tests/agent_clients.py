"""The coding agents the suite drives (Claude Code, Codex CLI and opencode from npm, aider from
PyPI into a virtual environment of its own: its pinned dependencies must not meet ours),
installed once per pinned version into ``~/.cache/switchyard-tests`` (never globally), shared
by the tests that run them directly and by ``switchyard launch``'s."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["AIDER_VERSION", "CLAUDE_CODE_VERSION", "CODEX_VERSION", "OPENCODE_VERSION", "cache_dir",
           "install_aider", "install_claude_code", "install_codex", "install_opencode"]

CLAUDE_CODE_VERSION = "2.1.332"
CODEX_VERSION = "0.171.0"
OPENCODE_VERSION = "1.18.33"
AIDER_VERSION = "0.86.2"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "switchyard-tests"


@contextmanager
def _installing(target: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``target`` while it is installed: the suite's parallel workers
    (pytest-xdist) may ask for the same client at once, and the second waits for the first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _npm_install(prefix: Path, package: str, binary: str) -> Path:
    path = prefix / "node_modules" / ".bin" / binary
    with _installing(prefix):
        if path.exists():
            return path
        npm = shutil.which("npm")
        assert npm, f"npm is needed to install {package}"
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), package], check=True,
                       timeout=900, capture_output=True)
    return path


def install_claude_code() -> Path:
    """The ``claude`` binary of Claude Code (npm ``@anthropic-ai/claude-code``)."""
    return _npm_install(cache_dir() / f"claude-code-{CLAUDE_CODE_VERSION}",
                        f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}", "claude")


def install_codex() -> Path:
    """The ``codex`` binary of Codex CLI (npm ``@openai/codex``; its native binary ships in the package)."""
    return _npm_install(cache_dir() / f"codex-{CODEX_VERSION}", f"@openai/codex@{CODEX_VERSION}", "codex")


def install_opencode() -> Path:
    """The ``opencode`` binary (npm ``opencode-ai``; its native binary ships in the package)."""
    return _npm_install(cache_dir() / f"opencode-{OPENCODE_VERSION}", f"opencode-ai@{OPENCODE_VERSION}", "opencode")


def install_aider() -> Path:
    """The ``aider`` command (PyPI ``aider-chat``), in a cached virtual environment of its own."""
    venv = cache_dir() / f"aider-{AIDER_VERSION}"
    binary = venv / "bin" / "aider"
    with _installing(venv):
        if binary.exists():
            return binary
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"aider-chat=={AIDER_VERSION}"],
                       check=True, timeout=900)
    return binary
