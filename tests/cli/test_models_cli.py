"""``switchyard models``: pull into a (fake) Ollama and from an unreachable hub, and list, ps,
load and unload against a running server whose alias ``qwen`` is served by that Ollama."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.cli.support import run_cli
from tests.fakes import FakeOllama
from tests.harness import RunningServer, free_port, make_key, run_server
from tests.local.bundled import minilm_dir

LIBRARY = ["qwen2.5:0.5b", "llama3.2:1b", "all-minilm"]


@pytest.fixture(scope="module")
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models=["qwen2.5:0.5b"], library=LIBRARY) as fake:
        yield fake


def config(path: Path, providers: dict[str, object], **extra: object) -> Path:
    path.write_text(yaml.safe_dump({"providers": providers, **extra}, sort_keys=False), encoding="utf-8")
    return path


def tags(fake: FakeOllama) -> list[str]:
    return [m["name"] for m in httpx.get(fake.base_url + "/api/tags", timeout=5).json()["models"]]


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert lines and lines[-1].startswith("Error: "), stderr
    return lines[-1]


@pytest.mark.parametrize("command", ["list", "ps", "load", "unload", "pull"])
def test_help(tmp_path: Path, command: str) -> None:
    result = run_cli("models", command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result
    assert f"Usage: python -m switchyard models {command}" in result.stdout


# ---------------------------------------------------------------- pull into Ollama
def test_pull_into_ollama_shows_progress_bars(tmp_path: Path, ollama: FakeOllama) -> None:
    cfg = config(tmp_path / "switchyard.yaml", {"ollama": {"type": "ollama", "base_url": ollama.base_url}})
    assert "llama3.2:1b" not in tags(ollama)

    result = run_cli("models", "pull", "llama3.2:1b", "--config", cfg, "--data-dir", tmp_path / "data",
                     cwd=tmp_path)

    assert result.returncode == 0, result
    assert result.stdout.strip() == f"pulled llama3.2:1b into ollama ({ollama.base_url})"
    pulls = [r.body for r in ollama.requests if r.path == "/api/pull"]
    assert pulls[-1] == {"model": "llama3.2:1b", "stream": True}
    assert "llama3.2:1b" in tags(ollama)
    # stderr: the statuses in order, and a finished bar per layer between them
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    assert lines[0] == "pulling manifest" and lines[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    bars = lines[1:-3]
    assert len(bars) == 4 and all(line.startswith("pulling ") and "━" in line for line in bars)
    weights = bars[0].split()  # pulling <digest> <bar> <done>/<total> MB ...
    assert len(weights[1]) == 12
    done, total = weights[3].split("/")
    assert done == total and float(total) > 100 and weights[4] == "MB"  # the weights: whole, and in MB
    assert "120/120 bytes" in bars[3]


def test_pull_as_json_lines(tmp_path: Path, ollama: FakeOllama) -> None:
    cfg = config(tmp_path / "switchyard.yaml", {"ollama": {"type": "ollama", "base_url": ollama.base_url}})
    result = run_cli("models", "pull", "all-minilm", "--json", "--config", cfg, cwd=tmp_path)
    assert result.returncode == 0, result
    progress = [json.loads(line) for line in result.stdout.splitlines()]
    assert progress[0] == {"status": "pulling manifest"} and progress[-1] == {"status": "success"}
    layer = [p for p in progress if "digest" in p]
    assert layer and layer[-1]["completed"] == layer[-1]["total"]
    assert "all-minilm:latest" in tags(ollama)


def test_pull_picks_the_provider(tmp_path: Path, ollama: FakeOllama) -> None:
    with FakeOllama(library=LIBRARY) as other:
        cfg = config(tmp_path / "switchyard.yaml", {
            "openai": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"},
            "ollama": {"type": "ollama", "base_url": ollama.base_url},
            "gpu": {"type": "ollama", "base_url": other.base_url},
        })
        result = run_cli("models", "pull", "qwen2.5:0.5b", "--provider", "gpu", "--config", cfg, cwd=tmp_path)
        assert result.returncode == 0, result
        assert result.stdout.strip() == f"pulled qwen2.5:0.5b into gpu ({other.base_url})"
        assert [r.body["model"] for r in other.requests if r.path == "/api/pull"] == ["qwen2.5:0.5b"]

        wrong = run_cli("models", "pull", "qwen2.5:0.5b", "--provider", "openai", "--config", cfg, cwd=tmp_path)
        assert wrong.returncode == 1
        assert "no enabled Ollama provider named 'openai' (Ollama providers: ollama, gpu)" in one_line_error(
            wrong.stderr)


def test_pull_of_a_model_the_registry_lacks(tmp_path: Path, ollama: FakeOllama) -> None:
    cfg = config(tmp_path / "switchyard.yaml", {"ollama": {"type": "ollama", "base_url": ollama.base_url}})
    result = run_cli("models", "pull", "no-such-model:7b", "--config", cfg, cwd=tmp_path)
    assert result.returncode == 1, result
    error = one_line_error(result.stderr)
    assert error == (f"Error: cannot pull no-such-model:7b into ollama ({ollama.base_url}): Ollama's registry has "
                     "no model 'no-such-model:7b'")
    assert result.stdout == "" and "no-such-model:7b" not in tags(ollama)


def test_pull_when_ollama_is_down(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    cfg = config(tmp_path / "switchyard.yaml", {"ollama": {"type": "ollama", "base_url": url}})
    result = run_cli("models", "pull", "qwen2.5:0.5b", "--config", cfg, cwd=tmp_path)
    assert result.returncode == 1
    assert one_line_error(result.stderr) == (
        f"Error: cannot pull qwen2.5:0.5b: Ollama is not reachable at {url} (provider 'ollama' in {cfg}): "
        "is it running there?")


def test_pull_with_no_ollama_configured_says_so(tmp_path: Path) -> None:
    """An Ollama model name with no Ollama provider: the cause is the missing provider (and a
    missing --config), not the name."""
    result = run_cli("models", "pull", "qwen2.5:3b", "--data-dir", tmp_path / "data", cwd=tmp_path)
    assert result.returncode == 1
    assert one_line_error(result.stderr) == (
        "Error: cannot pull qwen2.5:3b: no Ollama provider is configured (no config file was given: pass --config "
        "FILE, or set SWITCHYARD_CONFIG_FILE). Add one (type: ollama) to pull Ollama models; to download from the "
        "Hugging Face hub, give a repo id (owner/name) with --hub")
    cfg = config(tmp_path / "switchyard.yaml", {"openai": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}})
    with_config = run_cli("models", "pull", "llama3.2", "--config", cfg, cwd=tmp_path)
    assert with_config.returncode == 1
    assert f"no Ollama provider is configured in {cfg}. Add one" in one_line_error(with_config.stderr)
    assert not (tmp_path / "data").exists()


def test_pull_of_a_hub_name_from_ollama_suggests_the_hub(tmp_path: Path, ollama: FakeOllama) -> None:
    cfg = config(tmp_path / "switchyard.yaml", {"ollama": {"type": "ollama", "base_url": ollama.base_url}})
    result = run_cli("models", "pull", "HuggingFaceTB/SmolLM2-135M", "--config", cfg, cwd=tmp_path)
    assert result.returncode == 1
    assert one_line_error(result.stderr).endswith(
        "Ollama's registry has no model 'HuggingFaceTB/SmolLM2-135M'; for the Hugging Face hub, add --hub")


# ---------------------------------------------------------------- pull from the hub
@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline", "unreachable"])
def test_pull_from_an_unreachable_hub_is_one_clear_line(tmp_path: Path, ollama: FakeOllama,
                                                         env: dict[str, str]) -> None:
    data = tmp_path / "data"
    hub_env = {**env, "HF_HOME": str(tmp_path / "hf")}
    # no Ollama provider configured: the hub is where models come from
    result = run_cli("models", "pull", "HuggingFaceTB/SmolLM2-135M", "--data-dir", data, cwd=tmp_path, env=hub_env)
    assert result.returncode == 1, result
    assert one_line_error(result.stderr) == (
        "Error: cannot download HuggingFaceTB/SmolLM2-135M from the Hugging Face hub: the hub cannot be reached "
        "(or HF_HUB_OFFLINE is set) and it has not been downloaded before")
    assert not (data / "models").exists()  # nothing half made left behind

    # --hub: the hub even with an Ollama provider configured (which is not asked)
    ollama.reset()
    cfg = config(tmp_path / "switchyard.yaml", {"ollama": {"type": "ollama", "base_url": ollama.base_url}})
    hub = run_cli("models", "pull", "--hub", "HuggingFaceTB/SmolLM2-135M", "--config", cfg, "--data-dir", data,
                  cwd=tmp_path, env=hub_env)
    assert hub.returncode == 1 and "from the Hugging Face hub" in one_line_error(hub.stderr)
    assert ollama.requests == []


class _MissingRepoHub(http.server.BaseHTTPRequestHandler):
    """The hub's answer for a repository that does not exist (or is private), as huggingface.co
    gives it to a client without a token: 401 with X-Error-Code: RepoNotFound."""

    paths: list[str] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        body = b'{"error": "Repository not found"}'
        self.send_response(401)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_pull_of_a_repo_the_hub_lacks_says_so(tmp_path: Path) -> None:
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MissingRepoHub)
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    try:
        env = {"HF_ENDPOINT": f"http://127.0.0.1:{hub.server_address[1]}", "HF_HOME": str(tmp_path / "hf")}
        result = run_cli("models", "pull", "nobody/no-such-model", "--data-dir", tmp_path / "data", cwd=tmp_path,
                         env=env)
    finally:
        hub.shutdown()
        hub.server_close()
        thread.join(5)
    assert result.returncode == 1
    assert one_line_error(result.stderr) == ("Error: cannot download nobody/no-such-model from the Hugging Face hub: "
                                             "no such repository on the hub (or it is private: set HF_TOKEN)")
    assert "/api/models/nobody/no-such-model/revision/main" in _MissingRepoHub.paths  # it asked the hub
    assert not (tmp_path / "data" / "models").exists()


def test_pull_refuses_a_repo_id_that_is_a_path(tmp_path: Path) -> None:
    result = run_cli("models", "pull", "../../etc", "--data-dir", tmp_path / "data", cwd=tmp_path,
                     env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert one_line_error(result.stderr) == "Error: '../../etc' is not a Hugging Face repo id (owner/name, or name)"


# ---------------------------------------------------------------- against a running server
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ollama: FakeOllama) -> Iterator[RunningServer]:
    with run_server(tmp_path_factory.mktemp("models-cli"),
                    providers={"ollama": {"type": "ollama", "base_url": ollama.base_url}},
                    models=[{"alias": "qwen", "provider": "ollama", "model": "qwen2.5:0.5b"}]) as running:
        yield running


def at(server: RunningServer, key: str | None = None) -> list[str]:
    return ["--url", server.url, "--api-key", key or server.admin_key]


def test_list(tmp_path: Path, server: RunningServer) -> None:
    result = run_cli("models", "list", *at(server), cwd=tmp_path)
    assert result.returncode == 0, result
    header, *rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
    assert header[:2] == ["MODEL", "OWNED"]
    assert ["qwen", "ollama"] == rows[0][:2]
    as_json = run_cli("models", "list", *at(server), "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json
    assert [m["id"] for m in json.loads(as_json.stdout)] == ["qwen"]


def test_load_ps_unload(tmp_path: Path, server: RunningServer, ollama: FakeOllama) -> None:
    ollama.loaded.pop("qwen2.5:0.5b", None)
    loaded = run_cli("models", "load", "qwen", "--keep-alive", "10m", *at(server), cwd=tmp_path)
    assert loaded.returncode == 0, loaded
    assert loaded.stdout.startswith("loaded qwen in ")
    assert 590 < ollama.loaded["qwen2.5:0.5b"] - time.time() <= 600  # Ollama holds it for the keep-alive

    ps = run_cli("models", "ps", *at(server), cwd=tmp_path)
    assert ps.returncode == 0, ps
    rows = {line.split()[0]: line.split() for line in ps.stdout.splitlines() if line.strip()}
    assert rows["qwen"][1:3] == ["ollama", "qwen2.5:0.5b"]
    assert rows["qwen"][3:5] == ["3.2", "GB"]  # its size, as /api/ps reports it
    assert rows["qwen"][5:7] == ["3.2", "GB"] and rows["qwen"][7] in ("9m", "10m")  # VRAM, then unloads in
    as_json = json.loads(run_cli("models", "ps", *at(server), "--json", cwd=tmp_path).stdout)
    assert as_json["object"] == "status"
    assert [m["upstream_model"] for m in as_json["upstream_models"]] == ["qwen2.5:0.5b"]

    unloaded = run_cli("models", "unload", "qwen", *at(server), "--json", cwd=tmp_path)
    assert unloaded.returncode == 0, unloaded
    assert json.loads(unloaded.stdout) == {"id": "qwen", "object": "model.unload", "status": "unloaded"}
    assert "qwen2.5:0.5b" not in ollama.loaded
    after = json.loads(run_cli("models", "ps", *at(server), "--json", cwd=tmp_path).stdout)
    assert after["upstream_models"] == []


def test_load_refusals(tmp_path: Path, server: RunningServer, ollama: FakeOllama) -> None:
    ollama.loaded.pop("qwen2.5:0.5b", None)
    user = make_key(server.settings, "user")
    denied = run_cli("models", "load", "qwen", *at(server, user), cwd=tmp_path)
    assert denied.returncode == 1
    assert "POST /v1/models/qwen/load answered 403" in one_line_error(denied.stderr)
    assert "qwen2.5:0.5b" not in ollama.loaded

    unknown = run_cli("models", "load", "nope", *at(server), cwd=tmp_path)
    assert unknown.returncode == 1
    assert "answered 404: The model 'nope' does not exist" in one_line_error(unknown.stderr)

    bad = run_cli("models", "load", "qwen", "--keep-alive", "soon", *at(server), cwd=tmp_path)
    assert bad.returncode == 2 and "'soon': use seconds" in bad.stderr
    assert "qwen2.5:0.5b" not in ollama.loaded


def test_no_server(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("models", "ps", "--url", url, "--api-key", "sk-x", cwd=tmp_path)
    assert result.returncode == 1
    assert one_line_error(result.stderr).startswith(f"Error: switchyard is not running at {url} (")


def test_a_local_model_in_ps(tmp_path: Path) -> None:
    """A model Switchyard runs itself: load shows its measured memory; ps lists its engine, state,
    memory and keep-alive against the budget; unload frees it."""
    with run_server(tmp_path / "data", memory_budget="2GiB", local_models=[
        {"alias": "minilm", "engine": "sentence_transformers", "model": str(minilm_dir()), "device": "cpu",
         "keep_alive": "2m"},
    ]) as local:
        before = run_cli("models", "ps", *at(local), cwd=tmp_path)
        assert before.returncode == 0, before
        assert before.stdout.splitlines()[0] == "memory: 0 B used of 2.1 GB (2.1 GB free); 0 loaded"
        assert "no models loaded (--all lists the others)" in before.stdout

        loaded = run_cli("models", "load", "minilm", *at(local), cwd=tmp_path)
        assert loaded.returncode == 0, loaded
        assert re.fullmatch(r"loaded minilm in \d+\.\ds, \d+\.\d MB of memory\n", loaded.stdout)

        ps = run_cli("models", "ps", *at(local), cwd=tmp_path)
        assert ps.returncode == 0, ps
        row = next(line.split() for line in ps.stdout.splitlines() if line.startswith("minilm"))
        assert row[1:3] == ["sentence_transformers", "loaded"] and row[4] == "MB"
        assert row[5:8] == ["no", "0", "0"] and row[8:10] == ["-", "-"]  # not pinned, idle; no slots (not llama.cpp)
        assert row[10:12] == ["2m", "00s"]  # keep-alive
        assert "used of 2.1 GB" in ps.stdout and "; 1 loaded" in ps.stdout

        unloaded = run_cli("models", "unload", "minilm", *at(local), cwd=tmp_path)
        assert unloaded.returncode == 0 and unloaded.stdout == "unloaded minilm\n"
        after = run_cli("models", "ps", "--all", *at(local), cwd=tmp_path)
        row = next(line.split() for line in after.stdout.splitlines() if line.startswith("minilm"))
        assert row[2] == "unloaded"
