"""``switchyard serve``, ``config check`` and ``--help``, run as real subprocesses."""

from __future__ import annotations

import csv
import io
import json
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cli.support import (
    KEY_RE,
    ServeProcess,
    alive,
    chat,
    child_pids,
    clean_env,
    db_rows,
    port_refuses,
    run_cli,
    serve,
    wait_until,
    write_config,
)
from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeOpenAI


@pytest.fixture
def config(tmp_path: Path, fake_openai: FakeOpenAI) -> Path:
    return write_config(tmp_path / "switchyard.yaml", fake_openai.base_url, UPSTREAM_KEY)


def _data_files(data_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}


def _assert_clean_exit(server: ServeProcess, rc: int) -> None:
    """A server stopped by SIGTERM or Ctrl-C that drained exits 0 (uvicorn re-raises the signal
    it caught; serve turns that into a clean exit, not -15 or click's "Aborted!")."""
    assert rc == 0, server.describe()


# ---------------------------------------------------------------- first start, admin key
def test_first_start_prints_admin_key_once_and_stores_only_its_hash(tmp_path: Path, config: Path) -> None:
    data_dir = tmp_path / "data"
    with serve(tmp_path, data_dir, config=config, name="first") as server:
        keys = KEY_RE.findall(server.stdout)
        assert len(keys) == 1, server.describe()
        admin = keys[0]
        assert server.stdout.count(admin) == 1
        assert admin not in server.stderr, "the admin key leaked into the logs"

        with server.http(admin) as client:
            models = client.get("/v1/models")
            assert models.status_code == 200, models.text
            assert {m["id"] for m in models.json()["data"]} == {"chat", "other", "slow"}
            assert client.get("/admin/keys").status_code == 200  # it is an admin key
        with server.http("sk-sy-" + "x" * 43) as client:
            assert client.get("/v1/models").status_code == 401

        # While running (the WAL is still there): no file holds the secret.
        files = _data_files(data_dir)
        assert {"switchyard.db", "switchyard.db-wal", "secret.key"} <= set(files), sorted(files)
        for name, content in files.items():
            assert admin.encode() not in content, f"{name} holds the admin key in clear"
            assert admin[6:].encode() not in content, f"{name} holds the admin key's body in clear"

    for name, content in _data_files(data_dir).items():
        assert admin.encode() not in content, f"{name} holds the admin key in clear"
    stored = db_rows(data_dir, "SELECT id, name, is_admin, key_hash, prefix FROM api_keys")
    assert len(stored) == 1 and stored[0]["is_admin"] == 1
    assert admin.startswith(stored[0]["prefix"]) and len(stored[0]["prefix"]) < 20

    # Its creation is in the audit log, by the server itself, without the secret.
    audit = run_cli("audit", "--data-dir", data_dir, "--format", "csv", cwd=tmp_path)
    assert audit.returncode == 0, audit
    rows = list(csv.DictReader(io.StringIO(audit.stdout)))
    assert [(r["actor"], r["action"], r["object_id"]) for r in rows] == [("system", "key.create", stored[0]["id"])]
    assert json.loads(rows[0]["details"]) == {"name": "admin", "admin": True, "reason": "first start"}
    assert admin not in audit.stdout and admin[6:] not in audit.stdout

    # Second start on the same data dir: no new key, and the first one still works.
    with serve(tmp_path, data_dir, config=config, name="second") as server:
        assert not KEY_RE.findall(server.stdout), server.describe()
        assert "admin key" not in server.stdout.lower()
        with server.http(admin) as client:
            assert client.get("/v1/models").status_code == 200
    assert len(db_rows(data_dir, "SELECT id FROM api_keys")) == 1


# ---------------------------------------------------------------- static keys
def test_api_key_flags_are_static_keys_and_no_admin_key_is_created(tmp_path: Path, config: Path) -> None:
    data_dir = tmp_path / "data"
    k1, k2 = "static-key-one-0123456789", "static-key-two-0123456789"
    with serve(tmp_path, data_dir, "--api-key", k1, "--api-key", k2, config=config) as server:
        assert not KEY_RE.findall(server.stdout), server.describe()
        for key in (k1, k2):
            with server.http(key) as client:
                assert client.get("/v1/models").status_code == 200
                reply = chat(client, "chat")
                assert reply.status_code == 200, reply.text
                assert reply.json()["choices"][0]["message"]["content"] == "echo: hello there"
        with server.http("static-key-three") as client:
            assert client.get("/v1/models").status_code == 401
        with server.http() as client:
            assert client.get("/v1/models").status_code == 401
        assert k1 not in server.stderr and k2 not in server.stderr
    assert db_rows(data_dir, "SELECT id FROM api_keys") == []
    for name, content in _data_files(data_dir).items():
        assert k1.encode() not in content and k2.encode() not in content, name


def test_api_key_from_environment(tmp_path: Path, config: Path) -> None:
    data_dir = tmp_path / "data"
    k1, k2 = "env-key-one-0123456789", "env-key-two-0123456789"
    with serve(tmp_path, data_dir, config=config, env={"SWITCHYARD_API_KEY": f"{k1},{k2}"}) as server:
        assert not KEY_RE.findall(server.stdout), server.describe()
        for key in (k1, k2):
            with server.http(key) as client:
                assert client.get("/v1/models").status_code == 200
                assert chat(client, "chat").status_code == 200
        with server.http(f"{k1},{k2}") as client:
            assert client.get("/v1/models").status_code == 401
    assert db_rows(data_dir, "SELECT id FROM api_keys") == []


# ---------------------------------------------------------------- --no-auth
@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--host", "0.0.0.0", "--no-auth"], {}),
        (["--host", "0.0.0.0"], {"SWITCHYARD_AUTH": "false"}),
    ],
    ids=["flag", "env"],
)
def test_no_auth_refused_off_loopback(tmp_path: Path, config: Path, args: list[str], env: dict[str, str]) -> None:
    data_dir = tmp_path / "data"
    server = ServeProcess(tmp_path, data_dir, *args, config=config, env=env)
    try:
        rc = server.wait(30)
        assert rc != 0, server.describe()
        message = server.stderr + server.stdout
        assert "authentication" in message.lower(), server.describe()
        assert "0.0.0.0" in message
        assert "Traceback" not in message
        assert not KEY_RE.findall(server.stdout)
        assert "listening" not in message.lower()
    finally:
        server.close()
    # It never bound the port, and touched nothing on disk.
    with socket.socket() as s:
        s.bind(("0.0.0.0", server.port))  # is the port still free?
    assert not data_dir.exists()


def test_no_auth_on_loopback_serves_without_a_key(tmp_path: Path, config: Path) -> None:
    data_dir = tmp_path / "data"
    with serve(tmp_path, data_dir, "--host", "127.0.0.1", "--no-auth", config=config) as server:
        assert not KEY_RE.findall(server.stdout), server.describe()
        with server.http() as client:
            assert client.get("/v1/models").status_code == 200
            reply = chat(client, "chat")
            assert reply.status_code == 200, reply.text
        assert "authentication is off" in server.stderr
    assert db_rows(data_dir, "SELECT id FROM api_keys") == []


# ---------------------------------------------------------------- SIGTERM drain
class _Stream(threading.Thread):
    """A streamed chat completion read line by line in a thread."""

    def __init__(self, url: str, key: str, **body: Any) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "tick tock"}], **body}
        self.lines: list[str] = []
        self.status: int | None = None
        self.request_id: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=30) as client, client.stream(
                "POST", self.url + "/v1/chat/completions", json=self.body,
                headers={"Authorization": f"Bearer {self.key}"},
            ) as resp:
                self.status = resp.status_code
                self.request_id = resp.headers.get("x-request-id")
                for line in resp.iter_lines():
                    if line:
                        self.lines.append(line)
        except BaseException as exc:  # reported by the test, not by pytest's thread hook
            self.error = exc

    def content_chunks(self) -> int:
        return sum(1 for line in self.lines if '"content":"' in line and '"content":""' not in line)


def test_sigterm_drains_in_flight_stream_then_exits(tmp_path: Path, config: Path) -> None:
    data_dir = tmp_path / "data"
    key = "drain-key-0123456789abcdef"
    drain = 20.0
    with serve(tmp_path, data_dir, "--api-key", key, "--drain-timeout", str(drain), config=config) as server:
        # 20 words of slow-stream: ~22 events 0.2 s apart, so ~4.4 s in all.
        stream = _Stream(server.url, key, max_tokens=20)
        stream.start()
        wait_until(lambda: stream.content_chunks() >= 2 or stream.error, 15, what="the first chunks")
        assert stream.error is None, stream.error
        server.sigterm()
        signalled = time.monotonic()

        # New connections are refused soon after SIGTERM, while the stream goes on.
        wait_until(lambda: port_refuses(server.port), 5, what="the listener to close")
        assert stream.is_alive(), "the stream ended as soon as SIGTERM arrived"

        stream.join(drain + 10)
        assert not stream.is_alive()
        assert stream.error is None, f"stream cut: {stream.error!r}"
        assert stream.status == 200
        assert stream.lines[-1] == "data: [DONE]"
        assert stream.content_chunks() == 20

        rc = server.wait(drain + 10)
        assert time.monotonic() - signalled < drain
        assert port_refuses(server.port)

    assert "Traceback" not in server.stderr, server.describe()
    rows = db_rows(data_dir, "SELECT * FROM usage_records WHERE request_id = ?", [stream.request_id])
    assert len(rows) == 1, db_rows(data_dir, "SELECT * FROM usage_records")
    row = rows[0]
    assert (row["status"], row["streamed"], row["model"], row["endpoint"]) == (200, 1, "slow", "chat")
    assert row["completion_tokens"] == 20 and row["estimated"] == 0
    _assert_clean_exit(server, rc)


def test_sigterm_cuts_streams_at_drain_timeout_and_still_records_them(tmp_path: Path, config: Path) -> None:
    data_dir = tmp_path / "data"
    key = "cut-key-0123456789abcdef"
    with serve(tmp_path, data_dir, "--api-key", key, "--drain-timeout", "1", config=config) as server:
        stream = _Stream(server.url, key)  # the whole slow-stream: ~10 s
        stream.start()
        wait_until(lambda: stream.content_chunks() >= 2 or stream.error, 15, what="the first chunks")
        assert stream.error is None, stream.error
        server.sigterm()
        signalled = time.monotonic()
        rc = server.wait(15)
        stopped = time.monotonic() - signalled
        stream.join(10)
        assert not stream.is_alive()

    assert stopped < 6, f"took {stopped:.1f}s to stop with --drain-timeout 1"
    assert "data: [DONE]" not in stream.lines
    assert stream.content_chunks() < 50
    rows = db_rows(data_dir, "SELECT * FROM usage_records WHERE request_id = ?", [stream.request_id])
    assert len(rows) == 1, db_rows(data_dir, "SELECT * FROM usage_records")
    row = rows[0]
    assert row["streamed"] == 1 and row["estimated"] == 1
    assert row["status"] != 200 and row["status"] >= 400
    assert row["completion_tokens"] >= 2
    _assert_clean_exit(server, rc)


def test_ctrl_c_stops_gracefully_and_flushes_usage(tmp_path: Path, config: Path) -> None:
    data_dir = tmp_path / "data"
    key = "sigint-key-0123456789abcdef"
    with serve(tmp_path, data_dir, "--api-key", key, config=config) as server:
        with server.http(key) as client:
            reply = chat(client, "chat")
            assert reply.status_code == 200, reply.text
        server.proc.send_signal(signal.SIGINT)
        rc = server.wait(30)
    assert "Application shutdown complete" in server.stderr, server.describe()
    rows = db_rows(data_dir, "SELECT request_id, status FROM usage_records")
    assert [(r["request_id"], r["status"]) for r in rows] == [(reply.headers["x-request-id"], 200)]
    _assert_clean_exit(server, rc)


# ---------------------------------------------------------------- --workers
def test_workers_serve_and_stop_on_sigterm(tmp_path: Path, config: Path) -> None:
    data_dir = tmp_path / "data"
    key = "workers-key-0123456789abcdef"
    with serve(tmp_path, data_dir, "--api-key", key, "--workers", "2", config=config) as server:
        with server.http(key) as client:
            health = client.get("/health")
            assert health.status_code == 200 and health.json()["status"] == "healthy"
            for _ in range(4):
                reply = chat(client, "chat")
                assert reply.status_code == 200, reply.text
                assert reply.json()["choices"][0]["message"]["content"] == "echo: hello there"
        children = child_pids(server.pid)
        workers = [p for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(workers) == 2, children
        server.sigterm()
        rc = server.wait(30)
        wait_until(lambda: not any(alive(p) for p in children), 10, what="the worker processes to exit")
        assert port_refuses(server.port)
    assert rc == 0, server.describe()
    rows = db_rows(data_dir, "SELECT status, model FROM usage_records")
    assert [(r["status"], r["model"]) for r in rows] == [(200, "chat")] * 4


# ---------------------------------------------------------------- config check
def test_config_check_prints_routing_table(tmp_path: Path, config: Path, fake_openai: FakeOpenAI) -> None:
    result = run_cli("config", "check", "--config", config, cwd=tmp_path)
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert "MODEL" in lines[0] and "BASE URL" in lines[0]
    for alias, upstream in [("chat", "gpt-4o-mini"), ("other", "gpt-4o"), ("slow", "slow-stream")]:
        row = next((line.split() for line in lines if line.split()[:1] == [alias]), None)
        assert row == [alias, "fake", upstream, fake_openai.base_url], result
    assert UPSTREAM_KEY not in result.stdout + result.stderr


def test_config_check_prints_urls_whole(tmp_path: Path) -> None:
    """Long provider names and URLs are printed whole (http://gpu-box:8000 never becomes :80),
    without the password of a URL that carries one."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"models": [
        {"alias": "local-vllm", "provider": "openai", "base_url": "http://gpu-box:8000/v1"},
        {"alias": "behind-proxy", "provider": "openai", "base_url": "http://bob:hunter2-pw@gpu-box:8443/v1"},
    ]}), encoding="utf-8")
    result = run_cli("config", "check", "--config", path, cwd=tmp_path)
    assert result.returncode == 0, result
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["local-vllm"] == ["local-vllm", "openai@http://gpu-box:8000/v1", "local-vllm",
                                  "http://gpu-box:8000/v1"], result
    assert rows["behind-proxy"] == ["behind-proxy", "openai@http://gpu-box:8443/v1", "behind-proxy",
                                    "http://gpu-box:8443/v1"], result
    assert "hunter2" not in result.stdout + result.stderr


BROKEN = {
    "negative-timeout": (
        "providers:\n"
        "  fake:\n"
        "    type: openai\n"
        "    base_url: http://127.0.0.1:9/v1\n"
        "    timeout: -5\n"
        "models:\n"
        "  - alias: a\n"
        "    provider: fake\n",
        ["line 5", "providers.fake.timeout", "greater than 0"],
    ),
    "unknown-provider": (
        "providers:\n"
        "  fake:\n"
        "    type: openai\n"
        "    base_url: http://127.0.0.1:9/v1\n"
        "models:\n"
        "  - alias: a\n"
        "    provider: fake\n"
        "  - alias: b\n"
        "    provider: nope\n",
        ["line 9", "models.1.provider", "nope"],
    ),
    "bad-indentation": (
        "providers:\n"
        "  fake:\n"
        "    type: openai\n"
        "     base_url: http://127.0.0.1:9/v1\n"
        "models:\n"
        "  - alias: a\n"
        "    provider: fake\n",
        ["line 4", "invalid YAML"],
    ),
    "unknown-field": (
        "providers:\n"
        "  fake:\n"
        "    type: openai\n"
        "    base_url: http://127.0.0.1:9/v1\n"
        "models:\n"
        "  - alias: a\n"
        "    provider: fake\n"
        "    temprature: 3\n",
        ["line 8", "models.0.temprature"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_config_check_rejects_broken_files(tmp_path: Path, case: str) -> None:
    text, expected = BROKEN[case]
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    result = run_cli("config", "check", "--config", path, cwd=tmp_path)
    assert result.returncode != 0, result
    for fragment in expected:
        assert fragment in result.stderr, result
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr


def test_serve_refuses_a_broken_config_without_binding(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN["negative-timeout"][0], encoding="utf-8")
    server = ServeProcess(tmp_path, tmp_path / "data", config=path)
    try:
        assert server.wait(30) != 0
        assert "line 5" in server.stderr and "providers.fake.timeout" in server.stderr, server.describe()
        assert not KEY_RE.findall(server.stdout)
    finally:
        server.close()
    assert port_refuses(server.port)


# ---------------------------------------------------------------- --help
SERVE_FLAGS = ["--host", "--port", "--config", "--data-dir", "--workers", "--api-key", "--no-auth",
               "--database-url", "--drain-timeout", "--log-level"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["serve", "keys", "config", "db", "usage"]),
        (["serve"], SERVE_FLAGS),
        (["keys"], ["create", "list", "revoke", "rotate"]),
        (["keys", "create"], ["--model", "--admin", "--config", "--data-dir", "--database-url"]),
        (["config", "check"], ["--config"]),
        (["usage"], ["--since", "--format", "--data-dir"]),
    ],
    ids=["top", "serve", "keys", "keys-create", "config-check", "usage"],
)
def test_help(tmp_path: Path, args: list[str], expected: list[str]) -> None:
    result = run_cli(*args, "--help", cwd=tmp_path)
    assert result.returncode == 0, result
    for word in expected:
        assert word in result.stdout, f"{word} missing from {' '.join(args)} --help:\n{result.stdout}"


def test_version(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0 and "switchyard" in result.stdout, result


@pytest.mark.parametrize(
    ("flag", "field", "default"),
    [("--port", "port", "8080"), ("--workers", "workers", "1"), ("--drain-timeout", "drain_timeout", "30.0"),
     ("--forwarded-allow-ips", "forwarded_allow_ips", "127.0.0.1"), ("--log-level", "log_level", "info")],
)
def test_serve_flags_come_from_settings(tmp_path: Path, flag: str, field: str, default: str) -> None:
    """One source for a setting's help and default: serve's flag says what the Settings field says."""
    from switchyard.settings import Settings

    result = run_cli("serve", "--help", cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result
    text = " ".join(result.stdout.split())  # the help column wraps: compare words, not lines
    entry = text[text.index(f" {flag} "):]
    entry = entry[:entry.index(" --", len(flag) + 2)]  # up to the next option
    description = Settings.model_fields[field].description
    assert description is not None and " ".join(description.split()) in entry, entry
    assert f"[default: {default}]" in entry, entry
