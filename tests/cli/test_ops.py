"""``switchyard status`` and ``switchyard stop`` against real ``switchyard serve`` processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cli.support import (
    KEY_RE,
    CliResult,
    ServeProcess,
    alive,
    chat,
    child_pids,
    port_refuses,
    run_cli,
    serve,
    wait_until,
)
from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeOllama, FakeOpenAI
from tests.harness import free_port

ADMIN = "sk-sy-ops-test-admin-0123456789abcdefghijklmnopq"


@pytest.mark.parametrize("command", ["status", "stop", "doctor", "init"])
def test_help(tmp_path: Path, command: str) -> None:
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result
    assert "Usage: python -m switchyard " + command in result.stdout
    text = " ".join(result.stdout.split())
    assert "Exit status" in text or command == "init"


# ---------------------------------------------------------------- status
def _config(path: Path, fake_openai: FakeOpenAI, fake_ollama: FakeOllama, providers: dict[str, object] | None = None,
            **extra: object) -> Path:
    config = {
        "providers": {
            "fake": {"type": "openai", "base_url": fake_openai.base_url, "api_key": UPSTREAM_KEY},
            "ollama": {"type": "ollama", "base_url": fake_ollama.base_url, "prefix_routing": True},
            **(providers or {}),
        },
        "models": [
            {"alias": "chat", "provider": "fake", "model": "gpt-4o-mini"},
            {"alias": "broken", "provider": "fake", "model": "error-500"},
            {"alias": "busy", "provider": "fake", "model": "error-503"},
        ],
        **extra,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def test_status_of_a_running_server(tmp_path: Path, fake_openai: FakeOpenAI, fake_ollama: FakeOllama) -> None:
    config = _config(tmp_path / "switchyard.yaml", fake_openai, fake_ollama)
    data = tmp_path / "data"
    with serve(tmp_path, data, "--api-key", ADMIN, config=config) as server, server.http(ADMIN) as client:
        assert chat(client, "broken").status_code >= 500
        assert chat(client, "busy").status_code >= 500
        assert chat(client, "ollama/status-probe:7b").status_code == 200  # loads it in (fake) Ollama
        assert chat(client, "chat").status_code == 200

        # The key comes from SWITCHYARD_API_KEY (through Settings), the URL from --config's port
        # (the default port is overridden on serve's command line, so pass --url here).
        result = run_cli("status", "--url", server.url, "--config", config, cwd=tmp_path,
                         env={"SWITCHYARD_API_KEY": ADMIN})
        assert result.returncode == 0, result
        out = result.stdout
        assert f"at {server.url}: healthy, ready" in out
        assert f"pid {server.pid}, up " in out  # one process: a gateway of upstreams only is not supervised
        assert "models (3): chat, broken, busy" in out
        assert "fake  openai  " + fake_openai.base_url in out
        assert "ollama  ollama  " + fake_ollama.base_url in out
        loaded = next(line for line in out.splitlines() if "loaded:" in line)  # the shared fake may hold more
        assert "status-probe:7b" in loaded, out
        lines = out.splitlines()
        errors = lines.index(next(line for line in lines if line.startswith("recent errors")))
        assert " busy via fake" in lines[errors + 1], out  # newest first
        assert " broken via fake" in lines[errors + 2], out
        assert "[request " in lines[errors + 1]
        assert ADMIN not in out + result.stderr

        as_json = run_cli("status", "--url", server.url, "--api-key", ADMIN, "--json", cwd=tmp_path)
        assert as_json.returncode == 0, as_json
        payload = json.loads(as_json.stdout)
        assert payload["pid"] == server.pid
        assert payload["worker_pid"] == server.pid and not child_pids(server.pid)
        assert (payload["restarts"], payload["last_crash"]) == (0, None)
        assert [e["model"] for e in payload["recent_errors"]] == ["busy", "broken"]

        # No key, a non-admin key, a wrong key: healthy, but details need an admin key.
        created = run_cli("keys", "create", "reader", "--data-dir", data, cwd=tmp_path)
        reader = KEY_RE.findall(created.stdout)[0]
        for args, why in (([], "no key was given"), (["--api-key", reader], "not an admin key"),
                          (["--api-key", "sk-sy-wrong"], "refused")):

            def refused(args: list[str] = args, why: str = why) -> CliResult | None:
                # the server learns of the new key within a second; until then it is refused
                result = run_cli("status", "--url", server.url, *args, cwd=tmp_path)
                return result if why in result.stderr else None

            denied = wait_until(refused, timeout=10, interval=0.2, what=f"status refused: {why}")
            assert denied.returncode == 2, denied
            assert "need an admin key" in denied.stderr
            assert f"at {server.url}: healthy" in denied.stderr


def test_status_reports_unreachable_upstreams_and_exits_1(tmp_path: Path, fake_openai: FakeOpenAI,
                                                           fake_ollama: FakeOllama) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    port = free_port()
    config = _config(tmp_path / "switchyard.yaml", fake_openai, fake_ollama, port=port, default_provider="gone",
                     providers={"gone": {"type": "openai", "base_url": dead, "cooldown_failures": 1}})
    with serve(tmp_path, tmp_path / "data", "--api-key", ADMIN, config=config, port=port) as server:
        result = run_cli("status", "--config", config, "--api-key", ADMIN, cwd=tmp_path)  # URL from the config
        assert result.returncode == 1, result
        assert f"at http://127.0.0.1:{port}: healthy, NOT READY" in result.stdout
        assert "not ready: upstream:gone" in result.stdout
        assert f"gone  openai  {dead}  [default]  UNREACHABLE: Could not connect" in result.stdout
        assert "recent errors: none" in result.stdout
        assert "breaker" not in result.stdout

        with server.http(ADMIN) as client:  # the one upstream of the default model fails twice: panic
            assert [chat(client, "any-model").status_code for _ in range(2)] == [502, 502]
        result = run_cli("status", "--config", config, "--api-key", ADMIN, cwd=tmp_path)
        assert "      breaker gone: cooling down, serving anyway (panic: nothing else can) (" in result.stdout


def test_status_over_https(tmp_path: Path, fake_openai: FakeOpenAI, fake_ollama: FakeOllama) -> None:
    """With ssl_certfile configured, status talks HTTPS and accepts the server's own certificate
    (issued for a public name, not 127.0.0.1); a given --url is verified against the system's CAs."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a certificate")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-keyout", "key.pem", "-out", "cert.pem", "-subj", "/CN=gw.example.test"],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )
    port = free_port()
    config = _config(tmp_path / "switchyard.yaml", fake_openai, fake_ollama, port=port,
                     ssl_certfile=str(tmp_path / "cert.pem"), ssl_keyfile=str(tmp_path / "key.pem"))
    server = ServeProcess(tmp_path, tmp_path / "data", "--api-key", ADMIN, config=config, port=port)
    try:
        def status_ok() -> CliResult | None:
            assert server.proc.poll() is None, server.describe()
            result = run_cli("status", "--config", config, "--api-key", ADMIN, cwd=tmp_path)
            return result if result.returncode == 0 else None

        result = wait_until(status_ok, timeout=30, interval=0.2, what="status over HTTPS")
        assert f"at https://127.0.0.1:{port}: healthy, ready" in result.stdout

        given = run_cli("status", "--url", f"https://127.0.0.1:{port}", "--api-key", ADMIN, cwd=tmp_path)
        assert given.returncode == 1, given
        assert "cannot verify the TLS certificate" in given.stderr and "--insecure" in given.stderr
        insecure = run_cli("status", "--url", f"https://127.0.0.1:{port}", "--api-key", ADMIN, "--insecure",
                           cwd=tmp_path)
        assert insecure.returncode == 0, insecure
    finally:
        server.close()


def test_status_when_nothing_runs(tmp_path: Path) -> None:
    port = free_port()
    result = run_cli("status", "--url", f"http://127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1, result
    assert f"switchyard is not running at http://127.0.0.1:{port}" in result.stderr

    config = tmp_path / "c.yaml"
    config.write_text(f"port: {port}\n")
    result = run_cli("status", "--config", config, cwd=tmp_path)
    assert result.returncode == 1, result
    assert f"not running at http://127.0.0.1:{port}" in result.stderr


# ---------------------------------------------------------------- stop
def test_stop_a_background_server(tmp_path: Path, fake_openai: FakeOpenAI, fake_ollama: FakeOllama) -> None:
    config = _config(tmp_path / "switchyard.yaml", fake_openai, fake_ollama)
    data = tmp_path / "data"
    with serve(tmp_path, data, "--api-key", ADMIN, config=config) as server:
        assert (data / "switchyard.pid").read_text().splitlines() == [str(server.pid), server.url]
        result = run_cli("stop", "--data-dir", data, cwd=tmp_path)
        assert result.returncode == 0, result
        assert f"stopped switchyard (pid {server.pid})" in result.stdout
        assert server.wait(10) == 0, server.describe()  # a drained, clean exit
        assert not (data / "switchyard.pid").exists()

    again = run_cli("stop", "--data-dir", data, cwd=tmp_path)
    assert again.returncode == 1, again
    assert "switchyard is not running" in again.stderr
    assert "no pid file" in again.stderr


def test_a_second_serve_on_the_same_data_dir_refuses_and_stop_stops_the_first(
        tmp_path: Path, fake_openai: FakeOpenAI, fake_ollama: FakeOllama) -> None:
    config = _config(tmp_path / "switchyard.yaml", fake_openai, fake_ollama)
    data = tmp_path / "data"
    pid_file = data / "switchyard.pid"
    with serve(tmp_path, data, "--api-key", ADMIN, config=config, name="first") as first:
        before = pid_file.read_bytes(), pid_file.stat().st_ino
        port = free_port()
        second = run_cli("serve", "--port", port, "--data-dir", data, "--config", config, "--api-key", ADMIN,
                         cwd=tmp_path, timeout=60)
        assert second.returncode == 1, second
        assert f"switchyard is already running from {data} (pid {first.pid}, {first.url})" in second.stderr
        assert f"switchyard stop --data-dir {data}" in second.stderr
        assert "listening" not in second.stdout + second.stderr
        assert port_refuses(port)
        assert (pid_file.read_bytes(), pid_file.stat().st_ino) == before  # the first's file, untouched

        with first.http(ADMIN) as client:  # the first still serves
            assert chat(client, "chat").status_code == 200
        stopped = run_cli("stop", "--data-dir", data, cwd=tmp_path)
        assert stopped.returncode == 0, stopped
        assert f"stopped switchyard (pid {first.pid})" in stopped.stdout
        assert first.wait(15) == 0, first.describe()
        assert not pid_file.exists()


def test_a_killed_server_leaves_a_pid_file_that_the_next_serve_takes_over(
        tmp_path: Path, fake_openai: FakeOpenAI, fake_ollama: FakeOllama) -> None:
    config = _config(tmp_path / "switchyard.yaml", fake_openai, fake_ollama)
    data = tmp_path / "data"
    with serve(tmp_path, data, "--api-key", ADMIN, config=config, name="killed") as killed:
        killed.proc.kill()
        killed.wait(15)
    assert (data / "switchyard.pid").read_text().splitlines()[0] == str(killed.pid)  # stale: nobody holds it
    with serve(tmp_path, data, "--api-key", ADMIN, "--workers", "2", config=config, name="next") as server:
        assert (data / "switchyard.pid").read_text().splitlines() == [str(server.pid), server.url]
        refused = run_cli("serve", "--port", free_port(), "--data-dir", data, "--config", config,
                          "--api-key", ADMIN, cwd=tmp_path, timeout=60)
        assert refused.returncode == 1, refused  # the supervisor of the workers holds the lock
        assert f"(pid {server.pid}, {server.url})" in refused.stderr
        stopped = run_cli("stop", "--data-dir", data, cwd=tmp_path)
        assert stopped.returncode == 0, stopped
        assert f"stopped switchyard (pid {server.pid})" in stopped.stdout
        assert server.wait(30) == 0, server.describe()


def test_stop_with_nothing_running(tmp_path: Path) -> None:
    result = run_cli("stop", "--data-dir", tmp_path / "nowhere", cwd=tmp_path)
    assert result.returncode == 1, result
    assert "switchyard is not running" in result.stderr


def test_stop_removes_a_stale_pid_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pid_file = data / "switchyard.pid"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file.write_text(f"{dead.pid}\n")
    result = run_cli("stop", "--data-dir", data, cwd=tmp_path)
    assert result.returncode == 1, result
    assert f"process {dead.pid} is gone; removed the stale pid file" in result.stderr
    assert not pid_file.exists()

    pid_file.write_text("garbage\n")
    result = run_cli("stop", "--data-dir", data, cwd=tmp_path)
    assert result.returncode == 1, result
    assert "damaged pid file" in result.stderr
    assert not pid_file.exists()


def test_stop_leaves_other_programs_alone(tmp_path: Path) -> None:
    """A pid file whose pid now belongs to another program: nothing is signalled."""
    data = tmp_path / "data"
    data.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (data / "switchyard.pid").write_text(f"{other.pid}\n")
        result = run_cli("stop", "--data-dir", data, cwd=tmp_path)
        assert result.returncode == 1, result
        assert f"pid {other.pid}" in result.stderr and "another program" in result.stderr
        assert other.poll() is None and alive(other.pid)
        assert not (data / "switchyard.pid").exists()
    finally:
        other.kill()
        other.wait()


STUBBORN = """
import fcntl, os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)  # as the server does, for its whole life
os.write(fd, f"{os.getpid()}\\nhttp://127.0.0.1:9\\n".encode())
print("ready", flush=True)
time.sleep(120)
"""


def test_stop_times_out_then_force_kills(tmp_path: Path) -> None:
    """A server that does not exit within --timeout: exit 1 and say so; --force then SIGKILLs it.
    (A stand-in that ignores SIGTERM and holds the pid file's lock, as a server does.)"""
    data = tmp_path / "data"
    data.mkdir()
    stubborn = subprocess.Popen([sys.executable, "-c", STUBBORN, str(data / "switchyard.pid")],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
        result = run_cli("stop", "--data-dir", data, "--timeout", "0.5", cwd=tmp_path)
        assert result.returncode == 1, result
        assert "still running after 0.5s" in result.stderr and "--force" in result.stderr
        assert stubborn.poll() is None
        assert (data / "switchyard.pid").exists()

        result = run_cli("stop", "--data-dir", data, "--timeout", "0.5", "--force", cwd=tmp_path)
        assert result.returncode == 0, result
        assert "killed switchyard" in result.stdout
        assert stubborn.wait(10) == -9
        assert not (data / "switchyard.pid").exists()
    finally:
        stubborn.kill()
        stubborn.wait()
        if stubborn.stdout is not None:
            stubborn.stdout.close()
