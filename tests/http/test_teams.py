"""Teams and key owners, limits and budgets over /admin/teams and /admin/keys, through a real server."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from switchyard.core.keys import Principal
from switchyard.core.limits import Budget, RateLimits
from switchyard.runtime import open_runtime
from tests.harness import RunningServer


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _ok(resp: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    return dict(resp.json())


def _bad(resp: httpx.Response, param: str | None, code: str | None = None, status: int = 400) -> str:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code, error
    return str(error["message"])


def _principal(gateway: RunningServer, secret: str) -> Principal:
    """What a second replica on the same database makes of ``secret``: store + KeyService, no HTTP."""

    async def body() -> Principal:
        rt = await open_runtime(gateway.settings)
        try:
            await rt.keys.start()
            return await rt.keys.authenticate(secret)
        finally:
            await rt.keys.aclose()
            await rt.aclose()

    return asyncio.run(body())


def test_team_and_key_with_owners_limits_and_budget(gateway: RunningServer) -> None:
    team_name = _name("ml")
    with gateway.http(gateway.admin_key) as http:
        team = _ok(http.post("/admin/teams", json={"name": team_name, "limits": {"rpm": 100, "max_parallel": 4},
                                                   "budget": {"amount_usd": 250}}), 201)
        assert team["id"].startswith("team_") and team["object"] == "team" and team["name"] == team_name
        assert team["limits"] == {"rpm": 100, "max_parallel": 4}
        assert team["budget"] == {"amount_usd": 250.0, "period": "monthly"} and team["keys"] == 0

        made = _ok(http.post("/admin/keys", json={
            "name": "alice", "user": "alice@example.com", "team": team_name,  # by name
            "limits": {"rpm": 10, "tpm": 5000, "rph": 300, "rpd": 2000, "max_parallel": 2},
            "model_limits": {"gpt-4o": {"rpm": 3}, "ollama/*": {"tpm": 100}},
            "budget": {"amount_usd": 12.5, "period": "daily"},
        }), 201)
        secret = str(made["key"])
        expected = {
            "user": "alice@example.com", "team": team["id"], "team_name": team_name,
            "limits": {"rpm": 10, "tpm": 5000, "rph": 300, "rpd": 2000, "max_parallel": 2},
            "model_limits": {"gpt-4o": {"rpm": 3}, "ollama/*": {"tpm": 100}},
            "budget": {"amount_usd": 12.5, "period": "daily"},
        }
        assert {k: made[k] for k in expected} == expected
        got = _ok(http.get(f"/admin/keys/{made['id']}"))
        assert {k: got[k] for k in expected} == expected and "key" not in got
        listed = {k["id"]: k for k in _ok(http.get("/admin/keys"))["data"]}
        assert {k: listed[made["id"]][k] for k in expected} == expected
        assert _ok(http.get(f"/admin/teams/{team_name}"))["keys"] == 1
        assert _ok(http.get(f"/admin/teams/{team['id']}"))["name"] == team_name

        plain = _ok(http.post("/admin/keys", json={"name": "plain"}), 201)
        assert plain["user"] is None and plain["team"] is None and plain["limits"] is None
        assert plain["model_limits"] == {} and plain["budget"] is None

    # The Principal carries the key's and the team's limits and budgets.
    principal = _principal(gateway, secret)
    assert principal.key_id == made["id"] and principal.user_id == "alice@example.com"
    assert principal.team_id == team["id"]
    assert principal.limits == RateLimits(rpm=10, tpm=5000, rph=300, rpd=2000, max_parallel=2)
    assert principal.model_limits == {"gpt-4o": RateLimits(rpm=3), "ollama/*": RateLimits(tpm=100)}
    assert principal.budget == Budget(12.5, "daily")
    assert principal.team_limits == RateLimits(rpm=100, max_parallel=4)
    assert principal.team_budget == Budget(250.0, "monthly")


def test_patch_key_is_a_merge_patch_and_reaches_the_principal(gateway: RunningServer) -> None:
    first, second = _name("team-a"), _name("team-b")
    with gateway.http(gateway.admin_key) as http:
        _ok(http.post("/admin/teams", json={"name": first}), 201)
        team_b = _ok(http.post("/admin/teams", json={"name": second, "limits": {"tpm": 999}}), 201)
        made = _ok(http.post("/admin/keys", json={"name": "bob", "team": first, "limits": {"rpm": 5, "tpm": 50},
                                                  "model_limits": {"gpt-4o": {"rpm": 1}},
                                                  "budget": {"amount_usd": 3, "period": "total"}}), 201)
        key_url = f"/admin/keys/{made['id']}"
        patched = _ok(http.patch(key_url, json={
            "name": "bob2", "user": "bob@example.com", "team": team_b["id"],
            "limits": {"rpm": 7, "rpd": 70},  # tpm kept
            "model_limits": {"gpt-4o": None, "gpt-4o-mini": {"max_parallel": 1}},
            "budget": {"amount_usd": 4},  # period kept
            "models": ["gpt-4o-mini"],
        }))
        assert patched["name"] == "bob2" and patched["user"] == "bob@example.com"
        assert patched["team"] == team_b["id"] and patched["team_name"] == second
        assert patched["limits"] == {"rpm": 7, "tpm": 50, "rpd": 70}
        assert patched["model_limits"] == {"gpt-4o-mini": {"max_parallel": 1}}
        assert patched["budget"] == {"amount_usd": 4.0, "period": "total"}
        assert patched["models"] == ["gpt-4o-mini"]
        got = _ok(http.get(key_url))  # the single-key view adds where the budget stands
        assert got.pop("budget_status") == {"period": "total", "period_start": None, "period_end": None,
                                            "spent_usd": 0.0, "remaining_usd": 4.0}
        assert got == patched

        principal = _principal(gateway, str(made["key"]))
        assert principal.name == "bob2" and principal.allowed_models == ("gpt-4o-mini",)
        assert principal.limits == RateLimits(rpm=7, tpm=50, rpd=70) and principal.budget == Budget(4.0, "total")
        assert principal.team_id == team_b["id"] and principal.team_limits == RateLimits(tpm=999)

        cleared = _ok(http.patch(key_url, json={"team": None, "limits": None, "budget": None, "user": None,
                                                "model_limits": None}))
        assert cleared["team"] is None and cleared["limits"] is None and cleared["budget"] is None
        assert cleared["user"] is None and cleared["model_limits"] == {} and cleared["name"] == "bob2"
        principal = _principal(gateway, str(made["key"]))
        assert principal.team_id is None and principal.team_limits is None and principal.limits is None
        assert principal.budget is None and principal.model_limits == {}

        # the secret still works and is unchanged by a PATCH
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {made['key']}"}) as as_key:
            assert as_key.get("/v1/models").status_code == 200


def test_the_running_server_sees_team_changes_made_elsewhere_within_a_refresh(gateway: RunningServer) -> None:
    team_name = _name("live")
    with gateway.http(gateway.admin_key) as http:
        team = _ok(http.post("/admin/teams", json={"name": team_name, "limits": {"rpm": 1}}), 201)
        made = _ok(http.post("/admin/keys", json={"name": "live", "team": team_name}), 201)
    server_keys = gateway.app.state.services.keys
    assert asyncio.run(server_keys.authenticate(str(made["key"]))).team_limits == RateLimits(rpm=1)

    async def change_elsewhere() -> None:  # another replica, or the CLI, on the same database
        rt = await open_runtime(gateway.settings)
        try:
            await rt.teams.update(team["id"], limits=RateLimits(rpm=2, tpm=20), budget=Budget(9.0, "daily"))
        finally:
            await rt.aclose()

    asyncio.run(change_elsewhere())
    deadline = time.monotonic() + 2.5  # the harness refreshes every 0.2 s; slack for a loaded machine
    while True:
        seen = asyncio.run(server_keys.authenticate(str(made["key"])))
        if seen.team_limits == RateLimits(rpm=2, tpm=20) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert seen.team_limits == RateLimits(rpm=2, tpm=20) and seen.team_budget == Budget(9.0, "daily")


def test_team_crud_and_delete_refused_while_keys_belong(gateway: RunningServer) -> None:
    name, renamed = _name("crud"), _name("renamed")
    with gateway.http(gateway.admin_key) as http:
        team = _ok(http.post("/admin/teams", json={"name": name, "limits": {"rpm": 10, "tpm": 100},
                                                   "budget": {"amount_usd": 5, "period": "daily"}}), 201)
        _bad(http.post("/admin/teams", json={"name": name}), "name", "duplicate_name")
        updated = _ok(http.patch(f"/admin/teams/{name}", json={"name": renamed, "limits": {"tpm": None, "rph": 60},
                                                               "budget": {"period": "monthly"}}))
        assert updated["id"] == team["id"] and updated["name"] == renamed
        assert updated["limits"] == {"rpm": 10, "rph": 60}
        assert updated["budget"] == {"amount_usd": 5.0, "period": "monthly"}
        got = _ok(http.get(f"/admin/teams/{renamed}"))
        assert got.pop("budget_status")["spent_usd"] == 0.0  # the one view that reads the team's spend
        assert got == {**updated, "keys": 0}
        _bad(http.get(f"/admin/teams/{name}"), "team", status=404)
        assert team["id"] in {t["id"] for t in _ok(http.get("/admin/teams"))["data"]}

        k1 = _ok(http.post("/admin/keys", json={"name": "m1", "team": team["id"]}), 201)
        k2 = _ok(http.post("/admin/keys", json={"name": "m2", "team": renamed}), 201)
        message = _bad(http.delete(f"/admin/teams/{renamed}"), "team", "team_has_keys")
        assert "2 keys" in message
        _ok(http.patch(f"/admin/keys/{k1['id']}", json={"team": None}))
        assert "1 key" in _bad(http.delete(f"/admin/teams/{team['id']}"), "team", "team_has_keys")
        _ok(http.delete(f"/admin/keys/{k2['id']}"))  # a revoked key does not hold its team
        deleted = _ok(http.delete(f"/admin/teams/{renamed}"))
        assert deleted == {"id": team["id"], "object": "team", "name": renamed, "deleted": True}
        _bad(http.get(f"/admin/teams/{team['id']}"), "team", status=404)
        _bad(http.delete(f"/admin/teams/{team['id']}"), "team", status=404)
        _bad(http.post("/admin/keys", json={"name": "orphan", "team": renamed}), "team", "team_not_found")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x", "limits": {"rpm": -1}}, "limits.rpm"),
        ({"name": "x", "limits": {"rpm": 0}}, "limits.rpm"),
        ({"name": "x", "limits": {"tpm": "lots"}}, "limits.tpm"),
        ({"name": "x", "limits": {"rps": 5}}, "limits.rps"),
        ({"name": "x", "model_limits": {"gpt-4o": {"max_parallel": -2}}}, "model_limits.gpt-4o.max_parallel"),
        ({"name": "x", "model_limits": {"gpt-4o": {"burst": 1}}}, "model_limits.gpt-4o.burst"),
        ({"name": "x", "budget": {"amount_usd": -5}}, "budget.amount_usd"),
        ({"name": "x", "budget": {"amount_usd": 5, "period": "weekly"}}, "budget.period"),
        ({"name": "x", "budget": {"period": "daily"}}, "budget.amount_usd"),
        ({"name": "x", "budget": {"amount_usd": 5, "currency": "EUR"}}, "budget.currency"),
        ({"name": "x", "user": ""}, "user"),
        ({"name": "x", "team": "no-such-team"}, "team"),
        ({"name": "x", "owner": "me"}, "owner"),
    ],
)
def test_bad_key_settings_are_400_naming_the_field(gateway: RunningServer, body: dict[str, Any], param: str) -> None:
    with gateway.http(gateway.admin_key) as http:
        _bad(http.post("/admin/keys", json=body), param)


def test_bad_patches_and_team_bodies_are_400(gateway: RunningServer) -> None:
    with gateway.http(gateway.admin_key) as http:
        made = _ok(http.post("/admin/keys", json={"name": "patched", "limits": {"rpm": 3}}), 201)
        url = f"/admin/keys/{made['id']}"
        _bad(http.patch(url, json={"limits": {"rpm": -3}}), "limits.rpm")
        _bad(http.patch(url, json={"limits": {"rpx": 3}}), "limits.rpx")
        _bad(http.patch(url, json={"admin": True}), "admin")  # privileges are not a setting
        _bad(http.patch(url, json={"key": "sk-sy-mine"}), "key")
        _bad(http.patch(url, json={"name": None}), "name")
        _bad(http.patch(url, json={"budget": {"period": "daily"}}), "budget.amount_usd")
        _bad(http.patch(url, json={"team": "no-such-team"}), "team", "team_not_found")
        _bad(http.patch(url, json=[1, 2]), None)
        assert _ok(http.get(url))["limits"] == {"rpm": 3}  # nothing changed by the refused patches
        _bad(http.patch("/admin/keys/key_doesnotexist", json={"name": "x"}), "key_id", status=404)
        _ok(http.delete(url))
        _bad(http.patch(url, json={"name": "revived"}), "key_id", status=404)  # revoked keys stay as they were

        _bad(http.post("/admin/teams", json={"name": "t", "limits": {"rpm": -1}}), "limits.rpm")
        _bad(http.post("/admin/teams", json={"name": "t", "limits": {"nope": 1}}), "limits.nope")
        _bad(http.post("/admin/teams", json={"name": "t", "budget": {"amount_usd": 1, "period": "hourly"}}),
             "budget.period")
        _bad(http.post("/admin/teams", json={"name": ""}), "name")
        _bad(http.post("/admin/teams", json={"name": "team_abc"}), "name")  # ids look like that
        _bad(http.post("/admin/teams", json={"limits": {"rpm": 1}}), "name")
        team = _ok(http.post("/admin/teams", json={"name": _name("patchy")}), 201)
        _bad(http.patch(f"/admin/teams/{team['id']}", json={"limits": {"tpm": 0}}), "limits.tpm")
        _bad(http.patch(f"/admin/teams/{team['id']}", json={"keys": 3}), "keys")
        _bad(http.patch("/admin/teams/team_doesnotexist", json={"name": "y"}), "team", status=404)


def test_non_admin_keys_cannot_manage_teams_or_key_settings(gateway: RunningServer) -> None:
    with gateway.http(gateway.admin_key) as http:
        made = _ok(http.post("/admin/keys", json={"name": "not-admin"}), 201)
        team = _ok(http.post("/admin/teams", json={"name": _name("guarded")}), 201)
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {made['key']}"}) as http:
        for method, path, body in [
            ("GET", "/admin/teams", None),
            ("POST", "/admin/teams", {"name": "mine"}),
            ("GET", f"/admin/teams/{team['id']}", None),
            ("PATCH", f"/admin/teams/{team['id']}", {"limits": None}),
            ("DELETE", f"/admin/teams/{team['id']}", None),
            ("PATCH", f"/admin/keys/{made['id']}", {"limits": None}),
            ("GET", "/admin/audit", None),
        ]:
            resp = http.request(method, path, json=body)
            assert resp.status_code == 403, (method, path, resp.text)
            assert resp.json()["error"]["type"] == "permission_error"
    with httpx.Client(base_url=gateway.url) as anonymous:
        assert anonymous.get("/admin/teams").status_code == 401
