"""The admin audit log through a real server: every admin action is recorded (who, what, when, on
which object), never a secret, and /admin/audit filters it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import STORES, UPSTREAM_KEY, server_store
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server

MASTER = "audit-test-master-key-0123456789-abcdefgh"
STATIC = "static-admin-key-for-the-audit-tests-0123456789"
CRED_SECRET = "sk-proj-audit-credential-secret-abcdefghijklmnop"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           upstream: FakeOpenAI) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("audit-server")
    config: dict[str, Any] = {
        "providers": {"fake": {"type": "openai", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY}},
        "models": [{"alias": "chat", "provider": "fake", "model": "gpt-4o-mini"}],
        **server_store(request),
    }
    with run_server(data_dir, master_key=MASTER, api_keys=[STATIC], **config) as running:
        yield running


def _admin_id(server: RunningServer) -> str:
    with server.http(server.admin_key) as http:
        admins = [k for k in http.get("/admin/keys").json()["data"] if k["name"] == "admin" and k["admin"]]
    assert len(admins) == 1
    return str(admins[0]["id"])


def _raw_audit(server: RunningServer) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        engine = create_async_engine(server.settings.resolved_database_url)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(sa.text("SELECT * FROM audit_log ORDER BY id"))
                return [dict(r._mapping) for r in result]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _audit(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    resp = http.get("/admin/audit", params=params)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list"
    return list(body["data"])


def _ok(resp: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    return dict(resp.json())


def test_every_admin_action_is_recorded_without_secrets(server: RunningServer) -> None:
    admin_id = _admin_id(server)
    started = datetime.now(UTC) - timedelta(seconds=1)
    with server.http(server.admin_key) as http:
        team = _ok(http.post("/admin/teams", json={"name": "audited", "limits": {"rpm": 9}}), 201)
        _ok(http.patch(f"/admin/teams/{team['id']}", json={"budget": {"amount_usd": 20}}))
        made = _ok(http.post("/admin/keys", json={"name": "audited-key", "team": "audited",
                                                  "limits": {"rpm": 3}, "budget": {"amount_usd": 1.5}}), 201)
        key_id = made["id"]
        _ok(http.patch(f"/admin/keys/{key_id}", json={"limits": {"tpm": 100}, "user": "carol"}))
        rotated = _ok(http.post(f"/admin/keys/{key_id}/rotate"))
        _ok(http.delete(f"/admin/keys/{key_id}"))
        _ok(http.delete(f"/admin/teams/{team['id']}"))
        cred = _ok(http.post("/admin/credentials", json={"name": "audited-cred", "provider": "openai",
                                                         "api_key": CRED_SECRET, "check": False}), 201)
        _ok(http.post(f"/admin/credentials/{cred['id']}/deactivate"))
        _ok(http.post(f"/admin/credentials/{cred['id']}/activate"))
        _ok(http.delete(f"/admin/credentials/{cred['id']}"))
        model = _ok(http.post("/admin/models", json={"alias": "audited-model", "provider": "fake",
                                                     "model": "gpt-4o"}), 201)
        _ok(http.patch(f"/admin/models/{model['id']}", json={"default_temperature": 0.5}))
        _ok(http.delete(f"/admin/models/{model['id']}"))
        # refused actions change nothing and are not recorded
        assert http.post("/admin/keys", json={"name": ""}).status_code == 400
        assert http.delete("/admin/teams/team_doesnotexist").status_code == 404

        entries = _audit(http, since=started.isoformat())
    mine = [e for e in entries if e["actor"] == admin_id][::-1]  # oldest first
    assert [(e["action"], e["object_type"], e["object_id"]) for e in mine] == [
        ("team.create", "team", team["id"]),
        ("team.update", "team", team["id"]),
        ("key.create", "api_key", key_id),
        ("key.update", "api_key", key_id),
        ("key.rotate", "api_key", key_id),
        ("key.revoke", "api_key", key_id),
        ("team.delete", "team", team["id"]),
        ("credential.add", "credential", cred["id"]),
        ("credential.deactivate", "credential", cred["id"]),
        ("credential.activate", "credential", cred["id"]),
        ("credential.remove", "credential", cred["id"]),
        ("model.create", "model", model["id"]),
        ("model.update", "model", model["id"]),
        ("model.delete", "model", model["id"]),
    ]
    by_action = {e["action"]: e for e in mine}
    assert by_action["team.create"]["details"] == {"name": "audited", "limits": {"rpm": 9}}
    assert by_action["team.update"]["details"] == {"budget": {"amount_usd": 20}}
    assert by_action["key.create"]["details"] == {"name": "audited-key", "admin": False, "team": team["id"],
                                                  "limits": {"rpm": 3},
                                                  "budget": {"amount_usd": 1.5, "period": "monthly"}}
    assert by_action["key.update"]["details"] == {"limits": {"tpm": 100}, "user": "carol"}
    assert by_action["credential.add"]["details"] == {"name": "audited-cred", "provider": "openai",
                                                      "base_url": None, "checked": False}
    assert by_action["model.create"]["details"]["alias"] == "audited-model"
    assert by_action["model.update"]["details"] == {"default_temperature": 0.5}
    assert by_action["model.delete"]["details"] == {"alias": "audited-model"}
    for entry in mine:
        assert entry["object"] == "audit_entry" and entry["client_ip"] == "127.0.0.1"
        assert entry["request_id"] and started <= datetime.fromisoformat(entry["at"]) <= datetime.now(UTC)
    assert [e["at"] for e in entries] == sorted((e["at"] for e in entries), reverse=True)

    # No secret anywhere in the table: not the keys, not the credential, not the admin's own key.
    raw = repr(_raw_audit(server))
    for secret in (made["key"], rotated["key"], CRED_SECRET, server.admin_key, STATIC, MASTER, UPSTREAM_KEY):
        assert str(secret) not in raw
    assert "sk-sy-" not in raw and "key_hash" not in raw


def test_static_admin_keys_are_recorded_as_static(server: RunningServer) -> None:
    with server.http(STATIC) as http:
        team = _ok(http.post("/admin/teams", json={"name": "by-static"}), 201)
        entries = _audit(http, object_id=team["id"])
    assert [(e["actor"], e["action"]) for e in entries] == [("static", "team.create")]


def test_audit_filters(server: RunningServer) -> None:
    admin_id = _admin_id(server)
    with server.http(server.admin_key) as http:
        made = _ok(http.post("/admin/keys", json={"name": "filtered"}), 201)
        _ok(http.patch(f"/admin/keys/{made['id']}", json={"user": "dave"}))
        _ok(http.patch(f"/admin/keys/{made['id']}", json={"user": "erin"}))
        team = _ok(http.post("/admin/teams", json={"name": "filtered-team"}), 201)

        about_key = _audit(http, object_id=made["id"])
        assert [e["action"] for e in about_key] == ["key.update", "key.update", "key.create"]  # newest first
        assert [e["details"].get("user") for e in about_key] == ["erin", "dave", None]
        assert [e["action"] for e in _audit(http, object_id=made["id"], action="key.update")] == ["key.update"] * 2
        assert {e["action"] for e in _audit(http, action="key.", limit=1000)} <= {
            "key.create", "key.update", "key.rotate", "key.revoke"}
        assert [e["object_id"] for e in _audit(http, action="team.create", limit=1)] == [team["id"]]
        assert _audit(http, action="%") == [] and _audit(http, action="_ey.") == []  # a prefix, not a pattern
        assert len(_audit(http, object_id=made["id"], limit=2)) == 2
        assert {e["actor"] for e in _audit(http, actor=admin_id, limit=1000)} == {admin_id}
        assert _audit(http, actor="nobody") == []

        newest = about_key[0]["at"]
        oldest = about_key[-1]["at"]
        assert _audit(http, object_id=made["id"], until=oldest) == []  # until excludes
        assert [e["at"] for e in _audit(http, object_id=made["id"], since=newest)] == [newest]  # since includes
        assert len(_audit(http, object_id=made["id"], since="1h")) == 3  # an age
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert _audit(http, object_id=made["id"], since=future) == []

        for params, param in [({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "x"}, "limit"),
                              ({"since": "yesterday"}, "since"), ({"until": "12 o'clock"}, "until"),
                              ({"colour": "red"}, "colour")]:
            resp = http.get("/admin/audit", params=params)
            assert resp.status_code == 400, (params, resp.text)
            assert resp.json()["error"]["param"] == param
