"""Running the real ``switchyard`` command as a subprocess, for the CLI tests.

Every process gets a clean environment (no inherited ``SWITCHYARD_*``), runs in the test's
tmp_path (so no stray ``.env`` is read), has its own ``--data-dir`` and writes stdout and
stderr to files. Servers are always stopped: SIGTERM, then SIGKILL of their process group.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from tests.harness import free_port

__all__ = [
    "KEY_RE",
    "CliResult",
    "ServeProcess",
    "alive",
    "chat",
    "child_pids",
    "clean_env",
    "db_rows",
    "port_refuses",
    "run_cli",
    "serve",
    "wait_until",
    "write_config",
]

SWITCHYARD = [sys.executable, "-m", "switchyard"]
KEY_RE = re.compile(r"sk-sy-[A-Za-z0-9_-]{43,}")
START_TIMEOUT = 30.0


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(extra or {})
    return env


def write_config(path: Path, upstream_url: str, upstream_key: str, **extra: Any) -> Path:
    """A YAML config: provider ``fake`` (type openai) and a few aliases on it."""
    config: dict[str, Any] = {
        "providers": {"fake": {"type": "openai", "base_url": upstream_url, "api_key": upstream_key}},
        "models": [
            {"alias": "chat", "provider": "fake", "model": "gpt-4o-mini"},
            {"alias": "other", "provider": "fake", "model": "gpt-4o"},
            {"alias": "slow", "provider": "fake", "model": "slow-stream"},
        ],
        **extra,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def __repr__(self) -> str:
        return f"<rc={self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}>"


def run_cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> CliResult:
    """Run ``switchyard ARGS`` to completion and capture its output."""
    proc = subprocess.run(
        [*SWITCHYARD, *map(str, args)], cwd=cwd, env=clean_env(env), capture_output=True, text=True,
        timeout=timeout, check=False,
    )
    return CliResult(proc)


def wait_until(predicate: Any, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_refuses(port: int) -> bool:
    """True when nothing accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def child_pids(pid: int) -> set[int]:
    """Direct children of ``pid`` (from /proc)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.add(int(entry.name))
    return children


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def db_rows(data_dir: Path, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    with contextlib.closing(sqlite3.connect(data_dir / "switchyard.db", timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, params).fetchall()


class ServeProcess:
    """``switchyard serve`` in a subprocess on a free loopback port."""

    def __init__(self, workdir: Path, data_dir: Path, *args: str | Path, config: Path | None = None,
                 env: dict[str, str] | None = None, port: int | None = None, name: str = "serve") -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        cmd = [*SWITCHYARD, "serve", "--port", str(self.port), "--data-dir", str(data_dir)]
        if config is not None:
            cmd += ["--config", str(config)]
        cmd += [str(a) for a in args]
        self._out: IO[bytes] = open(self.stdout_path, "wb")
        self._err: IO[bytes] = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=workdir, env=clean_env(env), stdout=self._out, stderr=self._err, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def describe(self) -> str:
        return f"rc={self.proc.poll()}\n--- stdout\n{self.stdout}\n--- stderr (tail)\n{self.stderr[-4000:]}"

    def wait_ready(self, timeout: float = START_TIMEOUT) -> ServeProcess:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"switchyard serve exited before it was ready\n{self.describe()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"switchyard serve not ready after {timeout}s\n{self.describe()}")
            time.sleep(0.05)

    def http(self, key: str | None = None, timeout: float = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def sigterm(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Stop the server whatever state it is in, and release its files."""
        try:
            if self.proc.poll() is None:
                self.sigterm()
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group we started: workers included
            if self.proc.poll() is None:
                self.proc.wait(15)
        finally:
            self._out.close()
            self._err.close()


@contextlib.contextmanager
def serve(
    workdir: Path, data_dir: Path, *args: str | Path, ready: bool = True, **kwargs: Any
) -> Iterator[ServeProcess]:
    server = ServeProcess(workdir, data_dir, *args, **kwargs)
    try:
        if ready:
            server.wait_ready()
        yield server
    finally:
        server.close()


def chat(client: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], **extra}
    return client.post("/v1/chat/completions", json=body)
