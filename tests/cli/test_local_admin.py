"""The local admin token: ``status`` and ``models`` against a real ``switchyard serve`` with no key
given (the token the server left in its data dir), what they say when the token is missing,
wrong or for another server, and SWITCHYARD_ADMIN_KEY for a server elsewhere."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.support import KEY_RE, ServeProcess, run_cli, serve, write_config
from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeOpenAI

TOKEN_FILE = "local-admin.json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("local-admin")
    config = write_config(root / "switchyard.yaml", fake_openai.base_url, UPSTREAM_KEY)
    with serve(root, root / "data", config=config) as running:
        yield running


def token_record(data_dir: Path) -> dict[str, str | None]:
    record: dict[str, str | None] = json.loads((data_dir / TOKEN_FILE).read_text(encoding="utf-8"))
    return record


def test_the_server_writes_a_private_token_with_its_url(server: ServeProcess) -> None:
    path = server.data_dir / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = token_record(server.data_dir)
    token = record["token"]
    assert record["url"] == server.url and token is not None and token.startswith("sy-local-")
    assert len(token) > 40
    assert token not in server.stdout + server.stderr  # never printed or logged


def test_status_and_models_need_no_key_on_the_servers_host(tmp_path: Path, server: ServeProcess) -> None:
    # no --url, no key: the data dir says where the server is and holds its token
    status = run_cli("status", "--data-dir", server.data_dir, cwd=tmp_path)
    assert status.returncode == 0, status
    assert f"at {server.url}: healthy, ready" in status.stdout
    assert "models (3): chat, other, slow" in status.stdout

    listed = run_cli("models", "list", "--data-dir", server.data_dir, "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed
    assert [m["id"] for m in json.loads(listed.stdout)] == ["chat", "other", "slow"]

    ps = run_cli("models", "ps", "--data-dir", server.data_dir, "--json", cwd=tmp_path)
    assert ps.returncode == 0, ps
    assert json.loads(ps.stdout)["object"] == "status"

    # the same with the server's URL given explicitly: it is the token's server
    explicit = run_cli("models", "ps", "--url", server.url, "--data-dir", server.data_dir, cwd=tmp_path)
    assert explicit.returncode == 0, explicit
    token = str(token_record(server.data_dir)["token"])
    for result in (status, listed, ps, explicit):
        assert token not in result.stdout + result.stderr


def test_the_token_goes_only_to_the_server_that_wrote_it(tmp_path: Path, server: ServeProcess) -> None:
    other_spelling = server.url.replace("127.0.0.1", "localhost")
    result = run_cli("models", "ps", "--url", other_spelling, "--data-dir", server.data_dir, cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "GET /v1/status answered 401: no key was given" in last
    assert f"is for the server at {server.url}, not {other_spelling}" in last


def test_without_a_token_the_message_says_why(tmp_path: Path, server: ServeProcess) -> None:
    empty = tmp_path / "elsewhere"
    status = run_cli("status", "--url", server.url, "--data-dir", empty, cwd=tmp_path)
    assert status.returncode == 2, status
    assert (f"no key was given, and no local admin token was found (no {empty / TOKEN_FILE}: is the server "
            "running with this data dir?)") in status.stderr
    assert "SWITCHYARD_ADMIN_KEY" in status.stderr and "Traceback" not in status.stderr

    ps = run_cli("models", "ps", "--url", server.url, "--data-dir", empty, cwd=tmp_path)
    assert ps.returncode == 1
    assert "answered 401: no key was given, and no local admin token was found" in ps.stderr


def test_a_wrong_token_is_named(tmp_path: Path, server: ServeProcess) -> None:
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / TOKEN_FILE).write_text(json.dumps({"url": server.url, "token": "sy-local-not-the-real-one"}))
    status = run_cli("status", "--data-dir", stale, cwd=tmp_path)
    assert status.returncode == 2, status
    assert (f"the local admin token in {stale / TOKEN_FILE} was refused: the server at {server.url} is not the "
            "one that wrote it") in status.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / TOKEN_FILE).write_text("{}")
    ps = run_cli("models", "ps", "--url", server.url, "--data-dir", broken, cwd=tmp_path)
    assert ps.returncode == 1
    assert f"(cannot read {broken / TOKEN_FILE}: {broken / TOKEN_FILE} is not a file switchyard serve wrote)" \
        in ps.stderr


def test_admin_key_from_the_environment(tmp_path: Path, server: ServeProcess) -> None:
    admin = KEY_RE.findall(server.stdout)[0]  # the first admin key, printed once at the first start
    env = {"SWITCHYARD_ADMIN_KEY": admin}
    empty = tmp_path / "no-token-here"
    status = run_cli("status", "--url", server.url, "--data-dir", empty, cwd=tmp_path, env=env)
    assert status.returncode == 0, status
    ps = run_cli("models", "ps", "--url", server.url, "--data-dir", empty, "--json", cwd=tmp_path, env=env)
    assert ps.returncode == 0, ps
    # it is the client's setting only: a server does not take it as a key of its own
    wrong = run_cli("models", "ps", "--url", server.url, "--data-dir", empty, cwd=tmp_path,
                    env={"SWITCHYARD_ADMIN_KEY": "sk-sy-not-a-key"})
    assert wrong.returncode == 1 and "the key was refused" in wrong.stderr


def test_each_start_rotates_the_token_and_a_clean_stop_removes_it(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    config = write_config(tmp_path / "switchyard.yaml", fake_openai.base_url, UPSTREAM_KEY)
    data = tmp_path / "data"
    with serve(tmp_path, data, config=config) as first:
        old = token_record(data)["token"]
        first.sigterm()
        assert first.wait(30) == 0
    assert not (data / TOKEN_FILE).exists()
    with serve(tmp_path, data, config=config, name="again") as second:
        new = token_record(data)["token"]
        assert new != old
        status = run_cli("status", "--data-dir", data, cwd=tmp_path)
        assert status.returncode == 0, status
        # the old token is worth nothing now
        (data / TOKEN_FILE).write_text(json.dumps({"url": second.url, "token": old}))
        refused = run_cli("status", "--data-dir", data, cwd=tmp_path)
        assert refused.returncode == 2 and "was refused" in refused.stderr


def test_without_authentication_the_address_is_still_found(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    config = write_config(tmp_path / "switchyard.yaml", fake_openai.base_url, UPSTREAM_KEY)
    with serve(tmp_path, tmp_path / "data", "--no-auth", config=config) as server:
        assert token_record(server.data_dir) == {"url": server.url, "token": None, "certfile": None}
        status = run_cli("status", "--data-dir", server.data_dir, cwd=tmp_path)
        assert status.returncode == 0, status
        assert f"at {server.url}: healthy, ready" in status.stdout
