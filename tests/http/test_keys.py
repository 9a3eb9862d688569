"""The gateway's own keys over /admin/keys: create once-shown secrets, scope, revoke, rotate."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import httpx
import openai
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import SdkFactory
from tests.contract.test_chat import HELLO
from tests.harness import RunningServer


def create(gateway: RunningServer, **body: object) -> dict[str, object]:
    with gateway.http(gateway.admin_key) as http:
        resp = http.post("/admin/keys", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def stored_rows(gateway: RunningServer) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        engine = create_async_engine(gateway.settings.resolved_database_url)
        try:
            async with engine.connect() as conn:
                return [dict(r._mapping) for r in await conn.execute(sa.text("SELECT * FROM api_keys"))]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_created_key_is_shown_once_and_stored_only_as_hmac(gateway: RunningServer) -> None:
    made = create(gateway, name="alice")
    secret = str(made["key"])
    assert secret.startswith("sk-sy-") and len(secret) >= len("sk-sy-") + 43
    assert secret.startswith(str(made["prefix"]))
    with gateway.http(gateway.admin_key) as http:
        listed = http.get("/admin/keys").json()["data"]
        one = http.get(f"/admin/keys/{made['id']}").json()
    assert all("key" not in k for k in listed) and "key" not in one
    rows = [r for r in stored_rows(gateway) if r["id"] == made["id"]]
    assert len(rows) == 1
    assert secret not in str(rows[0])
    secret_file = (gateway.settings.data_dir / "secret.key").read_text().strip().encode()
    assert rows[0]["key_hash"] == hmac.new(secret_file, secret.encode(), hashlib.sha256).hexdigest()


def test_bearer_and_x_api_key_are_checked_identically(gateway: RunningServer) -> None:
    secret = str(create(gateway, name="both-headers")["key"])
    with httpx.Client(base_url=gateway.url) as http:
        a = http.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
        b = http.get("/v1/models", headers={"x-api-key": secret})
    assert a.status_code == b.status_code == 200 and a.json() == b.json()


def test_scoped_key_sees_and_uses_only_its_models(sdk: SdkFactory, gateway: RunningServer) -> None:
    secret = str(create(gateway, name="scoped", models=["gpt-4o-mini", "ollama/*"])["key"])
    scoped = sdk(gateway.v1, secret)
    assert [m.id for m in scoped.models.list()] == ["gpt-4o-mini"]
    assert scoped.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices
    with pytest.raises(openai.NotFoundError) as out_of_scope:
        scoped.chat.completions.create(model="no-usage", messages=HELLO)
    with pytest.raises(openai.NotFoundError) as unknown:
        scoped.chat.completions.create(model="does-not-exist", messages=HELLO)
    # out of scope is indistinguishable from unknown, apart from the echoed name
    assert out_of_scope.value.body == {**unknown.value.body,  # type: ignore[dict-item]
                                       "message": unknown.value.body["message"].replace("does-not-exist", "no-usage")}  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        scoped.models.retrieve("no-usage")
    assert scoped.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"


def test_non_admin_keys_cannot_administer(gateway: RunningServer) -> None:
    secret = str(create(gateway, name="plain")["key"])
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {secret}"}) as http:
        assert http.get("/admin/keys").status_code == 403
        assert http.post("/admin/keys", json={"name": "x"}).status_code == 403
        assert http.get("/metrics").status_code == 403


def test_revocation_takes_effect_on_the_next_request(sdk: SdkFactory, gateway: RunningServer) -> None:
    made = create(gateway, name="to-revoke")
    key = sdk(gateway.v1, str(made["key"]))
    assert key.models.list().data
    with gateway.http(gateway.admin_key) as http:
        assert http.delete(f"/admin/keys/{made['id']}").status_code == 200
        assert http.get(f"/admin/keys/{made['id']}").json()["active"] is False
    with pytest.raises(openai.AuthenticationError):
        key.models.list()


def test_rotation_replaces_the_secret(gateway: RunningServer) -> None:
    made = create(gateway, name="to-rotate", models=["gpt-4o-mini"])
    with gateway.http(gateway.admin_key) as http:
        rotated = http.post(f"/admin/keys/{made['id']}/rotate").json()
    assert rotated["id"] == made["id"] and rotated["key"] != made["key"] and rotated["models"] == ["gpt-4o-mini"]
    with httpx.Client(base_url=gateway.url) as http:
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {made['key']}"}).status_code == 401
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {rotated['key']}"}).status_code == 200


def test_expired_keys_are_refused(gateway: RunningServer) -> None:
    made = create(gateway, name="expired", expires_at="2001-01-01T00:00:00Z")
    with httpx.Client(base_url=gateway.url) as http:
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {made['key']}"}).status_code == 401


def test_admin_api_validates_and_answers_in_openai_shape(gateway: RunningServer) -> None:
    with gateway.http(gateway.admin_key) as http:
        bad = http.post("/admin/keys", json={"name": ""})
        unknown = http.delete("/admin/keys/key_doesnotexist")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "name"
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "invalid_request_error"


def test_use_count_and_last_used_are_tracked(gateway: RunningServer) -> None:
    made = create(gateway, name="counted")
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": str(made["key"])}) as http:
        for _ in range(3):
            assert http.get("/v1/models").status_code == 200
    import time

    deadline = time.monotonic() + 5
    while True:
        with gateway.http(gateway.admin_key) as http:
            info = http.get(f"/admin/keys/{made['id']}").json()
        if info["use_count"] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert info["use_count"] == 3 and info["last_used_at"] is not None


def test_every_non_public_route_requires_a_key(gateway: RunningServer) -> None:
    from switchyard.http.routes import PUBLIC_PATHS, routes

    with httpx.Client(base_url=gateway.url) as http:
        for route in routes():
            path = (route.path.replace("{model_id:path}", "gpt-4o-mini").replace("{key_id}", "key_x")
                    .replace("{name}", "console.js"))
            for method in sorted(route.methods or ()):
                if method == "HEAD":
                    continue
                resp = http.request(method, path)
                if (method, route.path) == ("POST", "/ui/api/session"):  # the console's sign-in: a key, or 400
                    assert resp.status_code == 400, resp.text
                elif route.path == "/ui/api/session":  # no session: nobody to show (401), nothing to end (200)
                    assert resp.status_code == {"GET": 401, "DELETE": 200}[method], (method, path)
                elif route.path in PUBLIC_PATHS:
                    assert resp.status_code in (200, 503), (method, path)
                else:
                    assert resp.status_code == 401, (method, path, resp.status_code)
