"""What ``switchyard serve`` writes: the models it serves at start (or a warning that there are
none), as readable lines in a terminal and JSON lines otherwise, never with a progress bar among
the JSON. "A terminal" is a real pseudo-terminal here, as a shell gives."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cli.support import KEY_RE, SWITCHYARD, chat, clean_env, serve, wait_until, write_config
from tests.conftest import UPSTREAM_KEY
from tests.e2e.test_bundled_models import OFFLINE
from tests.fakes import FakeOpenAI
from tests.harness import free_port
from tests.local.bundled import minilm_dir, smollm2_gguf

ADMIN = "sk-sy-logs-test-admin-0123456789abcdefghijklmnopq"
TEXT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S+  ")


class TerminalServe:
    """``switchyard serve`` with its stdout and stderr on a pseudo-terminal."""

    def __init__(self, cwd: Path, *args: str | Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [*SWITCHYARD, "serve", "--port", str(self.port), *map(str, args)], cwd=cwd, env=clean_env(env),
            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, start_new_session=True,
        )
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # the last writer closed the terminal
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    @property
    def output(self) -> str:
        return b"".join(self._chunks).decode("utf-8", errors="replace").replace("\r\n", "\n")

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, self.output
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self.url + "/health", timeout=2).status_code == 200
            return False

        wait_until(ready, timeout=60, interval=0.1, what="serve in a terminal to be ready")

    def close(self) -> str:
        """Stop it (SIGTERM, then SIGKILL of its group) and return everything it wrote."""
        if self._master < 0:
            return self.output
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(15)
        self._reader.join(10)
        os.close(self._master)
        self._master = -1
        return self.output


@contextlib.contextmanager
def terminal_serve(cwd: Path, *args: str | Path, env: dict[str, str] | None = None) -> Iterator[TerminalServe]:
    server = TerminalServe(cwd, *args, env=env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _after_listening(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Switchyard listening on "))
    return lines[start + 1:]


@pytest.fixture
def config(tmp_path: Path, fake_openai: FakeOpenAI) -> Path:
    return write_config(tmp_path / "switchyard.yaml", fake_openai.base_url, UPSTREAM_KEY)


def test_start_up_lists_the_models_and_where_they_route(tmp_path: Path, config: Path,
                                                        fake_openai: FakeOpenAI) -> None:
    with serve(tmp_path, tmp_path / "data", "--api-key", ADMIN, config=config) as server:
        records = _json_lines(server.stderr)  # not a terminal: JSON lines
    starts = [r for r in records if r["logger"] == "switchyard.serve"]
    assert starts[0]["msg"] == f"serving 3 models ({config})", starts
    routes = {r["model"]: r for r in starts[1:]}
    assert set(routes) == {"chat", "other", "slow"}
    assert (routes["chat"]["provider"], routes["chat"]["upstream_model"], routes["chat"]["target"]) == \
        ("fake", "gpt-4o-mini", fake_openai.base_url)
    assert f"chat  -> fake (gpt-4o-mini at {fake_openai.base_url})" in routes["chat"]["msg"]
    assert UPSTREAM_KEY not in server.stderr + server.stdout


def test_start_up_names_the_bundled_models(tmp_path: Path) -> None:
    """The README's install with no config file: the bundled models, and the files they load from."""
    with serve(tmp_path, tmp_path / "data", env={**OFFLINE, "HOME": str(tmp_path)}) as server:
        starts = [r for r in _json_lines(server.stderr) if r["logger"] == "switchyard.serve"]
    assert starts[0]["msg"] == "serving 2 models (no config file, the bundled local models)", starts
    targets = {r["model"]: r["target"] for r in starts[1:]}
    assert targets == {"smollm2-135m-instruct": f"llamacpp: {smollm2_gguf()}",
                       "all-minilm-l6-v2": f"bert: {minilm_dir()}"}


def test_start_up_warns_when_no_model_is_configured(tmp_path: Path) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text(yaml.safe_dump({"bundled_models": "off"}), encoding="utf-8")
    with serve(tmp_path, tmp_path / "data", "--api-key", ADMIN, config=config) as server:
        warnings = [r for r in _json_lines(server.stderr) if r["level"] == "warning"]
        with server.http(ADMIN) as client:
            assert chat(client, "anything").status_code == 404
    assert [w["logger"] for w in warnings] == ["switchyard.serve"], warnings
    assert "no models are configured" in warnings[0]["msg"] and "--config FILE" in warnings[0]["msg"]


def test_logs_are_text_in_a_terminal_and_json_when_asked(tmp_path: Path, config: Path) -> None:
    with terminal_serve(tmp_path, "--data-dir", tmp_path / "data", "--config", config, "--api-key", ADMIN) as server:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}) as client:
            reply = client.post("/v1/chat/completions", json={"model": "chat", "messages": [
                {"role": "user", "content": "hello there"}]}, headers={"x-request-id": "tty-probe"})
            assert reply.status_code == 200, reply.text
        wait_until(lambda: "tty-probe" in server.output, timeout=10, what="the access line")
        text = server.close()
    lines = _after_listening(text)
    assert lines and all(TEXT_LINE.match(line) for line in lines if line.strip()), text
    assert not _json_lines(text)
    assert re.search(r"INFO +switchyard\.serve  serving 3 models", text), text
    access = next(line for line in lines if "tty-probe" in line)
    assert "switchyard.access  POST /v1/chat/completions 200 " in access and " ms " in access, access
    assert ADMIN not in text and UPSTREAM_KEY not in text

    for args, env in ((["--log-json"], {}), ([], {"SWITCHYARD_LOG_JSON": "true"})):
        with terminal_serve(tmp_path, "--data-dir", tmp_path / "data", "--config", config, "--api-key", ADMIN,
                            *args, env=env) as server:
            pass
        lines = [line for line in _after_listening(server.output) if line.strip()]
        assert lines and all(line.startswith("{") for line in lines), server.output

    with serve(tmp_path, tmp_path / "data", "--api-key", ADMIN, "--log-text", config=config) as piped:
        pass
    lines = [line for line in _after_listening(piped.stderr) if line.strip()]
    assert lines and all(TEXT_LINE.match(line) for line in lines), piped.stderr


def test_no_progress_bar_among_json_logs_while_a_model_loads(tmp_path: Path) -> None:
    """sentence-transformers (through transformers) draws a tqdm bar while it loads a model, when
    its stderr is a terminal. With JSON logs every line after start-up is one JSON object."""
    env = {**OFFLINE, "HOME": str(tmp_path)}
    with terminal_serve(tmp_path, "--data-dir", tmp_path / "data", "--log-json", env=env) as server:
        admin = KEY_RE.findall(server.output)[0]
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=180) as client:
            reply = client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "hello"})
            assert reply.status_code == 200, reply.text
        wait_until(lambda: "/v1/embeddings" in server.output, timeout=10, what="the access line")
        text = server.close()
    lines = _after_listening(text)
    assert any('"loaded all-minilm-l6-v2' in line for line in lines), text
    assert all(line.startswith("{") and line.endswith("}") for line in lines), text
