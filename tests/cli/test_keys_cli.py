"""``switchyard keys``, ``usage`` and ``db upgrade`` against the store, with the server down and up."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path

import httpx
import pytest

from switchyard.store.migrate import HEAD_REVISION
from tests.cli.support import KEY_RE, chat, db_rows, run_cli, serve, wait_until, write_config
from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeOpenAI

REFRESH_DEADLINE = 2.5  # README: "a running server refuses it within a second"; slack for a loaded machine


@pytest.fixture
def config(tmp_path: Path, fake_openai: FakeOpenAI) -> Path:
    return write_config(tmp_path / "switchyard.yaml", fake_openai.base_url, UPSTREAM_KEY)


def _parse_key(stdout: str) -> tuple[str, str]:
    """(id, secret) from the output of ``keys create`` / ``keys rotate``."""
    key_id = re.search(r"^id:\s+(key_[0-9a-f]+)\s*$", stdout, re.M)
    secrets = KEY_RE.findall(stdout)
    assert key_id is not None and len(secrets) == 1, stdout
    return key_id.group(1), secrets[0]


def _list_rows(stdout: str) -> dict[str, list[str]]:
    """``keys list`` rows by key id."""
    return {line.split()[0]: line.split() for line in stdout.splitlines()[1:] if line.strip()}


def _status(client: httpx.Client) -> int:
    return client.get("/v1/models").status_code


def test_keys_lifecycle_with_server_down_and_up(tmp_path: Path, config: Path) -> None:
    data_dir = tmp_path / "data"
    store = ("--data-dir", data_dir, "--config", config)

    # -- server down: create and list ------------------------------------------------
    created = run_cli("keys", "create", "alice", "--model", "chat", *store, cwd=tmp_path)
    assert created.returncode == 0, created
    alice_id, alice = _parse_key(created.stdout)
    assert "shown once" in created.stderr
    created = run_cli("keys", "create", "bob", *store, cwd=tmp_path)
    assert created.returncode == 0, created
    bob_id, bob = _parse_key(created.stdout)
    assert alice != bob and alice_id != bob_id

    listed = run_cli("keys", "list", *store, cwd=tmp_path)
    assert listed.returncode == 0, listed
    assert alice not in listed.stdout and bob not in listed.stdout, "keys list shows secrets"
    rows = _list_rows(listed.stdout)
    assert set(rows) == {alice_id, bob_id}, listed
    assert rows[alice_id][1] == "alice" and rows[alice_id][2] == alice[:12] + "…"
    assert rows[alice_id][-1] == "chat" and rows[bob_id][-1] == "*"
    assert "active" in rows[alice_id] and "active" in rows[bob_id]

    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            content = path.read_bytes()
            assert alice.encode() not in content and bob.encode() not in content, f"{path.name} holds a secret"

    # -- server up on the same data dir ------------------------------------------------
    with serve(tmp_path, data_dir, config=config) as server:
        assert not KEY_RE.findall(server.stdout), "an admin key was created although keys exist"
        with server.http(alice) as client:
            reply = chat(client, "chat")
            assert reply.status_code == 200, reply.text
            denied = chat(client, "other")
            assert denied.status_code == 404, denied.text
            assert denied.json()["error"]["code"] == "model_not_found"
            assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["chat"]
            assert client.get("/v1/models/other").status_code == 404
        with server.http(bob) as client:
            assert chat(client, "other").status_code == 200
            assert chat(client, "chat").status_code == 200
            assert {m["id"] for m in client.get("/v1/models").json()["data"]} == {"chat", "other", "slow"}

        # rotate while the server is up: the new secret works at once, the old one stops
        rotated = run_cli("keys", "rotate", alice_id, *store, cwd=tmp_path)
        assert rotated.returncode == 0, rotated
        same_id, alice2 = _parse_key(rotated.stdout)
        assert same_id == alice_id and alice2 != alice
        with server.http(alice2) as new, server.http(alice) as old:
            reply = chat(new, "chat")
            assert reply.status_code == 200, reply.text
            assert chat(new, "other").status_code == 404, "rotation changed the key's scope"
            wait_until(lambda: _status(old) == 401, REFRESH_DEADLINE, what="the old secret to be refused")
            assert _status(new) == 200

        # revoke while the server is up: refused on the next requests
        revoked = run_cli("keys", "revoke", bob_id, *store, cwd=tmp_path)
        done = time.monotonic()
        assert revoked.returncode == 0, revoked
        assert bob_id in revoked.stdout
        with server.http(bob) as client:
            wait_until(lambda: _status(client) == 401, REFRESH_DEADLINE, what="the revoked key to be refused")
            took = time.monotonic() - done
            assert chat(client, "other").status_code == 401
        assert took < REFRESH_DEADLINE
        with server.http(alice2) as client:
            assert _status(client) == 200

        listed = run_cli("keys", "list", *store, cwd=tmp_path)
        assert set(_list_rows(listed.stdout)) == {alice_id}, listed
        listed_all = run_cli("keys", "list", "--all", *store, cwd=tmp_path)
        rows = _list_rows(listed_all.stdout)
        assert set(rows) == {alice_id, bob_id}, listed_all
        assert "revoked" in rows[bob_id] and rows[alice_id][2] == alice2[:12] + "…"
        for out in (listed.stdout, listed_all.stdout):
            assert alice not in out and alice2 not in out and bob not in out

    # -- usage (the server flushed its rows at shutdown) ----------------------------
    # alice: chat x2 (one before, one after rotation); bob: other x1, chat x1. 404s/401s make no rows.
    expected = {("alice", "chat"): 2, ("bob", "chat"): 1, ("bob", "other"): 1}
    table = run_cli("usage", *store, cwd=tmp_path)
    assert table.returncode == 0, table
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["KEY", "MODEL", "REQUESTS"], table
    assert set(lines[-2]) == {"-", " "} and lines[-1].split()[:2] == ["TOTAL", "4"], table  # a totals row
    got = {(line.split()[0], line.split()[1]): int(line.split()[2]) for line in lines[1:-2]}
    assert got == expected, table

    as_csv = run_cli("usage", "--format", "csv", *store, cwd=tmp_path)
    assert as_csv.returncode == 0, as_csv
    records = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {(r["key"], r["model"]): int(r["requests"]) for r in records} == expected, as_csv
    for r in records:
        assert int(r["prompt_tokens"]) > 0 and int(r["completion_tokens"]) > 0
        assert r["errors"] == "0" and r["estimated"] == "0"

    recent = run_cli("usage", "--since", "1h", "--format", "csv", *store, cwd=tmp_path)
    assert recent.returncode == 0 and recent.stdout == as_csv.stdout, recent
    bad = run_cli("usage", "--since", "yesterday", *store, cwd=tmp_path)
    assert bad.returncode != 0 and "--since" in bad.stderr, bad


def test_revoke_and_rotate_unknown_key_fail_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for command in ("revoke", "rotate"):
        result = run_cli("keys", command, "key_0123456789abcdef", "--data-dir", data_dir, cwd=tmp_path)
        assert result.returncode != 0, result
        assert "key_0123456789abcdef" in result.stderr and "Traceback" not in result.stderr, result
        assert not KEY_RE.findall(result.stdout)


def test_db_upgrade_fresh_and_idempotent(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "nested"
    for _ in range(2):
        result = run_cli("db", "upgrade", "--data-dir", data_dir, cwd=tmp_path)
        assert result.returncode == 0, result
        assert "up to date" in result.stdout
    tables = {r["name"] for r in db_rows(data_dir, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"api_keys", "usage_records", "alembic_version"} <= tables
    assert [r["version_num"] for r in db_rows(data_dir, "SELECT version_num FROM alembic_version")] == [HEAD_REVISION]
    # a key store made by `db upgrade` is usable by the other commands
    listed = run_cli("keys", "list", "--data-dir", data_dir, cwd=tmp_path)
    assert listed.returncode == 0 and _list_rows(listed.stdout) == {}, listed
