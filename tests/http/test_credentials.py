"""/admin/credentials and the internal decrypt route, through a real server."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchyard.errors import AuthenticationError
from switchyard.observability.logging import JsonFormatter
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, make_key, run_server

MASTER = "http-test-master-key-0123456789-abcdefgh"
INTERNAL = "internal-secret-for-the-decrypt-route"
GOOD_KEY = "sk-proj-http-good-key-abcdefghijklmnopqrstuvwxyz"
BAD_KEY = "sk-proj-http-bad-key-ZYXWVUTSRQPONMLKJIHGFEDCBA"
DECRYPT_PATHS = ("/internal/credentials/{}/decrypt", "/api/api-keys/{}/decrypt")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=GOOD_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("vault-server")
    with run_server(data_dir, master_key=MASTER, internal_secret=INTERNAL) as running:
        yield running


def add(server: RunningServer, name: str, secret: str = GOOD_KEY, **extra: object) -> dict[str, object]:
    body = {"name": name, "provider": "openai", "api_key": secret, "check": False, **extra}
    with server.http(server.admin_key) as http:
        resp = http.post("/admin/credentials", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    time.sleep(0.2)  # access lines are written in batches
    return [JsonFormatter().format(r) for r in caplog.records]


def test_create_answers_with_the_display_form_only(server: RunningServer, upstream: FakeOpenAI,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with server.http(server.admin_key) as http:
        resp = http.post("/admin/credentials", json={"name": "shown", "provider": "openai", "api_key": GOOD_KEY,
                                                     "base_url": upstream.base_url})
        assert resp.status_code == 201, resp.text
        made = resp.json()
        listed = http.get("/admin/credentials")
        by_id = http.get(f"/admin/credentials/{made['id']}")
        by_name = http.get("/admin/credentials/shown")
    assert made["display"] == "sk-pr…wxyz" and made["name"] == "shown" and made["provider"] == "openai"
    assert made["id"].startswith("cred_") and made["active"] is True and made["use_count"] == 0
    assert made["last_check_ok"] is True and made["last_checked_at"] is not None
    assert made["base_url"] == upstream.base_url
    assert upstream.last_request.headers["Authorization"] == f"Bearer {GOOD_KEY}"  # the live check ran
    assert listed.status_code == 200 and by_id.status_code == 200 and by_name.status_code == 200
    assert by_id.json() == by_name.json() == made
    assert made in listed.json()["data"]
    for resp in (listed, by_id, by_name):
        assert GOOD_KEY not in resp.text and "api_key" not in resp.json()
    assert GOOD_KEY not in json.dumps(made)
    for path in server.settings.data_dir.iterdir():
        if path.is_file():
            assert GOOD_KEY.encode() not in path.read_bytes(), f"{path.name} holds the plaintext"
    assert not [line for line in log_lines(caplog) if GOOD_KEY in line]


def test_live_check_refuses_a_bad_key(server: RunningServer, upstream: FakeOpenAI,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"name": "bad", "provider": "openai", "api_key": BAD_KEY, "base_url": upstream.base_url}
    with server.http(server.admin_key) as http:
        refused = http.post("/admin/credentials", json=body)
        assert http.get("/admin/credentials/bad").status_code == 404  # nothing stored
        unchecked = http.post("/admin/credentials?check=false", json=body)
        also = http.post("/admin/credentials", json={**body, "name": "bad-too", "check": False})
        checked = http.post("/admin/credentials/bad/check")
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "credential_check_failed" and error["param"] == "api_key"
    assert "openai" in error["message"] and "rejected the key" in error["message"]
    assert BAD_KEY not in refused.text
    assert unchecked.status_code == 201 and unchecked.json()["last_check_ok"] is None
    assert also.status_code == 201 and also.json()["last_check_ok"] is None
    assert checked.status_code == 200, checked.text
    result = checked.json()
    assert result["checked"] is True and result["last_check_ok"] is False
    assert "rejected the key" in result["last_check_error"] and BAD_KEY not in checked.text
    assert not [line for line in log_lines(caplog) if BAD_KEY in line]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"provider": "openai", "api_key": GOOD_KEY}, "name"),
        ({"name": "x", "api_key": GOOD_KEY}, "provider"),
        ({"name": "x", "provider": "openai"}, "api_key"),
        ({"name": "x", "provider": "mistral", "api_key": GOOD_KEY}, "provider"),
        ({"name": "bad name", "provider": "openai", "api_key": GOOD_KEY}, "name"),
        ({"name": "x", "provider": "openai", "api_key": 12345}, "api_key"),
        ({"name": "x", "provider": "openai", "api_key": GOOD_KEY, "base_url": "nope"}, "base_url"),
        ({"name": "x", "provider": "azure", "api_key": GOOD_KEY}, "base_url"),
        ({"name": "x", "provider": "openai", "api_key": GOOD_KEY, "colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_a_400_with_its_param(server: RunningServer, body: dict[str, object], param: str) -> None:
    with server.http(server.admin_key) as http:
        resp = http.post("/admin/credentials", json={**body, "check": False})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param and resp.json()["error"]["type"] == "invalid_request_error"
    assert GOOD_KEY not in resp.text


def test_duplicates_bodies_and_flags(server: RunningServer) -> None:
    add(server, "dupe")
    with server.http(server.admin_key) as http:
        dup = http.post("/admin/credentials", json={"name": "dupe", "provider": "openai", "api_key": BAD_KEY})
        empty = http.post("/admin/credentials", content=b"")
        not_json = http.post("/admin/credentials", content=b"{nope")
        flag = http.post("/admin/credentials?check=maybe", json={"name": "f", "provider": "openai",
                                                                 "api_key": GOOD_KEY})
        missing = [http.get("/admin/credentials/cred_missing"), http.delete("/admin/credentials/cred_missing"),
                   http.post("/admin/credentials/cred_missing/check"),
                   http.post("/admin/credentials/cred_missing/activate")]
    assert dup.status_code == 400 and dup.json()["error"]["code"] == "duplicate_name"
    assert dup.json()["error"]["param"] == "name"
    assert empty.status_code == 400 and not_json.status_code == 400
    assert flag.status_code == 400 and flag.json()["error"]["param"] == "check"
    assert [r.status_code for r in missing] == [404] * 4


def test_activate_deactivate_and_delete(server: RunningServer) -> None:
    made = add(server, "toggle")
    with server.http(server.admin_key) as http:
        off = http.post(f"/admin/credentials/{made['id']}/deactivate")
        assert off.status_code == 200 and off.json()["active"] is False
        assert http.get("/admin/credentials/toggle").json()["active"] is False
        on = http.post("/admin/credentials/toggle/activate")
        assert on.status_code == 200 and on.json()["active"] is True
        gone = http.delete(f"/admin/credentials/{made['id']}")
        assert gone.status_code == 200 and gone.json() == {"id": made["id"], "object": "credential",
                                                           "name": "toggle", "deleted": True}
        assert http.get(f"/admin/credentials/{made['id']}").status_code == 404
        assert made["id"] not in [c["id"] for c in http.get("/admin/credentials").json()["data"]]


def test_the_admin_routes_need_an_admin_key(server: RunningServer) -> None:
    made = add(server, "guarded")
    plain = make_key(server.settings, "not-admin")
    calls = [("GET", "/admin/credentials"), ("POST", "/admin/credentials"), ("GET", f"/admin/credentials/{made['id']}"),
             ("DELETE", f"/admin/credentials/{made['id']}"), ("POST", f"/admin/credentials/{made['id']}/check"),
             ("POST", f"/admin/credentials/{made['id']}/activate"),
             ("POST", f"/admin/credentials/{made['id']}/deactivate")]
    with server.http() as anonymous, server.http(plain) as user:
        for method, path in calls:
            assert anonymous.request(method, path).status_code == 401, (method, path)
            assert user.request(method, path).status_code == 403, (method, path)
    with server.http(server.admin_key) as http:
        assert http.get(f"/admin/credentials/{made['id']}").json()["active"] is True  # untouched


def test_internal_decrypt_opens_only_with_the_internal_secret(server: RunningServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    made = add(server, "internal")
    off = add(server, "internal-off", BAD_KEY)
    with server.http(server.admin_key) as http:
        assert http.post(f"/admin/credentials/{off['id']}/deactivate").status_code == 200
    constant = AuthenticationError().to_dict()
    with httpx.Client(base_url=server.url) as http:
        for template in DECRYPT_PATHS:
            path = template.format(made["id"])
            wrong = http.get(path, headers={"x-internal-secret": INTERNAL + "x"})
            missing = http.get(path)
            admin = http.get(path, headers={"Authorization": f"Bearer {server.admin_key}"})
            admin_x = http.get(path, headers={"x-api-key": server.admin_key})
            for refused in (wrong, missing, admin, admin_x):
                assert refused.status_code == 401 and refused.json() == constant, refused.text
                assert GOOD_KEY not in refused.text
            opened = http.get(path, headers={"x-internal-secret": INTERNAL})
            assert opened.status_code == 200, opened.text
            assert opened.json() == {"id": made["id"], "name": "internal", "provider": "openai", "api_key": GOOD_KEY}
            assert opened.headers["cache-control"] == "no-store"
            by_name = http.get(template.format("internal"), headers={"x-internal-secret": INTERNAL})
            assert by_name.json()["api_key"] == GOOD_KEY
            unknown = http.get(template.format("cred_missing"), headers={"x-internal-secret": INTERNAL})
            assert unknown.status_code == 404
            inactive = http.get(template.format(off["id"]), headers={"x-internal-secret": INTERNAL})
            assert inactive.status_code == 404 and BAD_KEY not in inactive.text
    lines = log_lines(caplog)
    records = [json.loads(line) for line in lines]
    decrypted = [r for r in records if r["msg"] == "credential decrypted"]
    assert len(decrypted) == 4  # two paths, by id and by name
    assert all(r["credential_id"] == made["id"] and r["client"] == "127.0.0.1" for r in decrypted)
    refused_lines = [r for r in records if r["msg"] == "credential decrypt refused"]
    assert len(refused_lines) == 8 and all(r["client"] == "127.0.0.1" for r in refused_lines)
    text = "\n".join(lines)
    for secret in (GOOD_KEY, BAD_KEY, INTERNAL, MASTER):
        assert secret not in text, f"{secret!r} reached the logs"


def test_disabled_decrypt_route_does_not_exist_and_no_master_key_is_a_clear_503(gateway: RunningServer) -> None:
    # the shared gateway has neither internal_secret nor master_key
    assert gateway.settings.internal_secret is None and gateway.settings.master_key is None
    with httpx.Client(base_url=gateway.url) as http:
        for template in DECRYPT_PATHS:
            path = template.format("cred_0123456789abcdef")
            for headers in ({"x-internal-secret": INTERNAL}, {}):  # an unknown path, so a key comes first
                resp = http.get(path, headers=headers)
                assert resp.status_code == 401, resp.text
                assert resp.json()["error"]["code"] == "invalid_api_key"
            resp = http.get(path, headers={"Authorization": f"Bearer {gateway.admin_key}"})
            assert resp.status_code == 404, resp.text
            assert resp.json()["error"]["message"] == f"Unknown route: GET {path}"
    with gateway.http(gateway.admin_key) as http:
        refused = http.post("/admin/credentials", json={"name": "x", "provider": "openai", "api_key": GOOD_KEY})
        listed = http.get("/admin/credentials")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "vault_not_configured"
    assert "SWITCHYARD_MASTER_KEY" in refused.json()["error"]["message"] and GOOD_KEY not in refused.text
    assert listed.status_code == 200 and listed.json() == {"object": "list", "data": []}


def test_a_stored_credential_is_what_the_upstream_receives(server: RunningServer, upstream: FakeOpenAI) -> None:
    """A model that names a vault credential calls its upstream with the decrypted key; the
    credential's use is counted; deactivating it takes the model out of service at once."""
    add(server, "routed", base_url=upstream.base_url, check=True)
    with server.http(server.admin_key) as http:
        made = http.post("/admin/models", json={"alias": "vaulted", "provider": "openai",
                                                "base_url": upstream.base_url, "model": "gpt-4o-mini",
                                                "credential": "routed"})
        assert made.status_code == 201, made.text
        chat = {"model": "vaulted", "messages": [{"role": "user", "content": "hi"}]}
        resp = http.post("/v1/chat/completions", json=chat)
        assert resp.status_code == 200, resp.text
        assert upstream.last_request.headers["Authorization"] == f"Bearer {GOOD_KEY}"
        deadline = time.monotonic() + 5
        while http.get("/admin/credentials/routed").json()["use_count"] < 1:
            assert time.monotonic() < deadline, "the use was never counted"
            time.sleep(0.1)
        assert http.post("/admin/credentials/routed/deactivate").status_code == 200
        gone = http.post("/v1/chat/completions", json=chat)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
        assert GOOD_KEY not in gone.text
        status = http.get("/admin/models/vaulted").json()
        assert status["status"] == "error" and "routed" in status["note"]
        assert http.post("/admin/credentials/routed/activate").status_code == 200
        assert http.post("/v1/chat/completions", json=chat).status_code == 200
        http.delete("/admin/models/vaulted")
