"""``switchyard launch``: a coding agent started on a model of a real ``switchyard serve`` (its
upstream a scripted OpenAI fake), with a key scoped to that model.

Claude Code and Codex CLI themselves (installed once from npm into ~/.cache/switchyard-tests)
run one non-interactive turn each. A stand-in client (a small script on PATH named like the
real one, which writes down what it was started with) checks what every launch must do: the
temporary config exists while the client runs and is gone after, the exit status and signals
pass through, and a stored key is reused only while it still works (and nothing is revoked).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.agent_clients import install_aider, install_claude_code, install_codex, install_opencode
from tests.cli.support import (
    KEY_RE,
    SWITCHYARD,
    CliResult,
    ServeProcess,
    clean_env,
    db_rows,
    run_cli,
    serve,
    wait_until,
)
from tests.fakes.scripted_openai import ScriptedOpenAI, Turn

ANSWER = "Launched through Switchyard."
UPSTREAM_KEY = "sk-upstream-launch-0123456789abcdef"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"  # node, for the npm clients; none of the agents is here

STUB = """#!{python}
import json, os, signal, sys, time
out = os.environ["STUB_OUT"]
def record(extra):
    config = os.environ.get("OPENCODE_CONFIG")
    state = {{"argv": sys.argv[1:], "env": {{k: v for k, v in os.environ.items()
              if k.startswith(("OPENCODE", "SWITCHYARD", "OPENAI", "ANTHROPIC", "LITELLM"))}},
             "config": open(config).read() if config else None,
             "config_mode": os.stat(config).st_mode & 0o777 if config else None, **extra}}
    with open(out + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(out + ".tmp", out)
if os.environ.get("STUB_WAIT"):
    def on_term(signum, frame):
        record({{"signal": signum}})
        sys.exit(143)
    signal.signal(signal.SIGTERM, on_term)
    record({{"waiting": True}})
    time.sleep(120)
record({{}})
sys.exit(int(os.environ.get("STUB_EXIT", "0")))
"""


def script(body: dict[str, Any]) -> Turn:
    return Turn(text=ANSWER)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI(script, api_key=UPSTREAM_KEY, models=["qwen-coder"]) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedOpenAI) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("launch")
    config = {
        "providers": {"fake": {"type": "openai", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY}},
        "models": [{"alias": "local-coder", "provider": "fake", "model": "qwen-coder",
                    "capabilities": {"context_length": 200000}},
                   {"alias": "other", "provider": "fake", "model": "qwen-coder"}],
    }
    path = root / "switchyard.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with serve(root, root / "data", config=path) as running:
        yield running


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A user's home of its own: the key store goes to its config dir."""
    path = tmp_path / "home"
    (path / ".config").mkdir(parents=True)
    return path


def user_env(home: Path, path: str = SYSTEM_PATH, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "PATH": path, **extra}


def launch(server: ServeProcess, *args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> CliResult:
    return run_cli("launch", "--data-dir", server.data_dir, *args, cwd=cwd, env=env, timeout=timeout)


def keys_named(server: ServeProcess, name: str) -> list[dict[str, Any]]:
    rows = db_rows(server.data_dir, "SELECT id, prefix, allowed_models, is_admin, active, revoked_at, use_count "
                   "FROM api_keys WHERE name = ? ORDER BY created_at", (name,))
    return [{**dict(r), "allowed_models": json.loads(r["allowed_models"])} for r in rows]


def stored_keys(home: Path) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = json.loads((home / ".config" / "switchyard" / "launch-keys.json").read_text())["keys"]
    return keys


def stub_bin(tmp_path: Path, name: str) -> Path:
    """A directory holding a stand-in client ``name``; it writes what it saw to $STUB_OUT."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(STUB.format(python=sys.executable), encoding="utf-8")
    path.chmod(0o755)
    return bin_dir


def chats_for(upstream: ScriptedOpenAI) -> list[dict[str, Any]]:
    return [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]


# ------------------------------------------------------------------ the agents themselves
@pytest.mark.timeout(900)
def test_claude_code_answers_one_turn_with_a_key_scoped_to_its_model(
        tmp_path: Path, home: Path, server: ServeProcess, upstream: ScriptedOpenAI) -> None:
    claude = install_claude_code()
    work = tmp_path / "work"
    work.mkdir()
    env = user_env(home, f"{claude.parent}:{SYSTEM_PATH}", CLAUDE_CONFIG_DIR=str(home / ".claude"),
                   DISABLE_AUTOUPDATER="1", CLAUDE_CODE_DISABLE_TERMINAL_TITLE="1")
    upstream.reset()
    first = launch(server, "claude", "--model", "local-coder", "--", "-p", "say hello", env=env, cwd=work,
                   timeout=300)
    assert first.returncode == 0, first
    assert ANSWER in first.stdout, first
    assert "Claude Code on local-coder (--model)" in first.stderr and "made now" in first.stderr, first
    [key] = keys_named(server, "launch-claude-local-coder")
    assert key["allowed_models"] == ["local-coder"] and not key["is_admin"] and key["active"]
    bodies = chats_for(upstream)
    assert bodies and all(b["model"] == "qwen-coder" for b in bodies)
    assert KEY_RE.search(first.stdout + first.stderr) is None  # the secret is never printed
    [stored] = stored_keys(home)
    assert stored["id"] == key["id"] and stored["key"].startswith(key["prefix"])
    assert stat.S_IMODE((home / ".config" / "switchyard" / "launch-keys.json").stat().st_mode) == 0o600

    # the second launch uses the same key again (local-coder is the first chat model: the default)
    second = launch(server, "claude", "--", "-p", "say hello again", env=env, cwd=work, timeout=300)
    assert second.returncode == 0, second
    assert ANSWER in second.stdout, second
    assert f"with key launch-claude-local-coder ({key['id']}, reused" in second.stderr, second
    assert "the first chat model" in second.stderr
    [again] = keys_named(server, "launch-claude-local-coder")
    assert again["id"] == key["id"]
    usage = wait_until(lambda: db_rows(server.data_dir, "SELECT DISTINCT key_id FROM usage_records "
                                       "WHERE model = 'local-coder'"), 10, what="usage rows")
    assert [r["key_id"] for r in usage] == [key["id"]]  # every request of both runs came with that key


@pytest.mark.timeout(900)
def test_codex_exec_answers_one_turn_with_a_key_scoped_to_its_model(
        tmp_path: Path, home: Path, server: ServeProcess, upstream: ScriptedOpenAI) -> None:
    codex = install_codex()
    work = tmp_path / "work"
    work.mkdir()
    upstream.reset()
    result = launch(server, "codex", "--model", "other", "--", "exec", "--skip-git-repo-check", "--color", "never",
                    "say hi", env=user_env(home, f"{codex.parent}:{SYSTEM_PATH}"), cwd=work, timeout=300)
    assert result.returncode == 0, result
    assert ANSWER in result.stdout, result
    [key] = keys_named(server, "launch-codex-other")
    assert key["allowed_models"] == ["other"] and not key["is_admin"]
    bodies = chats_for(upstream)
    assert bodies and all(b["model"] == "qwen-coder" for b in bodies)
    assert not (home / ".codex" / "config.toml").exists()  # the user's Codex config is left as it was


@pytest.mark.timeout(900)
def test_opencode_run_answers_one_turn_with_a_key_scoped_to_its_model(
        tmp_path: Path, home: Path, server: ServeProcess, upstream: ScriptedOpenAI) -> None:
    opencode = install_opencode()
    work = tmp_path / "work"
    work.mkdir()
    upstream.reset()
    quiet = {name: "1" for name in ("OPENCODE_DISABLE_MODELS_FETCH", "OPENCODE_DISABLE_AUTOUPDATE",
                                    "OPENCODE_DISABLE_LSP_DOWNLOAD", "OPENCODE_DISABLE_SHARE")}  # no calls home
    result = launch(server, "opencode", "--model", "other", "--", "run", "say hi",
                    env=user_env(home, f"{opencode.parent}:{SYSTEM_PATH}", **quiet), cwd=work, timeout=300)
    assert result.returncode == 0, result
    assert ANSWER in result.stdout, result
    [key] = keys_named(server, "launch-opencode-other")
    assert key["allowed_models"] == ["other"] and not key["is_admin"]
    bodies = chats_for(upstream)
    assert bodies and all(b["model"] == "qwen-coder" for b in bodies)


@pytest.mark.timeout(900)
def test_aider_answers_one_message_with_a_key_scoped_to_its_model(
        tmp_path: Path, home: Path, server: ServeProcess, upstream: ScriptedOpenAI) -> None:
    aider = install_aider()
    work = tmp_path / "work"
    work.mkdir()
    upstream.reset()
    result = launch(server, "aider", "--model", "local-coder", "--", "--message", "say hi", "--yes-always",
                    "--no-git", "--no-pretty", "--no-fancy-input", "--map-tokens", "0", "--no-show-release-notes",
                    env=user_env(home, f"{aider.parent}:{SYSTEM_PATH}"), cwd=work, timeout=300)
    assert result.returncode == 0, result
    assert ANSWER in result.stdout, result
    assert "openai/local-coder" in result.stdout  # aider names the model it runs
    [stored] = stored_keys(home)
    [key] = [k for k in keys_named(server, "launch-aider-local-coder") if k["id"] == stored["id"]]
    assert key["allowed_models"] == ["local-coder"] and not key["is_admin"]
    wait_until(lambda: db_rows(server.data_dir, "SELECT id FROM usage_records WHERE key_id = ?", (key["id"],)), 10,
               what="usage rows of the key")  # aider's requests came with it
    bodies = chats_for(upstream)
    assert bodies and all(b["model"] == "qwen-coder" for b in bodies)


# ------------------------------------------------------------------ errors
def test_a_model_the_server_does_not_have_is_a_clear_error(tmp_path: Path, home: Path,
                                                           server: ServeProcess) -> None:
    result = launch(server, "claude", "--model", "no-such-model", "--dry-run", env=user_env(home), cwd=tmp_path)
    assert result.returncode == 1, result
    assert f"model 'no-such-model' is not served at {server.url}" in result.stderr, result
    assert "its models: local-coder, other" in result.stderr
    assert keys_named(server, "launch-claude-no-such-model") == []


@pytest.mark.parametrize(("client", "install"), [
    ("claude", "npm install -g @anthropic-ai/claude-code"),
    ("codex", "npm install -g @openai/codex"),
    ("opencode", "npm install -g opencode-ai"),
    ("aider", "aider-install"),
])
def test_a_client_that_is_not_installed_names_its_install_command(
        tmp_path: Path, home: Path, server: ServeProcess, client: str, install: str) -> None:
    before = keys_named(server, f"launch-{client}-other")
    result = launch(server, client, "--model", "other", env=user_env(home, str(tmp_path / "empty")), cwd=tmp_path)
    assert result.returncode == 1, result
    assert "is not installed" in result.stderr and install in result.stderr, result
    assert keys_named(server, f"launch-{client}-other") == before  # no key is made for nothing


# ------------------------------------------------------------------ --dry-run
def between(text: str, start: str, end: str = "EOF") -> str:
    head = text.index(start) + len(start)
    return text[head:text.index(end, head)]


def test_opencode_dry_run_shows_its_config_and_makes_no_key(tmp_path: Path, home: Path,
                                                           server: ServeProcess) -> None:
    result = launch(server, "opencode", "--model", "local-coder", "--dry-run", "--", "run", "hi",
                    env=user_env(home), cwd=tmp_path)
    assert result.returncode == 0, result
    out = result.stdout
    assert "export OPENCODE_CONFIG='<temporary dir>/opencode.json'" in out
    assert "export SWITCHYARD_API_KEY='<new key>'" in out
    assert out.rstrip().endswith("opencode run hi")
    config = json.loads(between(out, "<<'EOF'\n"))
    assert config["provider"]["switchyard"] == {
        "npm": "@ai-sdk/openai-compatible", "name": "Switchyard",
        "options": {"baseURL": server.url + "/v1", "apiKey": "{env:SWITCHYARD_API_KEY}"},
        "models": {"local-coder": {"name": "local-coder"}},
    }
    assert config["model"] == config["small_model"] == "switchyard/local-coder"
    assert "a new key launch-opencode-local-coder scoped to local-coder (not made: --dry-run)" in result.stderr
    assert "opencode is not installed (npm install -g opencode-ai)" in result.stderr
    assert keys_named(server, "launch-opencode-local-coder") == []


def test_claude_dry_run_shows_its_environment(tmp_path: Path, home: Path, server: ServeProcess) -> None:
    result = launch(server, "claude", "--model", "local-coder", "--print-env", "--", "-p", "hi",
                    env=user_env(home), cwd=tmp_path)
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == "unset ANTHROPIC_API_KEY"
    assert f"export ANTHROPIC_BASE_URL={server.url}" in lines
    assert "export ANTHROPIC_AUTH_TOKEN='<new key>'" in lines
    for name in ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL",
                 "ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_SMALL_FAST_MODEL", "CLAUDE_CODE_SUBAGENT_MODEL"):
        assert f"export {name}=local-coder" in lines
    assert "export CLAUDE_CODE_MAX_CONTEXT_TOKENS=200000" in lines  # the model's window, from /v1/models
    assert "export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1" in lines
    assert lines[-1] == "claude -p hi"


def test_aider_dry_run_from_another_machine(tmp_path: Path, home: Path, server: ServeProcess) -> None:
    """--url and the admin key from the environment (no data dir of the server's)."""
    token = json.loads((server.data_dir / "local-admin.json").read_text())["token"]
    env = user_env(home, SWITCHYARD_URL=server.url, SWITCHYARD_ADMIN_KEY=token)
    result = run_cli("launch", "aider", "--dry-run", "--model", "local-coder", "--data-dir", tmp_path / "elsewhere",
                     cwd=tmp_path, env=env)
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert f"export OPENAI_API_BASE={server.url}/v1" in lines
    assert "export OPENAI_API_KEY='<new key>'" in lines
    command = shlex.split(lines[-1])
    assert command[:3] == ["aider", "--model", "openai/local-coder"]
    for flag in ("--no-analytics", "--no-check-update", "--no-show-model-warnings"):
        assert flag in command
    assert command[command.index("--model-metadata-file") + 1] == "<temporary dir>/model-metadata.json"
    metadata = json.loads(between(result.stdout, "<<'EOF'\n"))
    assert metadata == {"openai/local-coder": {"max_input_tokens": 200000, "max_tokens": 200000,
                                               "litellm_provider": "openai", "mode": "chat"}}


# ------------------------------------------------------------------ the launch itself (a stand-in client)
def test_the_client_gets_its_config_and_key_and_its_exit_status_passes_through(
        tmp_path: Path, home: Path, server: ServeProcess) -> None:
    out = tmp_path / "stub.json"
    env = user_env(home, f"{stub_bin(tmp_path, 'opencode')}:{SYSTEM_PATH}", STUB_OUT=str(out), STUB_EXIT="7")
    result = launch(server, "opencode", "--model", "local-coder", "--", "run", "--print-logs", env=env, cwd=tmp_path)
    assert result.returncode == 7, result
    seen = json.loads(out.read_text())
    assert seen["argv"] == ["run", "--print-logs"]
    secret = seen["env"]["SWITCHYARD_API_KEY"]
    assert KEY_RE.fullmatch(secret)
    config = json.loads(seen["config"])
    assert config["provider"]["switchyard"]["options"]["apiKey"] == "{env:SWITCHYARD_API_KEY}"  # not the secret
    assert seen["config_mode"] == 0o600
    assert not Path(seen["env"]["OPENCODE_CONFIG"]).parent.exists()  # removed once the client exited
    [key] = keys_named(server, "launch-opencode-local-coder")
    assert secret.startswith(key["prefix"]) and key["allowed_models"] == ["local-coder"]

    # the key works for that model, and only that one
    with server.http(secret) as http:
        assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["local-coder"]
        assert http.post("/v1/chat/completions", json={"model": "other", "messages": [
            {"role": "user", "content": "hi"}]}).status_code == 404

    # a revoked key is not used again: a new one is made (and the dry run shows it masked)
    assert run_cli("keys", "revoke", key["id"], "--data-dir", server.data_dir, cwd=tmp_path).returncode == 0
    env["STUB_EXIT"] = "0"
    again = launch(server, "opencode", "--model", "local-coder", env=env, cwd=tmp_path)
    assert again.returncode == 0, again
    assert f"not using the stored key launch-opencode-local-coder again: {key['id']} was revoked" in again.stderr
    new_secret = json.loads(out.read_text())["env"]["SWITCHYARD_API_KEY"]
    old, new = keys_named(server, "launch-opencode-local-coder")
    assert old["id"] == key["id"] and new_secret.startswith(new["prefix"]) and new["active"]
    [stored] = stored_keys(home)
    assert stored["id"] == new["id"] and stored["key"] == new_secret
    shown = launch(server, "opencode", "--model", "local-coder", "--dry-run", env=env, cwd=tmp_path)
    assert f"export SWITCHYARD_API_KEY='{new_secret[:10]}…'" in shown.stdout, shown
    assert new_secret not in shown.stdout + shown.stderr

    # a key given a new secret elsewhere is not used again, and not revoked either
    assert run_cli("keys", "rotate", new["id"], "--data-dir", server.data_dir, cwd=tmp_path).returncode == 0
    third = launch(server, "opencode", "--model", "local-coder", env=env, cwd=tmp_path)
    assert third.returncode == 0, third
    assert "was given a new secret (rotated)" in third.stderr
    keys = keys_named(server, "launch-opencode-local-coder")
    assert len(keys) == 3 and keys[1]["active"] and keys[1]["revoked_at"] is None


def test_a_signal_sent_to_launch_reaches_the_client(tmp_path: Path, home: Path, server: ServeProcess) -> None:
    out = tmp_path / "stub.json"
    env = user_env(home, f"{stub_bin(tmp_path, 'aider')}:{SYSTEM_PATH}", STUB_OUT=str(out), STUB_WAIT="1")
    proc = subprocess.Popen([*SWITCHYARD, "launch", "aider", "--data-dir", str(server.data_dir)], cwd=tmp_path,
                            env=clean_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: out.exists(), 30, what="the client to start")
        seen = json.loads(out.read_text())
        assert seen["argv"][:2] == ["--model", "openai/local-coder"]
        assert seen["env"]["OPENAI_API_BASE"] == server.url + "/v1"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stderr
    assert json.loads(out.read_text())["signal"] == signal.SIGTERM
    assert os.path.exists(out)


# ------------------------------------------------------------------ which model, which key
def test_without_model_the_servers_default_model_is_taken(tmp_path: Path, home: Path, server: ServeProcess) -> None:
    token = json.loads((server.data_dir / "local-admin.json").read_text())["token"]
    with server.http(token) as http:
        made = http.post("/admin/models", json={"alias": "house-coder", "provider": "fake", "model": "qwen-coder",
                                                "default": True})
        assert made.status_code == 201, made.text
        try:
            result = launch(server, "codex", "--dry-run", "--", "exec", "hi", env=user_env(home), cwd=tmp_path)
        finally:
            assert http.delete(f"/admin/models/{made.json()['id']}").status_code == 200
    assert result.returncode == 0, result
    assert "Codex CLI on house-coder (the server's default model; pick another with --model)" in result.stderr
    command = shlex.split(result.stdout.splitlines()[-1])
    overrides = [command[i + 1] for i, token in enumerate(command) if token == "-c"]
    assert overrides == [
        'model="house-coder"', 'model_provider="switchyard"',
        f'model_providers.switchyard={{ name = "Switchyard", base_url = "{server.url}/v1", '
        'env_key = "SWITCHYARD_API_KEY", wire_api = "responses" }',
    ]
    assert command[-2:] == ["exec", "hi"]
    assert "export SWITCHYARD_API_KEY='<new key>'" in result.stdout


def test_a_server_without_authentication_gets_no_key(tmp_path: Path, home: Path, upstream: ScriptedOpenAI) -> None:
    config = {"providers": {"fake": {"type": "openai", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY}},
              "models": [{"alias": "open-coder", "provider": "fake", "model": "qwen-coder"}]}
    path = tmp_path / "switchyard.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with serve(tmp_path, tmp_path / "data", "--no-auth", config=path) as open_server:
        result = launch(open_server, "opencode", "--dry-run", env=user_env(home), cwd=tmp_path)
        assert result.returncode == 0, result
        assert "with no key (the server runs without authentication)" in result.stderr
        assert "export SWITCHYARD_API_KEY=switchyard" in result.stdout.splitlines()
        assert db_rows(open_server.data_dir, "SELECT id FROM api_keys") == []
