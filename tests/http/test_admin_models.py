"""/admin/models through real servers: models stored in the database, served without a restart,
merged with the YAML file's (the file wins), and seen by every replica sharing the database."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from switchyard.store import Database, upgrade
from switchyard.store.models import SqlModelStore
from tests.conftest import UPSTREAM_KEY, SdkFactory, reset_pg_schema
from tests.contract.openapi import validate
from tests.fakes._server import RecordedRequest
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import RunningServer, run_server

MASTER_KEY = "m" * 40
FILE_MODELS = [
    {"alias": "from-file", "provider": "fake", "model": "gpt-4o-mini"},
    {"alias": "taken", "provider": "fake", "model": "gpt-4o"},
]


def yaml_settings(upstream: FakeOpenAI) -> dict[str, Any]:
    return {
        "providers": {"fake": {"type": "openai", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY,
                               "cooldown_failures": 0}},
        "models": FILE_MODELS,
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[RunningServer]:
    with run_server(tmp_path_factory.mktemp("admin-models"), master_key=MASTER_KEY,
                    **yaml_settings(upstream)) as running:
        yield running


def admin(server: RunningServer, method: str, path: str, body: Any = None) -> httpx.Response:
    with server.http(server.admin_key) as http:
        return http.request(method, path, json=body)


def created(server: RunningServer, body: dict[str, Any]) -> dict[str, Any]:
    resp = admin(server, "POST", "/admin/models", body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def ask(client: openai.OpenAI, upstream: FakeOpenAI, model: str, **kwargs: Any) -> tuple[Any, RecordedRequest]:
    """A chat completion through the gateway, and the request the upstream received for it."""
    marker = f"marker-{uuid.uuid4().hex}"
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": marker}], **kwargs)
    seen = [r for r in upstream.requests if isinstance(r.body, dict) and marker in str(r.body.get("messages"))]
    assert len(seen) == 1
    return reply, seen[0]


def eventually(check: Callable[[], bool], timeout: float = 2.0) -> float:
    """Poll ``check`` until it holds; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


def listed(server: RunningServer) -> set[str]:
    with server.http(server.admin_key) as http:
        return {m["id"] for m in http.get("/v1/models").json()["data"]}


def test_a_created_model_is_served_at_once_updated_and_deleted(
    sdk: SdkFactory, server: RunningServer, upstream: FakeOpenAI
) -> None:
    client = sdk(server.v1, server.admin_key)
    made = created(server, {"alias": "dyn", "provider": "fake", "model": "gpt-4o-mini"})
    assert made["id"].startswith("mdl_")
    assert (made["source"], made["alias"], made["model"], made["status"]) == ("database", "dyn", "gpt-4o-mini",
                                                                              "serving")
    assert made["shadowed_by_file"] is False and made["active"] is True and made["supports_streaming"] is True
    assert "dyn" in listed(server)  # /v1/models lists it like a file model

    reply, sent = ask(client, upstream, "dyn")
    validate(reply.model_dump(exclude_unset=True), "CreateChatCompletionResponse")
    assert reply.choices[0].message.content
    assert sent.path == "/v1/chat/completions" and sent.body["model"] == "gpt-4o-mini"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"

    patched = admin(server, "PATCH", f"/admin/models/{made['id']}", {"model": "gpt-4o"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["model"] == "gpt-4o" and patched.json()["updated_at"] >= made["updated_at"]
    _, sent = ask(client, upstream, "dyn")
    assert sent.body["model"] == "gpt-4o"
    stream = list(client.chat.completions.create(model="dyn", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True))
    for chunk in stream:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    assert stream

    by_alias = admin(server, "GET", "/admin/models/dyn").json()
    assert by_alias["id"] == made["id"] and by_alias["model"] == "gpt-4o"

    deleted = admin(server, "DELETE", f"/admin/models/{made['id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    with pytest.raises(openai.NotFoundError) as gone:
        client.chat.completions.create(model="dyn", messages=[{"role": "user", "content": "hi"}])
    assert gone.value.code == "model_not_found"
    assert "dyn" not in listed(server)
    assert admin(server, "GET", f"/admin/models/{made['id']}").status_code == 404
    assert admin(server, "DELETE", f"/admin/models/{made['id']}").status_code == 404
    # the alias is free again
    again = created(server, {"alias": "dyn", "provider": "fake"})
    assert again["id"] != made["id"] and again["model"] == "dyn"
    assert admin(server, "DELETE", "/admin/models/dyn").status_code == 200


def test_seed_camel_case_body_and_default_temperature(
    sdk: SdkFactory, server: RunningServer, upstream: FakeOpenAI
) -> None:
    client = sdk(server.v1, server.admin_key)
    made = created(server, {"name": "seedy", "provider": "fake", "modelId": "gpt-4o-mini", "maxTokens": 4096,
                            "defaultTemperature": 0.25, "isDefault": True, "isActive": True,
                            "inputCostPer1k": 0.5, "outputCostPer1k": 1.5,
                            "rateLimits": {"perMinute": 60, "perHour": 1000, "perDay": 10000}})
    try:
        assert (made["alias"], made["model"], made["max_tokens"], made["default_temperature"]) == (
            "seedy", "gpt-4o-mini", 4096, 0.25)
        assert made["default"] is True and made["active"] is True
        assert (made["input_cost_per_1k"], made["input_cost_per_1m"]) == (0.5, 500.0)
        assert (made["output_cost_per_1k"], made["output_cost_per_1m"]) == (1.5, 1500.0)
        assert made["rate_limits"] == {"per_minute": 60, "per_hour": 1000, "per_day": 10000}
        assert made["rate_limits_enforced"] is True
        everything = admin(server, "GET", "/admin/models").json()
        assert everything["default"] == "seedy"
        assert [m["default"] for m in everything["data"] if m["alias"] == "seedy"] == [True]

        with server.http(server.admin_key) as http:
            caps = http.get("/v1/models/seedy").json()["capabilities"]
        assert caps["context_length"] == 4096

        _, sent = ask(client, upstream, "seedy")
        assert sent.body["temperature"] == 0.25 and sent.body["model"] == "gpt-4o-mini"
        _, sent = ask(client, upstream, "seedy", temperature=1.5)
        assert sent.body["temperature"] == 1.5
        with server.http(server.admin_key) as http:  # a request naming no model goes to the default
            unnamed = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert unnamed.status_code == 200 and upstream.last_request.body["model"] == "gpt-4o-mini"

        # a second default takes the mark from the first
        other = created(server, {"alias": "other-default", "provider": "fake", "default": True})
        assert admin(server, "GET", "/admin/models").json()["default"] == "other-default"
        assert admin(server, "GET", "/admin/models/seedy").json()["default"] is False
        assert admin(server, "DELETE", f"/admin/models/{other['id']}").status_code == 200
        assert admin(server, "GET", "/admin/models").json()["default"] is None
        with server.http(server.admin_key) as http:
            unnamed = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert unnamed.status_code == 400 and unnamed.json()["error"]["param"] == "model"
    finally:
        admin(server, "DELETE", "/admin/models/seedy")


def test_capability_fields_reach_the_contract(sdk: SdkFactory, server: RunningServer) -> None:
    client = sdk(server.v1, server.admin_key)
    made = created(server, {"alias": "nostream", "provider": "fake", "supports_streaming": False, "max_tokens": 50,
                            "provider_settings": {"capabilities": {"vision": False}, "timeout": 30}})
    try:
        assert made["provider_settings"] == {"capabilities": {"vision": False}, "timeout": 30}
        with pytest.raises(openai.BadRequestError) as streamed:
            client.chat.completions.create(model="nostream", messages=[{"role": "user", "content": "hi"}],
                                           stream=True)
        assert streamed.value.param == "stream"
        with pytest.raises(openai.BadRequestError) as too_long:
            client.chat.completions.create(model="nostream", messages=[{"role": "user", "content": "word " * 400}])
        assert too_long.value.code == "context_length_exceeded"
        assert client.chat.completions.create(model="nostream", messages=[{"role": "user", "content": "hi"}]).choices
    finally:
        admin(server, "DELETE", "/admin/models/nostream")


def test_inactive_models_are_kept_but_not_served(sdk: SdkFactory, server: RunningServer, upstream: FakeOpenAI) -> None:
    client = sdk(server.v1, server.admin_key)
    made = created(server, {"alias": "sleepy", "provider": "fake", "active": False})
    try:
        assert made["status"] == "inactive" and "sleepy" not in listed(server)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="sleepy", messages=[{"role": "user", "content": "hi"}])
        assert admin(server, "PUT", "/admin/models/sleepy", {"isActive": True}).json()["status"] == "serving"
        _, sent = ask(client, upstream, "sleepy")
        assert sent.body["model"] == "sleepy"  # no upstream id given: the alias
    finally:
        admin(server, "DELETE", "/admin/models/sleepy")


def test_the_file_wins_and_says_so(sdk: SdkFactory, server: RunningServer, upstream: FakeOpenAI) -> None:
    client = sdk(server.v1, server.admin_key)
    made = created(server, {"alias": "taken", "provider": "fake", "model": "gpt-4o-mini"})
    try:
        assert made["shadowed_by_file"] is True and made["status"] == "shadowed_by_file"
        assert "configuration file" in made["note"] and "file wins" in made["note"]
        _, sent = ask(client, upstream, "taken")
        assert sent.body["model"] == "gpt-4o"  # the file's upstream id, not the stored one
        data = admin(server, "GET", "/admin/models").json()["data"]
        mine = [(m["source"], m["model"], m["shadowed_by_file"]) for m in data if m["alias"] == "taken"]
        assert mine == [("file", "gpt-4o", False), ("database", "gpt-4o-mini", True)]
        assert {m["alias"] for m in data if m["source"] == "file"} == {"from-file", "taken"}
        # the file's models are read-only here
        file_one = admin(server, "GET", "/admin/models/from-file").json()
        assert (file_one["source"], file_one["id"], file_one["model"]) == ("file", None, "gpt-4o-mini")
        for method in ("PATCH", "PUT", "DELETE"):
            resp = admin(server, method, "/admin/models/from-file", {"model": "x"} if method != "DELETE" else None)
            assert resp.status_code == 400 and resp.json()["error"]["code"] == "file_model", (method, resp.text)
    finally:
        assert admin(server, "DELETE", f"/admin/models/{made['id']}").status_code == 200
    _, sent = ask(client, upstream, "taken")
    assert sent.body["model"] == "gpt-4o"


def test_hosted_tools_are_shown_and_settable(server: RunningServer) -> None:
    """``hosted_tools`` (remove or reject) in the listing, for the file's models and stored ones,
    and a stored model's setting reaches /v1/responses at once."""
    data = admin(server, "GET", "/admin/models").json()["data"]
    assert {m["alias"]: m["hosted_tools"] for m in data if m["source"] == "file"} == {
        "from-file": "remove", "taken": "remove"}
    made = created(server, {"alias": "hosted", "provider": "fake", "model": "gpt-4o-mini"})
    try:
        assert made["hosted_tools"] == "remove"
        body = {"model": "hosted", "input": "hi", "tools": [{"type": "web_search"}]}
        with server.http(server.admin_key) as http:
            removed = http.post("/v1/responses", json=body)
        assert removed.status_code == 200 and removed.headers["x-switchyard-removed-tools"] == "web_search"
        patched = admin(server, "PATCH", f"/admin/models/{made['id']}", {"hosted_tools": "reject"})
        assert patched.status_code == 200 and patched.json()["hosted_tools"] == "reject"
        assert admin(server, "GET", "/admin/models/hosted").json()["hosted_tools"] == "reject"
        with server.http(server.admin_key) as http:
            refused = http.post("/v1/responses", json=body)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools[0].type"
        back = admin(server, "PATCH", f"/admin/models/{made['id']}", {"hosted_tools": None})
        assert back.status_code == 200 and back.json()["hosted_tools"] == "remove"
    finally:
        assert admin(server, "DELETE", f"/admin/models/{made['id']}").status_code == 200


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"alias": "x", "provider": "fake", "api_key": "sk-live-123456"}, "api_key", "plain_api_key"),
        ({"alias": "x", "provider": "fake", "apiKey": "sk-live-123456"}, "apiKey", "plain_api_key"),
        ({"alias": "x", "provider": "fake", "provider_settings": {"api_key": "sk-live-123456"}},
         "provider_settings.api_key", "plain_api_key"),
        ({"alias": "x", "provider": "nowhere"}, "provider", None),
        ({"alias": "x", "provider": "openai"}, "base_url", None),
        ({"alias": "x"}, "provider", None),
        ({"provider": "fake"}, "alias", None),
        ({"alias": "has space", "provider": "fake"}, "alias", None),
        ({"alias": "x", "provider": "fake", "colour": "blue"}, "colour", None),
        ({"alias": "x", "provider": "fake", "maxTokens": 0}, "maxTokens", None),
        ({"alias": "x", "provider": "fake", "default_temperature": 3}, "default_temperature", None),
        ({"alias": "x", "provider": "fake", "hosted_tools": "drop"}, "hosted_tools", None),
        ({"alias": "x", "provider": "fake", "provider_settings": {"capabilities": {"responses": "sometimes"}}},
         "provider_settings.capabilities", None),
        ({"alias": "x", "provider": "fake", "input_cost_per_1k": -1}, "input_cost_per_1k", None),
        ({"alias": "x", "provider": "fake", "active": "yes"}, "active", None),
        ({"alias": "x", "provider": "fake", "rate_limits": {"per_minute": 0}}, "rate_limits.per_minute", None),
        ({"alias": "x", "provider": "fake", "provider_settings": {"bogus": 1}}, "provider_settings.bogus", None),
        ({"alias": "x", "provider": "fake", "provider_settings": {"fallbacks": ["nope"]}},
         "provider_settings.fallbacks.0", None),
        ({"alias": "x", "provider": "fake", "provider_settings": {"capabilities": {"telepathy": True}}},
         "provider_settings.capabilities", None),
        ({"alias": "x", "provider": "fake", "provider_settings": {"drop_params": ["stream"]}},
         "provider_settings.drop_params", None),
        ({"alias": "x", "provider": "fake", "credential": "not-in-vault"}, "credential", "unknown_credential"),
        ({"alias": "x", "name": "y", "provider": "fake"}, "name", None),
        ({"alias": "x", "provider": "openai", "base_url": "http:///v1"}, "base_url", None),
    ],
)
def test_bad_bodies_are_400_naming_the_field(server: RunningServer, body: dict[str, Any], param: str,
                                             code: str | None) -> None:
    resp = admin(server, "POST", "/admin/models", body)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error", err
    if code is not None:
        assert err["code"] == code
    assert "sk-live-123456" not in resp.text
    assert "x" not in {m["alias"] for m in admin(server, "GET", "/admin/models").json()["data"]}


def test_other_errors(server: RunningServer) -> None:
    made = created(server, {"alias": "dupe", "provider": "fake", "provider_settings": {"fallbacks": ["from-file"]}})
    try:
        dup = admin(server, "POST", "/admin/models", {"alias": "dupe", "provider": "fake"})
        assert dup.status_code == 400 and dup.json()["error"]["code"] == "duplicate_alias"
        assert dup.json()["error"]["param"] == "alias"
        other = created(server, {"alias": "dupe2", "provider": "fake"})
        renamed = admin(server, "PATCH", f"/admin/models/{other['id']}", {"alias": "dupe"})
        assert renamed.status_code == 400 and renamed.json()["error"]["code"] == "duplicate_alias"
        assert admin(server, "DELETE", f"/admin/models/{other['id']}").status_code == 200
        bad_patch = admin(server, "PATCH", f"/admin/models/{made['id']}", {"provider": "nowhere"})
        assert bad_patch.status_code == 400 and bad_patch.json()["error"]["param"] == "provider"
        # a merge patch: null removes a field, nested objects merge
        patched = admin(server, "PATCH", f"/admin/models/{made['id']}",
                        {"provider_settings": {"timeout": 5, "fallbacks": None}}).json()
        assert patched["provider_settings"] == {"timeout": 5}
        for method, body in (("GET", None), ("PATCH", {"model": "x"}), ("PUT", {"model": "x"}), ("DELETE", None)):
            missing = admin(server, method, "/admin/models/mdl_doesnotexist", body)
            assert missing.status_code == 404 and missing.json()["error"]["param"] == "id", method
        not_object = admin(server, "POST", "/admin/models", ["alias", "x"])
        assert not_object.status_code == 400
    finally:
        admin(server, "DELETE", f"/admin/models/{made['id']}")


def test_a_fetched_record_can_be_sent_back(server: RunningServer) -> None:
    made = created(server, {"alias": "roundtrip", "provider": "fake", "model": "gpt-4o-mini", "max_tokens": 8000,
                            "input_cost_per_1m": 0.15, "rate_limits": {"per_day": 5},
                            "provider_settings": {"max_concurrent": 2, "drop_params": ["logprobs"]}})
    try:
        record = admin(server, "GET", f"/admin/models/{made['id']}").json()
        assert record["input_cost_per_1k"] == 0.00015
        put = admin(server, "PUT", f"/admin/models/{made['id']}", {**record, "default_temperature": 0.7})
        assert put.status_code == 200, put.text
        ignore = {"updated_at", "default_temperature"}
        assert {k: v for k, v in put.json().items() if k not in ignore} == {
            k: v for k, v in record.items() if k not in ignore}
        assert put.json()["default_temperature"] == 0.7
    finally:
        admin(server, "DELETE", f"/admin/models/{made['id']}")


def test_non_admin_keys_get_403(server: RunningServer) -> None:
    with server.http(server.admin_key) as http:
        user = http.post("/admin/keys", json={"name": "plain"}).json()["key"]
    with server.http(user) as http:
        assert http.get("/admin/models").status_code == 403
        assert http.post("/admin/models", json={"alias": "z", "provider": "fake"}).status_code == 403
        assert http.get("/admin/models/from-file").status_code == 403
        assert http.patch("/admin/models/from-file", json={"model": "x"}).status_code == 403
        assert http.delete("/admin/models/from-file").status_code == 403
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/admin/models").status_code == 401


def test_vault_credentials_and_bad_rows(sdk: SdkFactory, tmp_path: Path, upstream: FakeOpenAI) -> None:
    """A model may use a vault credential; a stored row that cannot be built (its credential is
    gone) is skipped and reported, and never keeps the server from starting."""
    settings = yaml_settings(upstream)
    settings["providers"]["keyless"] = {"type": "openai", "base_url": upstream.base_url}
    url = f"sqlite+aiosqlite:///{tmp_path / 'switchyard.db'}"

    async def broken_row() -> None:
        await upgrade(url)
        async with Database.create(url) as db:
            await SqlModelStore(db.engine).add("orphan", {"provider": "keyless", "credential": "gone"},
                                               at=datetime.now(UTC))

    asyncio.run(broken_row())
    with run_server(tmp_path, master_key=MASTER_KEY, **settings) as server:
        client = sdk(server.v1, server.admin_key)
        orphan = admin(server, "GET", "/admin/models/orphan").json()
        assert orphan["status"] == "error" and "gone" in orphan["note"]
        assert "orphan" not in listed(server)
        assert client.chat.completions.create(model="from-file", messages=[{"role": "user", "content": "hi"}])

        cred = admin(server, "POST", "/admin/credentials",
                     {"name": "up-key", "provider": "openai", "api_key": UPSTREAM_KEY, "check": False})
        assert cred.status_code in (200, 201), cred.text
        vaulted = created(server, {"alias": "vaulted", "provider": "keyless", "credential": "up-key",
                                   "model": "gpt-4o-mini"})
        assert vaulted["credential"] == "up-key" and vaulted["status"] == "serving"
        assert UPSTREAM_KEY not in str(admin(server, "GET", "/admin/models").json())
        _, sent = ask(client, upstream, "vaulted")
        assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"

        fixed = admin(server, "PATCH", "/admin/models/orphan", {"credential": "up-key"})
        assert fixed.status_code == 200 and fixed.json()["status"] == "serving"
        _, sent = ask(client, upstream, "orphan")
        assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_two_replicas_share_models_through_postgresql(
    sdk: SdkFactory, tmp_path: Path, pg_url: str, upstream: FakeOpenAI
) -> None:
    asyncio.run(reset_pg_schema(pg_url))
    shared = {"database_url": pg_url, "secret_key": "s" * 40, **yaml_settings(upstream)}
    with run_server(tmp_path / "a", **shared) as a, run_server(tmp_path / "b", **shared) as b:
        client_a, client_b = sdk(a.v1, a.admin_key), sdk(b.v1, b.admin_key)
        assert "replicated" not in listed(b)
        made = created(a, {"alias": "replicated", "provider": "fake", "model": "gpt-4o-mini"})

        def b_serves(model: str) -> Callable[[], bool]:
            def check() -> bool:
                try:
                    _, sent = ask(client_b, upstream, "replicated")
                except openai.NotFoundError:
                    return False
                return bool(sent.body["model"] == model)
            return check

        took = eventually(b_serves("gpt-4o-mini"))
        assert took < 2.0 and "replicated" in listed(b)
        assert admin(b, "GET", f"/admin/models/{made['id']}").json()["status"] == "serving"

        assert admin(a, "PATCH", f"/admin/models/{made['id']}", {"modelId": "gpt-4o"}).status_code == 200
        eventually(b_serves("gpt-4o"))

        assert admin(b, "DELETE", f"/admin/models/{made['id']}").status_code == 200

        def a_forgot() -> bool:
            try:
                client_a.chat.completions.create(model="replicated", messages=[{"role": "user", "content": "hi"}])
            except openai.NotFoundError as exc:
                return exc.code == "model_not_found"
            return False

        eventually(a_forgot)
        assert "replicated" not in listed(a)
        assert admin(a, "GET", f"/admin/models/{made['id']}").status_code == 404


def test_a_stored_models_rate_limits_are_enforced(server: RunningServer) -> None:
    made = created(server, {"alias": "metered", "provider": "fake", "model": "gpt-4o-mini",
                            "rate_limits": {"per_minute": 2}})
    try:
        with server.http(server.admin_key) as http:
            codes = [http.post("/v1/chat/completions", json={"model": "metered", "messages": [
                {"role": "user", "content": "hi"}]}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
    finally:
        admin(server, "DELETE", f"/admin/models/{made['id']}")


def test_cache_prices_are_stored_patched_and_charged(server: RunningServer) -> None:
    made = created(server, {"alias": "cachey", "provider": "fake", "model": "cached", "inputCostPer1m": 2.0,
                            "outputCostPer1m": 8.0, "cacheReadCostPer1k": 0.0005})
    long_prompt = {"model": "cachey", "messages": [{"role": "system", "content": "x " * 1100},
                                                   {"role": "user", "content": "hello"}]}

    def charged() -> dict[str, Any]:
        with server.http(server.admin_key) as http:
            reply = http.post("/v1/chat/completions", json=long_prompt)
        assert reply.status_code == 200, reply.text
        return server.usage_row(reply.headers["x-request-id"])

    try:
        assert (made["cache_read_cost_per_1m"], made["cache_write_cost_per_1m"]) == (0.5, None)
        row = charged()
        assert (row["prompt_tokens"], row["cache_read_tokens"]) == (1101, 1024)
        assert row["cost_usd"] == pytest.approx((77 * 2.0 + 1024 * 0.5 + row["completion_tokens"] * 8.0) / 1e6)
        patched = admin(server, "PATCH", "/admin/models/cachey", {"cache_read_cost_per_1m": None,
                                                                  "cache_write_cost_per_1m": 2.5})
        assert patched.status_code == 200, patched.text
        assert (patched.json()["cache_read_cost_per_1m"], patched.json()["cache_write_cost_per_1m"]) == (None, 2.5)
        row = charged()  # no cache read price: the cached tokens cost the input price, once
        assert row["cost_usd"] == pytest.approx((1101 * 2.0 + row["completion_tokens"] * 8.0) / 1e6)
        bad = admin(server, "PATCH", "/admin/models/cachey", {"cache_write_cost_per_1m": -1})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "cache_write_cost_per_1m", bad.text
    finally:
        admin(server, "DELETE", f"/admin/models/{made['id']}")
