"""``switchyard teams``, the owner/limit/budget options of ``keys``, and ``switchyard audit``."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from tests.cli.support import KEY_RE, db_rows, run_cli, serve, write_config
from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeOpenAI


@pytest.fixture
def config(tmp_path: Path, fake_openai: FakeOpenAI) -> Path:
    return write_config(tmp_path / "switchyard.yaml", fake_openai.base_url, UPSTREAM_KEY)


def _field(stdout: str, name: str) -> str:
    found = re.search(rf"^{name}:\s+(\S.*?)\s*$", stdout, re.M)
    assert found is not None, stdout
    return found.group(1)


def _key_row(data_dir: Path, key_id: str) -> dict[str, object]:
    rows = db_rows(data_dir, "SELECT * FROM api_keys WHERE id = ?", (key_id,))
    assert len(rows) == 1
    return dict(rows[0])


def _audit_lines(stdout: str) -> list[list[str]]:
    lines = stdout.splitlines()
    assert lines[0].split()[:4] == ["AT", "ACTOR", "ACTION", "OBJECT"], stdout
    return [line.split(maxsplit=5) for line in lines[1:] if line.strip()]


def test_teams_keys_with_limits_and_the_audit_log(tmp_path: Path, config: Path) -> None:
    data_dir = tmp_path / "data"
    store = ("--data-dir", data_dir, "--config", config)

    made = run_cli("teams", "create", "ml", "--rpm", "100", "--max-parallel", "8", "--budget", "50", *store,
                   cwd=tmp_path)
    assert made.returncode == 0, made
    team_id = _field(made.stdout, "id")
    assert team_id.startswith("team_") and _field(made.stdout, "budget") == "$50/monthly"
    assert _field(made.stdout, "limits") == "rpm=100,max_parallel=8"

    created = run_cli("keys", "create", "alice", "--team", "ml", "--user", "alice@example.com", "--rpm", "10",
                      "--tpm", "1000", "--rpd", "500", "--model-limit", "chat:rpm=2,tpm=300", "--budget", "5",
                      "--budget-period", "daily", *store, cwd=tmp_path)
    assert created.returncode == 0, created
    key_id = _field(created.stdout, "id")
    (secret,) = KEY_RE.findall(created.stdout)
    assert _field(created.stdout, "team") == team_id and _field(created.stdout, "budget") == "$5/daily"
    row = _key_row(data_dir, key_id)
    assert row["team_id"] == team_id and row["user_id"] == "alice@example.com"
    assert json.loads(str(row["limits"])) == {"rpm": 10, "tpm": 1000, "rpd": 500}
    assert json.loads(str(row["model_limits"])) == {"chat": {"rpm": 2, "tpm": 300}}
    assert (row["budget_usd"], row["budget_period"]) == (5.0, "daily")

    listed = run_cli("keys", "list", *store, cwd=tmp_path)
    assert listed.returncode == 0, listed
    (alice_row,) = [line.split() for line in listed.stdout.splitlines()[1:] if line.startswith(key_id)]
    assert alice_row[-2:] == ["ml", "*"] and "TEAM" in listed.stdout.splitlines()[0]
    teams = run_cli("teams", "list", *store, cwd=tmp_path)
    assert teams.returncode == 0, teams
    (team_row,) = [line.split() for line in teams.stdout.splitlines()[1:]]
    assert team_row == [team_id, "ml", "1", "$50/monthly", "rpm=100,max_parallel=8"]

    # update: 0 removes a limit, other limits stay; the budget keeps its period
    updated = run_cli("keys", "update", key_id, "--rpm", "0", "--rph", "30", "--budget", "7",
                      "--model-limit", "chat:", *store, cwd=tmp_path)
    assert updated.returncode == 0, updated
    row = _key_row(data_dir, key_id)
    assert json.loads(str(row["limits"])) == {"tpm": 1000, "rph": 30, "rpd": 500}
    assert row["model_limits"] is None and (row["budget_usd"], row["budget_period"]) == (7.0, "daily")
    assert row["team_id"] == team_id and not KEY_RE.findall(updated.stdout)

    # refused: unknown team, negative limit, deleting a team that has keys; none is recorded
    unknown = run_cli("keys", "create", "bob", "--team", "nope", *store, cwd=tmp_path)
    assert unknown.returncode == 1 and "nope" in unknown.stderr and not KEY_RE.findall(unknown.stdout), unknown
    negative = run_cli("keys", "create", "bob", "--rpm", "-1", *store, cwd=tmp_path)
    assert negative.returncode == 2 and "--rpm" in negative.stderr, negative
    in_use = run_cli("teams", "delete", "ml", *store, cwd=tmp_path)
    assert in_use.returncode == 1 and "1 key" in in_use.stderr, in_use
    assert len(db_rows(data_dir, "SELECT id FROM api_keys")) == 1

    # the audit log, newest first, actor "cli"
    table = run_cli("audit", *store, cwd=tmp_path)
    assert table.returncode == 0, table
    lines = _audit_lines(table.stdout)
    assert [(line[1], line[2], line[3]) for line in lines] == [
        ("cli", "key.update", key_id), ("cli", "key.create", key_id), ("cli", "team.create", team_id)]
    assert json.loads(lines[0][5]) == {"budget": {"amount_usd": 7.0, "period": "daily"},
                                       "limits": {"rph": 30, "rpd": 500, "tpm": 1000}, "model_limits": None}

    as_csv = run_cli("audit", "--format", "csv", *store, cwd=tmp_path)
    assert as_csv.returncode == 0, as_csv
    records = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["actor"], r["action"], r["object_type"], r["object_id"]) for r in records] == [
        ("cli", "key.update", "api_key", key_id), ("cli", "key.create", "api_key", key_id),
        ("cli", "team.create", "team", team_id)]
    created_details = json.loads(records[1]["details"])
    assert created_details["team"] == team_id and created_details["user"] == "alice@example.com"
    assert created_details["limits"] == {"rpm": 10, "tpm": 1000, "rpd": 500}
    assert created_details["budget"] == {"amount_usd": 5.0, "period": "daily"}

    only_teams = run_cli("audit", "--action", "team.", "--format", "csv", *store, cwd=tmp_path)
    assert [r["action"] for r in csv.DictReader(io.StringIO(only_teams.stdout))] == ["team.create"]
    about = run_cli("audit", "--object", key_id, "--limit", "1", "--format", "csv", *store, cwd=tmp_path)
    assert [r["action"] for r in csv.DictReader(io.StringIO(about.stdout))] == ["key.update"]
    future = run_cli("audit", "--since", "2999-01-01T00:00:00Z", *store, cwd=tmp_path)
    assert future.returncode == 0 and _audit_lines(future.stdout) == [], future
    bad = run_cli("audit", "--since", "yesterday", *store, cwd=tmp_path)
    assert bad.returncode == 2 and "--since" in bad.stderr, bad

    # a server on the same store records its admin actions with the admin key's id
    admin = run_cli("keys", "create", "root", "--admin", *store, cwd=tmp_path)
    assert admin.returncode == 0, admin
    admin_id, (admin_secret,) = _field(admin.stdout, "id"), KEY_RE.findall(admin.stdout)
    with serve(tmp_path, data_dir, config=config) as server, server.http(admin_secret) as http:
        resp = http.patch(f"/admin/teams/{team_id}", json={"limits": {"rpm": 200}})
        assert resp.status_code == 200, resp.text
        assert resp.json()["limits"] == {"rpm": 200, "max_parallel": 8}
        with server.http(secret) as as_alice:
            assert as_alice.get("/v1/models").status_code == 200
        renamed = run_cli("teams", "update", "ml", "--name", "ml-2", "--no-budget", *store, cwd=tmp_path)
        assert renamed.returncode == 0, renamed
        shown = http.get(f"/admin/teams/{team_id}").json()
        assert shown["name"] == "ml-2" and shown["budget"] is None
    by_admin = run_cli("audit", "--actor", admin_id, "--format", "csv", *store, cwd=tmp_path)
    (entry,) = list(csv.DictReader(io.StringIO(by_admin.stdout)))
    assert (entry["action"], entry["object_id"], entry["client_ip"]) == ("team.update", team_id, "127.0.0.1")
    assert json.loads(entry["details"]) == {"limits": {"rpm": 200}}

    # no secret in any file of the data dir (the audit table included)
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            content = path.read_bytes()
            assert secret.encode() not in content and admin_secret.encode() not in content, path.name


def test_keys_show_and_teams_show_give_what_a_budget_has_spent_this_period(tmp_path: Path) -> None:
    import asyncio
    from datetime import UTC, datetime, timedelta

    from switchyard.core.limits import Budget
    from switchyard.core.usage import UsageRecord
    from switchyard.runtime import open_runtime
    from switchyard.settings import Settings

    data_dir = tmp_path / "data"
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)

    async def seed() -> tuple[str, str, str]:
        rt = await open_runtime(Settings.model_validate({"data_dir": data_dir}))
        try:
            team = await rt.teams.create("spenders", budget=Budget(2.0, "daily"))
            alice = (await rt.keys.create("alice", team=team.id, budget=Budget(1.5, "monthly"))).key.id
            bob = (await rt.keys.create("bob", team=team.id)).key.id
            outsider = (await rt.keys.create("carol")).key.id

            def row(i: int, key: str, at: datetime, cost: float) -> UsageRecord:
                return UsageRecord(at, f"r{i}", key, "chat", "fake", "/v1/chat/completions", 10, 5, 1.0, 200, False,
                                   False, cost_usd=cost)

            await rt.usage.write([
                row(1, alice, now, 0.25), row(2, alice, now, 0.125), row(3, bob, now, 0.5),
                row(4, outsider, now, 0.75),  # not the team's
                row(5, bob, midnight - timedelta(hours=2), 0.0625),  # yesterday: not in today's team budget
            ])
            return team.id, alice, outsider
        finally:
            await rt.aclose()

    team_id, alice, outsider = asyncio.run(seed())
    store = ("--data-dir", data_dir)
    team = run_cli("teams", "show", "spenders", *store, cwd=tmp_path)
    assert team.returncode == 0, team
    assert _field(team.stdout, "id") == team_id and _field(team.stdout, "budget") == "$2/daily"
    today, tomorrow = midnight.date().isoformat(), (midnight + timedelta(days=1)).date().isoformat()
    assert _field(team.stdout, "spent") == f"$0.875 of $2 today ({today} to {tomorrow}), $1.125 left"

    key = run_cli("keys", "show", alice, *store, cwd=tmp_path)
    assert key.returncode == 0, key
    assert _field(key.stdout, "name") == "alice" and _field(key.stdout, "team") == team_id
    assert _field(key.stdout, "state") == "active" and not KEY_RE.findall(key.stdout)  # never the secret
    month = midnight.replace(day=1).date().isoformat()
    assert _field(key.stdout, "spent").startswith(f"$0.375 of $1.5 this month ({month} to ")
    assert _field(key.stdout, "spent").endswith(", $1.125 left")

    unbudgeted = run_cli("keys", "show", outsider, *store, cwd=tmp_path)
    assert unbudgeted.returncode == 0 and "spent:" not in unbudgeted.stdout, unbudgeted
    missing = run_cli("keys", "show", "key_nope", *store, cwd=tmp_path)
    assert missing.returncode == 1 and "key_nope" in missing.stderr, missing
    no_team = run_cli("teams", "show", "nope", *store, cwd=tmp_path)
    assert no_team.returncode == 1 and "nope" in no_team.stderr, no_team
