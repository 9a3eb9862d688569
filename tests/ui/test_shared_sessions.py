"""Console sessions shared by two real server processes on one database (a SQLite file, or the
PostgreSQL database): a cookie made by one works on the other, signing out on one ends it on both,
a session's expiry holds on both, and the table keeps only digests (never the cookie's id or a key).

Process b signs sessions in with a 2 s lifetime and process a with the default 8 h: the expiry is
stored with the session, so one made on b ends on a too."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.cli.support import ServeProcess, wait_until
from tests.conftest import STORES, reset_pg_schema
from tests.fakes import FakeOpenAI

ADMIN = "sk-shared-sessions-admin-0123456789"
COOKIE = "switchyard_session"
SHORT_TTL = 2.0


class Pair:
    def __init__(self, a: ServeProcess, b: ServeProcess, url: str) -> None:
        self.a, self.b, self.url = a, b, url

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            engine = create_async_engine(self.url)
            try:
                async with engine.connect() as conn:
                    return [dict(r) for r in (await conn.execute(sa.text(sql), params)).mappings()]
            finally:
                await engine.dispose()

        return asyncio.run(read())


@pytest.fixture(scope="module", params=STORES)
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("shared-sessions")
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        asyncio.run(reset_pg_schema(url))
    else:
        url = f"sqlite+aiosqlite:///{workdir / 'shared.db'}"
    with FakeOpenAI() as upstream:
        config = workdir / "switchyard.yaml"
        config.write_text(f"providers:\n  up: {{type: openai, base_url: '{upstream.base_url}'}}\n"
                          "models:\n  - {alias: m, provider: up, model: gpt-4o-mini}\n")
        env = {"SWITCHYARD_DATABASE_URL": url, "SWITCHYARD_SECRET_KEY": "s" * 40, "SWITCHYARD_API_KEY": ADMIN,
               "SWITCHYARD_KEY_REFRESH_INTERVAL": "0.5"}  # no Redis here: revocations arrive by the refresh
        a = ServeProcess(workdir, workdir / "a", config=config, env=env, name="a")
        try:
            a.wait_ready()  # (the schema is made once, by a)
            b = ServeProcess(workdir, workdir / "b", config=config, name="b",
                             env={**env, "SWITCHYARD_UI_SESSION_TTL": str(SHORT_TTL)})
            try:
                b.wait_ready()
                yield Pair(a, b, url)
            finally:
                b.close()
        finally:
            a.close()


def sign_in(server: ServeProcess, key: str) -> tuple[str, str]:
    """(the session cookie, the CSRF token)."""
    resp = httpx.post(server.url + "/ui/api/session", json={"key": key}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.cookies[COOKIE], resp.json()["csrf_token"]


def client(server: ServeProcess, cookie: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, cookies={COOKIE: cookie}, timeout=30)


def test_a_session_made_on_one_works_on_the_other_and_signing_out_there_ends_it_on_both(pair: Pair) -> None:
    cookie, csrf = sign_in(pair.a, ADMIN)
    with client(pair.a, cookie) as on_a, client(pair.b, cookie) as on_b:
        assert on_b.get("/ui/api/session").json()["csrf_token"] == csrf
        made = on_b.post("/admin/keys", json={"name": "made-on-b"}, headers={"x-csrf-token": csrf})
        assert made.status_code == 201, made.text
        assert on_b.post("/admin/keys", json={"name": "no-token"}).status_code == 403  # CSRF holds on b too
        assert on_a.get(f"/admin/keys/{made.json()['id']}").status_code == 200
        assert on_b.delete("/ui/api/session", headers={"x-csrf-token": csrf}).status_code == 200
        assert on_a.get("/ui/api/session").status_code == 401
        assert on_a.get("/admin/keys").status_code == 401
        assert on_b.get("/admin/keys").status_code == 401


def test_the_table_keeps_a_digest_of_the_id_and_of_the_key_never_either(pair: Pair) -> None:
    cookie, csrf = sign_in(pair.a, ADMIN)
    [row] = pair.rows("SELECT * FROM ui_sessions WHERE id_digest = :d", d=hashlib.sha256(cookie.encode()).hexdigest())
    assert row["csrf_token"] == csrf and row["key_digest"] and row["created_at"] and row["last_seen_at"]
    everything = repr(pair.rows("SELECT * FROM ui_sessions"))
    assert cookie not in everything and ADMIN not in everything


def test_a_key_revoked_on_one_ends_its_sessions_on_the_other(pair: Pair) -> None:
    with pair.a.http(ADMIN) as admin:
        key = admin.post("/admin/keys", json={"name": "revoked-elsewhere"}).json()
    cookie, _ = sign_in(pair.a, key["key"])
    with client(pair.a, cookie) as on_a:
        assert on_a.get("/ui/api/me").status_code == 200
        with pair.b.http(ADMIN) as admin:
            assert admin.post(f"/admin/keys/{key['id']}/revoke").status_code == 200
        wait_until(lambda: on_a.get("/ui/api/me").status_code == 401, 10, what="the revocation to reach a")


def test_a_session_expires_on_both_and_expired_rows_are_pruned(pair: Pair) -> None:
    cookie, _ = sign_in(pair.b, ADMIN)  # b's sessions live SHORT_TTL seconds
    with client(pair.a, cookie) as on_a, client(pair.b, cookie) as on_b:
        assert on_a.get("/admin/keys").status_code == 200
        time.sleep(SHORT_TTL + 0.3)
        assert on_a.get("/admin/keys").status_code == 401
        assert on_b.get("/ui/api/session").status_code == 401
    later, _ = sign_in(pair.b, ADMIN)
    time.sleep(SHORT_TTL + 0.3)
    assert pair.rows("SELECT id_digest FROM ui_sessions WHERE id_digest = :d",
                     d=hashlib.sha256(later.encode()).hexdigest())  # expired, still there until a sign-in
    sign_in(pair.a, ADMIN)  # any sign-in deletes the expired rows
    gone = {hashlib.sha256(c.encode()).hexdigest() for c in (cookie, later)}
    assert not gone & {r["id_digest"] for r in pair.rows("SELECT id_digest FROM ui_sessions")}
