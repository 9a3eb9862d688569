"""``switchyard credentials`` on the store with the server down, then the server reading what it stored."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.support import SWITCHYARD, CliResult, clean_env, db_rows, run_cli
from tests.fakes import FakeOpenAI
from tests.harness import run_server

MASTER = "cli-test-master-key-0123456789-abcdefghij"
NEW_MASTER = "cli-test-new-master-key-9876543210-zyxwvu"
INTERNAL = "cli-test-internal-secret-0123"
GOOD_KEY = "sk-proj-cli-good-key-abcdefghijklmnopqrstuvwxyz"
BAD_KEY = "sk-proj-cli-bad-key-ZYXWVUTSRQPONMLKJIHGFEDCBA"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=GOOD_KEY) as fake:
        yield fake


def fingerprint(master: str) -> str:
    return hmac.new(master.encode(), b"switchyard-master-key-id", hashlib.sha256).hexdigest()[:16]


def cli(*args: str | Path, cwd: Path, master: str | None = MASTER, stdin: str = "") -> CliResult:
    env = {"SWITCHYARD_MASTER_KEY": master} if master is not None else {}
    proc = subprocess.run([*SWITCHYARD, "credentials", *map(str, args)], cwd=cwd, env=clean_env(env), input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)
    return CliResult(proc)


def listed(result: CliResult) -> dict[str, list[str]]:
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "ID", "PROVIDER", "KEY"], result
    return {line.split()[0]: line.split() for line in lines[1:] if line.strip()}


def no_secrets(result: CliResult) -> None:
    for secret in (GOOD_KEY, BAD_KEY, MASTER, NEW_MASTER):
        assert secret not in result.stdout and secret not in result.stderr, result
    assert "Traceback" not in result.stderr, result


def test_credentials_lifecycle_with_the_server_down(tmp_path: Path, upstream: FakeOpenAI) -> None:
    data_dir = tmp_path / "data"
    store = ("--data-dir", data_dir)

    added = cli("add", "main", "--provider", "openai", "--base-url", upstream.base_url, "--api-key-stdin", *store,
                cwd=tmp_path, stdin=GOOD_KEY + "\n")
    assert added.returncode == 0, added
    no_secrets(added)
    assert "sk-pr…wxyz" in added.stdout and "check:    ok@" in added.stdout
    assert upstream.last_request.headers["Authorization"] == f"Bearer {GOOD_KEY}"

    refused = cli("add", "bad", "--provider", "openai", "--base-url", upstream.base_url, "--api-key-stdin", *store,
                  cwd=tmp_path, stdin=BAD_KEY)
    assert refused.returncode != 0, refused
    no_secrets(refused)
    assert "check failed" in refused.stderr and "rejected the key" in refused.stderr

    later = cli("add", "later", "--provider", "openai", "--base-url", upstream.base_url, "--api-key-stdin",
                "--no-check", *store, cwd=tmp_path, stdin=BAD_KEY)
    assert later.returncode == 0 and "unchecked" in later.stdout, later
    duplicate = cli("add", "later", "--provider", "openai", "--api-key-stdin", "--no-check", *store, cwd=tmp_path,
                    stdin=GOOD_KEY)
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr, duplicate

    table = cli("list", *store, cwd=tmp_path)
    assert table.returncode == 0, table
    no_secrets(table)
    rows = listed(table)
    assert set(rows) == {"main", "later"}, table
    assert rows["main"][2:5] == ["openai", "sk-pr…wxyz", "active"] and rows["main"][-1].startswith("ok@")
    assert rows["later"][-1] == "unchecked"

    failed = cli("check", "later", *store, cwd=tmp_path)
    assert failed.returncode != 0 and "later: check failed" in failed.stderr, failed
    no_secrets(failed)
    ok = cli("check", "main", *store, cwd=tmp_path)
    assert ok.returncode == 0 and "main: ok" in ok.stdout, ok
    assert listed(cli("list", *store, cwd=tmp_path))["later"][-1].startswith("FAILED@")

    for path in data_dir.iterdir():  # the database and its -wal
        if path.is_file():
            content = path.read_bytes()
            assert GOOD_KEY.encode() not in content and BAD_KEY.encode() not in content, path.name

    removed = cli("remove", "later", *store, cwd=tmp_path)
    assert removed.returncode == 0 and "removed later" in removed.stdout, removed
    again = cli("remove", "later", *store, cwd=tmp_path)
    assert again.returncode != 0 and "later" in again.stderr and "Traceback" not in again.stderr, again
    assert set(listed(cli("list", *store, cwd=tmp_path))) == {"main"}

    # -- rekey: the new key opens everything, the old one no longer does ---------------------
    same = cli("rekey", "--new-master-key-stdin", *store, cwd=tmp_path, stdin=MASTER)
    assert same.returncode != 0 and "already configured" in same.stderr, same
    short = cli("rekey", "--new-master-key-stdin", *store, cwd=tmp_path, stdin="too-short")
    assert short.returncode != 0 and "too short" in short.stderr, short
    rekeyed = cli("rekey", "--new-master-key-stdin", *store, cwd=tmp_path, stdin=NEW_MASTER + "\n")
    assert rekeyed.returncode == 0, rekeyed
    no_secrets(rekeyed)
    assert f"re-encrypted 1 credential(s) under master key {fingerprint(NEW_MASTER)}" in rekeyed.stdout
    assert "SWITCHYARD_MASTER_KEY" in rekeyed.stderr and "every replica" in rekeyed.stderr

    stale = cli("check", "main", *store, cwd=tmp_path)
    assert stale.returncode != 0, stale
    no_secrets(stale)
    assert (f"credential 'main' was encrypted under master key {fingerprint(NEW_MASTER)}, "
            f"but the configured master key is {fingerprint(MASTER)}") in stale.stderr
    fresh = cli("check", "main", *store, cwd=tmp_path, master=NEW_MASTER)
    assert fresh.returncode == 0, fresh

    # -- the server, on the same data dir with the new key, serves what the CLI stored -----------
    with run_server(data_dir, master_key=NEW_MASTER, internal_secret=INTERNAL) as server:
        with server.http(server.admin_key) as http:
            creds = http.get("/admin/credentials").json()["data"]
        assert [(c["name"], c["display"]) for c in creds] == [("main", "sk-pr…wxyz")]
        with httpx.Client(base_url=server.url, headers={"x-internal-secret": INTERNAL}) as http:
            opened = http.get(f"/internal/credentials/{creds[0]['id']}/decrypt")
        assert opened.status_code == 200 and opened.json()["api_key"] == GOOD_KEY


def test_without_a_master_key(tmp_path: Path) -> None:
    store = ("--data-dir", tmp_path / "data")
    for args in (("add", "x", "--provider", "openai", "--api-key-stdin", "--no-check"), ("rekey",
                 "--new-master-key-stdin"), ("check", "x")):
        result = cli(*args, *store, cwd=tmp_path, master=None, stdin=GOOD_KEY)
        assert result.returncode != 0, result
        assert "SWITCHYARD_MASTER_KEY" in result.stderr, result
        no_secrets(result)
    table = cli("list", *store, cwd=tmp_path, master=None)
    assert table.returncode == 0 and listed(table) == {}, table


def test_errors_are_clear(tmp_path: Path) -> None:
    store = ("--data-dir", tmp_path / "data")
    empty = cli("add", "x", "--provider", "openai", "--api-key-stdin", *store, cwd=tmp_path, stdin="\n")
    assert empty.returncode != 0 and "API key is empty" in empty.stderr, empty
    azure = cli("add", "az", "--provider", "azure", "--api-key-stdin", *store, cwd=tmp_path, stdin=GOOD_KEY)
    assert azure.returncode != 0 and "base_url" in azure.stderr, azure
    unknown = cli("add", "x", "--provider", "mistral", "--api-key-stdin", *store, cwd=tmp_path, stdin=GOOD_KEY)
    assert unknown.returncode == 2 and "mistral" in unknown.stderr, unknown
    missing = cli("check", "nothing-here", *store, cwd=tmp_path)
    assert missing.returncode != 0 and "nothing-here" in missing.stderr, missing
    for result in (empty, azure, unknown, missing):
        no_secrets(result)


def test_serve_refuses_a_config_whose_credentials_cannot_be_used(tmp_path: Path, upstream: FakeOpenAI) -> None:
    config = tmp_path / "switchyard.yaml"
    config.write_text(f"providers:\n  up: {{type: openai, base_url: '{upstream.base_url}', credential: main}}\n"
                      "models:\n  - {alias: m, provider: up}\n")
    store = ("--data-dir", tmp_path / "data", "--config", config, "--port", "1")

    def serve(master: str | None) -> CliResult:
        env = {"SWITCHYARD_MASTER_KEY": master} if master is not None else {}
        proc = subprocess.run([*SWITCHYARD, "serve", *map(str, store)], cwd=tmp_path, env=clean_env(env),
                              capture_output=True, text=True, timeout=60, check=False)
        return CliResult(proc)

    keyless = serve(None)
    assert keyless.returncode != 0 and "no master key is set" in keyless.stderr, keyless
    missing = serve(MASTER)
    assert missing.returncode != 0 and "credential 'main' is not in the vault" in missing.stderr, missing
    for result in (keyless, missing):
        assert "Traceback" not in result.stderr, result


def test_credential_commands_are_in_the_audit_log_without_the_key(tmp_path: Path, upstream: FakeOpenAI) -> None:
    data_dir = tmp_path / "data"
    store = ("--data-dir", data_dir)
    added = cli("add", "audited", "--provider", "openai", "--base-url", upstream.base_url, "--api-key-stdin", *store,
                cwd=tmp_path, stdin=GOOD_KEY)
    assert added.returncode == 0, added
    cred_id = next(line.split()[1] for line in added.stdout.splitlines() if line.startswith("id:"))
    assert cli("check", "audited", *store, cwd=tmp_path).returncode == 0
    assert cli("rekey", "--new-master-key-stdin", *store, cwd=tmp_path, stdin=NEW_MASTER).returncode == 0
    assert cli("remove", "audited", *store, cwd=tmp_path, master=NEW_MASTER).returncode == 0
    assert cli("remove", "audited", *store, cwd=tmp_path, master=NEW_MASTER).returncode != 0  # refused: not recorded

    table = run_cli("audit", "--format", "csv", *store, cwd=tmp_path)
    assert table.returncode == 0, table
    records = list(csv.DictReader(io.StringIO(table.stdout)))[::-1]  # oldest first
    assert [(r["actor"], r["action"], r["object_type"], r["object_id"]) for r in records] == [
        ("cli", "credential.add", "credential", cred_id), ("cli", "credential.check", "credential", cred_id),
        ("cli", "credential.rekey", "credential", ""), ("cli", "credential.remove", "credential", cred_id)]
    details = [json.loads(r["details"]) for r in records]
    assert details[0] == {"name": "audited", "provider": "openai", "base_url": upstream.base_url, "checked": True}
    assert details[1] == {"name": "audited", "ok": True}
    assert details[2] == {"count": 1, "key_version": fingerprint(NEW_MASTER)}
    assert details[3] == {"name": "audited"}
    raw = repr([tuple(row) for row in db_rows(data_dir, "SELECT * FROM audit_log")])
    for secret in (GOOD_KEY, MASTER, NEW_MASTER):
        assert secret not in raw
