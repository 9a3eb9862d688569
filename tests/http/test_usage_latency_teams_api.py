"""GET /admin/usage through a real server: error rate and p50/p95 latency per model (checked against
the latencies the server recorded on the raw rows), exact team totals after a key moves team, and
per-session usage for an admin (every key's) and for a key of its own (only its own)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import STORES, UPSTREAM_KEY, server_store
from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server
from tests.store.test_usage_latency_teams import _close, _nearest_rank


@pytest.fixture(params=STORES)
def server(request: pytest.FixtureRequest, tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[RunningServer]:
    config: dict[str, Any] = {
        **server_store(request),
        "providers": {"fake": {"type": "openai", "base_url": fake_openai.base_url, "api_key": UPSTREAM_KEY,
                               "cooldown_failures": 0}},
        "models": [
            {"alias": "chat", "provider": "fake", "model": "gpt-4o-mini"},
            {"alias": "broken", "provider": "fake", "model": "error-500"},
        ],
    }
    with run_server(tmp_path / "data", **config) as running:
        yield running


def _chat(http: httpx.Client, model: str, session: str | None = None) -> str:
    headers = {"x-claude-code-session-id": session} if session else {}
    reply = http.post("/v1/chat/completions", json={"model": model, "messages": HELLO}, headers=headers)
    assert (reply.status_code == 200) == (model == "chat"), reply.text
    return reply.headers["x-request-id"]


def _report(http: httpx.Client, path: str, want_requests: int, **params: str) -> dict[str, Any]:
    """The report once every request so far is in it (rows are written in batches)."""
    deadline = time.monotonic() + 5
    while True:
        reply = http.get(path, params=params)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        if body["totals"]["requests"] >= want_requests or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_latency_error_rate_teams_and_sessions(server: RunningServer) -> None:
    with server.http(server.admin_key) as admin:
        for name in ("red", "blue"):
            assert admin.post("/admin/teams", json={"name": name}).status_code == 201
        made = admin.post("/admin/keys", json={"name": "bob", "team": "red"})
        assert made.status_code == 201, made.text
        bob_id, bob_secret = made.json()["id"], made.json()["key"]
        ids = [_chat(admin, "chat", "s-admin") for _ in range(6)] + [_chat(admin, "broken") for _ in range(2)]
        with server.http(bob_secret) as bob:
            ids += [_chat(bob, "chat", "s-bob") for _ in range(2)]
            moved = admin.patch(f"/admin/keys/{bob_id}", json={"team": "blue"})
            assert moved.status_code == 200 and moved.json()["team_name"] == "blue", moved.text
            ids += [_chat(bob, "chat", "s-bob"), _chat(bob, "broken", "s-bob-2")]
            rows = [server.usage_row(rid) for rid in ids]
            total = len(ids)

            # per model: error rate, and percentiles within one bucket of the recorded latencies
            by_model = {d["model"]: d for d in _report(admin, "/admin/usage", total, group_by="model")["data"]}
            assert set(by_model) == {"broken", "chat"}
            assert (by_model["broken"]["errors"], by_model["broken"]["error_rate"]) == (3, 1.0)
            assert by_model["broken"]["p50_ms"] is None and by_model["broken"]["p95_ms"] is None
            assert by_model["chat"]["error_rate"] == 0.0 and by_model["chat"]["requests"] == 9
            latencies = [r["latency_ms"] for r in rows if r["model"] == "chat"]
            for field, q in (("p50_ms", 0.5), ("p95_ms", 0.95)):
                want = _nearest_rank(latencies, q)
                # in the true value's bucket (a loopback request can fall in the first, [0, 1 ms)),
                # give or take the 0.1 ms the answer is rounded to
                assert _close(by_model["chat"][field], want, rounding=0.05), (field, want)
            totals = _report(admin, "/admin/usage", total, group_by="model")["totals"]
            assert totals["error_rate"] == pytest.approx(3 / 12, abs=1e-6) and totals["p50_ms"] is not None
            # a chart needs no percentiles: latency=false leaves them (and their sums) out
            series = _report(admin, "/admin/usage", total, group_by="model", latency="false")
            assert [(d["model"], d["requests"], d["error_rate"]) for d in series["data"]] == [
                ("broken", 3, 1.0), ("chat", 9, 0.0)]
            assert not any("p50_ms" in d or "p95_ms" in d for d in [*series["data"], series["totals"]])
            bad = admin.get("/admin/usage", params={"latency": "maybe"})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "latency", bad.text

            # per team: bob's first two requests stay with red after it moved to blue
            teams = _report(admin, "/admin/usage", total, group_by="team")["data"]
            assert {(d["team_id"] is None, d["team_name"]): d["requests"] for d in teams} == {
                (True, None): 8, (False, "red"): 2, (False, "blue"): 2}
            key_team = _report(admin, "/admin/usage", total, group_by="key,team")["data"]
            assert sorted((d["key_name"], d["team_name"], d["requests"]) for d in key_team
                          if d["key_id"] == bob_id) == [("bob", "blue", 2), ("bob", "red", 2)]

            # sessions: an admin sees every key's; bob, its own only (whatever it asks for)
            sessions = {d["session_id"]: d["requests"]
                        for d in _report(admin, "/admin/usage", total, group_by="session")["data"]}
            assert sessions == {None: 2, "s-admin": 6, "s-bob": 3, "s-bob-2": 1}
            own = bob.get("/ui/api/me/usage", params={"group_by": "session", "key": "admin"})
            assert own.status_code == 200, own.text
            assert {d["session_id"]: (d["requests"], d["errors"]) for d in own.json()["data"]} == {
                "s-bob": (3, 0), "s-bob-2": (1, 1)}
            own_teams = bob.get("/ui/api/me/usage", params={"group_by": "team"}).json()["data"]
            assert sorted((d["team_name"], d["requests"]) for d in own_teams) == [("blue", 2), ("red", 2)]
            assert bob.get("/admin/usage", params={"group_by": "team"}).status_code == 403
