"""The console's security over HTTP: sessions (cookie flags, CSRF on every change, log-out,
expiry, a revoked key), what a key that is not an admin can reach, the headers on /ui, the
sign-in rate limit, and that a server whose console is never opened never loads it."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server
from tests.ui.conftest import Console, priced_config

HELLO = [{"role": "user", "content": "hi"}]
SignIn = Callable[[RunningServer, str], Console]


def new_key(server: RunningServer, **fields: Any) -> dict[str, Any]:
    with server.http(server.admin_key) as http:
        resp = http.post("/admin/keys", json={"name": "ui-test", **fields})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def test_console_pages_carry_a_csp_with_no_inline_script_and_the_other_headers(ui_server: RunningServer) -> None:
    with httpx.Client(base_url=ui_server.url) as http:
        page = http.get("/ui")
        script = http.get("/ui/static/console.js")
        missing = [http.get(p) for p in ("/ui/static/nope.js", "/ui/static/..%2Fpages.py", "/ui/static/pages.py")]
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for resp in (page, script):
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["referrer-policy"] == "no-referrer"
    assert script.headers["content-type"].startswith("text/javascript")
    # every <script> names a file: none carries code inline, which the CSP would block anyway
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all('src="/ui/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", page.text)  # no inline event handlers
    assert [r.status_code for r in missing] == [404, 401, 404]  # (a path outside static/ is no console route)
    assert all("import" not in r.text for r in missing)


def test_sign_in_sets_an_httponly_strict_cookie_that_is_not_the_key(ui_server: RunningServer) -> None:
    with httpx.Client(base_url=ui_server.url) as http:
        resp = http.post("/ui/api/session", json={"key": ui_server.admin_key})
        over_tls = http.post("/ui/api/session", json={"key": ui_server.admin_key},
                             headers={"x-forwarded-proto": "https"})  # from loopback: a trusted proxy
        bad = http.post("/ui/api/session", json={"key": "sk-not-a-key"})
    assert resp.status_code == 200, resp.text
    cookie = resp.headers["set-cookie"]
    assert re.search(r"(?i)httponly", cookie) and re.search(r"(?i)samesite=strict", cookie)
    assert re.search(r"(?i)max-age=28800", cookie) and "Path=/" in cookie
    assert "secure" not in cookie.lower()  # plain HTTP here
    assert "secure" in over_tls.headers["set-cookie"].lower()
    assert ui_server.admin_key not in cookie and ui_server.admin_key not in resp.text
    assert resp.json()["admin"] is True and len(resp.json()["csrf_token"]) >= 32
    assert bad.status_code == 401 and "set-cookie" not in bad.headers


def test_signing_in_again_ends_the_session_it_replaces(ui_server: RunningServer, console: SignIn) -> None:
    admin = console(ui_server, ui_server.admin_key)
    first = admin.http.cookies["switchyard_session"]
    again = admin.http.post("/ui/api/session", json={"key": ui_server.admin_key})
    assert again.status_code == 200 and admin.http.cookies["switchyard_session"] != first
    assert admin.http.get("/ui/api/session").status_code == 200
    with httpx.Client(base_url=ui_server.url, cookies={"switchyard_session": first}) as old:
        assert old.get("/ui/api/session").status_code == 401


def test_a_change_without_the_csrf_token_is_refused(ui_server: RunningServer, console: SignIn) -> None:
    admin = console(ui_server, ui_server.admin_key)
    before = admin.http.get("/admin/keys")  # reading needs no token
    assert before.status_code == 200
    no_token = admin.http.post("/admin/keys", json={"name": "csrf-none"})
    wrong = admin.http.post("/admin/keys", json={"name": "csrf-wrong"}, headers={"x-csrf-token": "x" * 43})
    chat = admin.http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
    assert [r.status_code for r in (no_token, wrong, chat)] == [403, 403, 403]
    assert no_token.json()["error"]["type"] == "permission_error"
    names = {k["name"] for k in admin.http.get("/admin/keys").json()["data"]}
    assert not names & {"csrf-none", "csrf-wrong"}
    made = admin.change("POST", "/admin/keys", json={"name": "csrf-ok"})
    assert made.status_code == 201, made.text
    with ui_server.http(ui_server.admin_key) as http:  # the audit log names the admin who signed in
        entries = http.get("/admin/audit", params={"object_id": made.json()["id"]}).json()["data"]
    assert [e["action"] for e in entries] == ["key.create"]


def test_a_key_that_is_not_an_admin_sees_only_its_own(ui_server: RunningServer, console: SignIn) -> None:
    mine = new_key(ui_server, budget={"amount_usd": 5, "period": "daily"})
    theirs = new_key(ui_server)
    for key in (mine, theirs):
        with ui_server.http(key["key"]) as http:
            assert http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO}).status_code == 200
    me = console(ui_server, mine["key"])
    assert me.who["admin"] is False and me.who["key_id"] == mine["id"]
    refused = [me.http.get(p) for p in ("/admin/keys", f"/admin/keys/{theirs['id']}", "/admin/usage",
                                         "/admin/teams", "/admin/audit", "/admin/status", "/admin/upstreams")]
    refused += [me.change("POST", "/admin/keys", json={"name": "sneaky"}),
                me.change("POST", f"/admin/keys/{theirs['id']}/revoke"),
                me.change("PATCH", f"/admin/keys/{mine['id']}", json={"budget": None}),
                me.change("PATCH", "/admin/models/m", json={"input_cost_per_1m": 0}),
                me.change("POST", "/admin/credentials/any/check"),
                me.change("POST", "/admin/credentials/any/deactivate"),
                me.change("DELETE", "/admin/credentials/any")]
    assert [r.status_code for r in refused] == [403] * len(refused)
    deadline = time.monotonic() + 5
    while True:  # the usage rows are written in batches
        rows = me.http.get("/ui/api/me/usage", params={"group_by": "key", "key": theirs["id"]}).json()["data"]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [r["key_id"] for r in rows] == [mine["id"]] and rows[0]["requests"] == 1
    own = me.http.get("/ui/api/me").json()
    assert own["key"]["id"] == mine["id"] and "key" not in own["key"]  # (never a secret)
    assert own["models"] == ["m", "other"]
    assert own["budget_status"]["spent_usd"] > 0
    with ui_server.http(ui_server.admin_key) as http:
        assert http.get(f"/admin/keys/{theirs['id']}").json()["active"] is True


def test_log_out_ends_the_session_and_needs_the_token(ui_server: RunningServer, console: SignIn) -> None:
    admin = console(ui_server, ui_server.admin_key)
    assert admin.http.delete("/ui/api/session").status_code == 403  # no token: nobody signs you out
    assert admin.http.get("/ui/api/session").status_code == 200
    cookie = admin.http.cookies["switchyard_session"]
    out = admin.change("DELETE", "/ui/api/session")
    assert out.status_code == 200 and "switchyard_session=\"\"" in out.headers["set-cookie"]
    with httpx.Client(base_url=ui_server.url, cookies={"switchyard_session": cookie}) as replay:
        assert replay.get("/ui/api/session").status_code == 401
        assert replay.get("/admin/keys").status_code == 401
        assert replay.post("/admin/keys", json={"name": "x"}, headers={"x-csrf-token": admin.csrf}).status_code == 401


def test_revoking_or_rotating_the_key_ends_its_sessions(ui_server: RunningServer, console: SignIn) -> None:
    revoked, rotated = new_key(ui_server), new_key(ui_server)
    first, second = console(ui_server, revoked["key"]), console(ui_server, rotated["key"])
    assert first.http.get("/ui/api/me").status_code == 200 and second.http.get("/ui/api/me").status_code == 200
    with ui_server.http(ui_server.admin_key) as http:
        assert http.post(f"/admin/keys/{revoked['id']}/revoke").status_code == 200
        assert http.post(f"/admin/keys/{rotated['id']}/rotate").status_code == 200
    assert first.http.get("/ui/api/me").status_code == 401
    assert second.http.get("/ui/api/me").status_code == 401


def test_an_expired_session_is_refused(tmp_path: Path, ui_upstream: FakeOpenAI, console: SignIn) -> None:
    with run_server(tmp_path, ui_session_ttl=1.0, **priced_config(ui_upstream)) as srv:
        admin = console(srv, srv.admin_key)
        assert admin.http.get("/admin/keys").status_code == 200
        time.sleep(1.2)
        assert admin.http.get("/admin/keys").status_code == 401
        assert admin.http.get("/ui/api/session").status_code == 401


def test_sign_in_attempts_are_limited_per_address(tmp_path: Path, ui_upstream: FakeOpenAI) -> None:
    with run_server(tmp_path, ui_sign_in_per_minute=3, **priced_config(ui_upstream)) as srv, \
            httpx.Client(base_url=srv.url) as http:
        wrong = [http.post("/ui/api/session", json={"key": f"sk-guess-{i}"}).status_code for i in range(3)]
        right = http.post("/ui/api/session", json={"key": srv.admin_key})
        assert wrong == [401, 401, 401]
        assert right.status_code == 429 and right.json()["error"]["type"] == "rate_limit_error"
        assert "set-cookie" not in right.headers


@pytest.mark.parametrize("body", [b"key=sk-x", b"{}", b"[]", b'{"key": 5}'])
def test_a_bad_sign_in_body_is_a_clear_400(ui_server: RunningServer, body: bytes) -> None:
    content_type = "application/x-www-form-urlencoded" if body.startswith(b"key=") else "application/json"
    with httpx.Client(base_url=ui_server.url) as http:
        resp = http.post("/ui/api/session", content=body, headers={"content-type": content_type})
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_the_console_is_not_loaded_until_it_is_opened(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from starlette.testclient import TestClient\n"
        "from switchyard.app import create_app\n"
        "from switchyard.settings import Settings\n"
        f"s = Settings(data_dir={str(tmp_path)!r}, bundled_models='off', auth=False)\n"
        "with TestClient(create_app(s)) as c:\n"
        "    assert c.get('/health').status_code == 200\n"
        "    print(sorted(m for m in sys.modules if m.startswith('switchyard.http.ui')))\n"
        "    assert c.get('/ui').status_code == 200\n"
        "    print(sorted(m for m in sys.modules if m.startswith('switchyard.http.ui')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    before, after = done.stdout.splitlines()[-2:]
    assert before == "[]", done.stderr
    assert "'switchyard.http.ui.pages'" in after
