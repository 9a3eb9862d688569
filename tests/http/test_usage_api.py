"""GET /admin/usage through a real server: totals from the hourly rollups agree with the raw rows
(on SQLite and on the real PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchyard.store.usage import hour_start, nanousd
from tests.conftest import STORES, UPSTREAM_KEY, server_store
from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server

PRICE = {"input_cost_per_1m": 2.0, "output_cost_per_1m": 8.0}
COUNTS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors", "estimated")


@pytest.fixture(params=STORES)  # the rollups' upserts and the report's queries, on both stores
def server(request: pytest.FixtureRequest, tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[RunningServer]:
    config: dict[str, Any] = {
        **server_store(request),
        "providers": {"fake": {"type": "openai", "base_url": fake_openai.base_url, "api_key": UPSTREAM_KEY,
                               "cooldown_failures": 0}},
        "models": [
            {"alias": "priced", "provider": "fake", "model": "gpt-4o-mini", **PRICE},
            {"alias": "quiet", "provider": "fake", "model": "no-usage", **PRICE},  # the upstream reports no usage
            {"alias": "cut", "provider": "fake", "model": "fail-mid-stream", **PRICE},  # aborted mid-stream
            {"alias": "free", "provider": "fake", "model": "gpt-4o-mini"},
        ],
    }
    with run_server(tmp_path / "data", **config) as running:
        yield running


def _chat(http: httpx.Client, model: str, *, stream: bool = False) -> str:
    """One request; its x-request-id. A stream is read to its end (or its cut)."""
    body: dict[str, Any] = {"model": model, "messages": HELLO}
    if not stream:
        reply = http.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        return reply.headers["x-request-id"]
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200
        request_id = reply.headers["x-request-id"]
        try:
            for _ in reply.iter_lines():
                pass
        except httpx.HTTPError:
            pass  # the cut stream may end without a clean close
    return request_id


def _sum(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What /admin/usage must report for these raw rows."""
    nanos = sum(nanousd(r["cost_usd"]) for r in rows)
    prompt = sum(r["prompt_tokens"] for r in rows)
    completion = sum(r["completion_tokens"] for r in rows)
    return {"requests": len(rows), "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "cost_usd": nanos / 1e9,
            "errors": sum(r["status"] >= 400 for r in rows), "estimated": sum(bool(r["estimated"]) for r in rows)}


def _numbers(item: dict[str, Any]) -> dict[str, Any]:
    return {k: item[k] for k in (*COUNTS, "cost_usd")}


def _created(row: dict[str, Any]) -> datetime:
    created = row["created_at"]
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def test_usage_report_matches_the_raw_rows(server: RunningServer) -> None:
    with server.http(server.admin_key) as admin:
        made = admin.post("/admin/keys", json={"name": "bob"})
        assert made.status_code == 201, made.text
        bob_id, bob_secret = made.json()["id"], made.json()["key"]
        request_ids = [_chat(admin, "priced") for _ in range(3)] + [_chat(admin, "free", stream=True)]
        with server.http(bob_secret) as bob:
            request_ids += [_chat(bob, "priced", stream=True), _chat(bob, "priced"), _chat(bob, "quiet", stream=True),
                            _chat(bob, "cut", stream=True)]
            denied = bob.get("/admin/usage")
            assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error", denied.text
        rows = [server.usage_row(rid) for rid in request_ids]
        admin_id = rows[0]["key_id"]
        assert admin_id and admin_id != bob_id

        # cost is on every row, at the model's prices
        for row in rows:
            want = (row["prompt_tokens"] * 2.0 + row["completion_tokens"] * 8.0) / 1e6 if row["model"] != "free" else 0
            assert row["cost_usd"] == pytest.approx(want, rel=1e-12, abs=0)
        assert all(r["cost_usd"] > 0 for r in rows if r["model"] == "priced")
        # a stream without usage, and a stream cut short, still record their tokens, marked estimated
        by_model = {m: [r for r in rows if r["model"] == m] for m in ("priced", "free", "quiet", "cut")}
        for model in ("quiet", "cut"):
            (row,) = by_model[model]
            assert row["estimated"] and row["completion_tokens"] > 0 and row["prompt_tokens"] > 0, row
        assert not any(r["estimated"] for r in by_model["priced"])
        # and the same cost is exported as a metric
        metrics = admin.get("/metrics").text
        for model in ("priced", "quiet", "cut"):
            line = next(x for x in metrics.splitlines()
                        if x.startswith(f'switchyard_cost_usd_total{{model="{model}",provider="fake"}} '))
            assert float(line.split()[-1]) == pytest.approx(sum(r["cost_usd"] for r in by_model[model]), rel=1e-9)

        def get(**params: str) -> dict[str, Any]:
            reply = admin.get("/admin/usage", params=params)
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-type"] == "application/json"
            body: dict[str, Any] = reply.json()
            assert body["object"] == "list"
            # the totals are the sum of the data rows
            assert {c: sum(d[c] for d in body["data"]) for c in COUNTS} == {c: body["totals"][c] for c in COUNTS}
            assert body["totals"]["cost_usd"] == pytest.approx(sum(d["cost_usd"] for d in body["data"]), abs=1e-12)
            return body

        # default: by day; everything so far falls in today (UTC) or, near midnight, yesterday
        days = get()
        assert days["group_by"] == "day"
        assert {d["period"] for d in days["data"]} == {_created(r).date().isoformat() for r in rows}
        assert _numbers(days["totals"]) == _sum(rows)

        by_key = get(group_by="key")
        assert by_key["group_by"] == "key"
        assert {d["key_id"]: _numbers(d) for d in by_key["data"]} == {
            k: _sum([r for r in rows if r["key_id"] == k]) for k in (admin_id, bob_id)}
        assert {d["key_id"]: d["key_name"] for d in by_key["data"]} == {admin_id: "admin", bob_id: "bob"}

        by_model_api = get(group_by="model")
        assert [d["model"] for d in by_model_api["data"]] == ["cut", "free", "priced", "quiet"]
        assert {d["model"]: _numbers(d) for d in by_model_api["data"]} == {
            m: _sum(by_model[m]) for m in by_model}
        assert {d["model"]: d["estimated"] for d in by_model_api["data"]} == {
            "cut": 1, "free": 0, "priced": 0, "quiet": 1}

        hours = get(group_by="hour")
        assert {d["period"]: _numbers(d) for d in hours["data"]} == {
            h.isoformat(): _sum([r for r in rows if hour_start(_created(r)) == h])
            for h in {hour_start(_created(r)) for r in rows}}

        both = get(group_by="key,model")
        assert {(d["key_id"], d["model"]): _numbers(d) for d in both["data"]} == {
            (k, m): _sum([r for r in rows if r["key_id"] == k and r["model"] == m])
            for k, m in {(r["key_id"], r["model"]) for r in rows}}

        # filters: key (its id or its name), model, time range
        bobs = [r for r in rows if r["key_id"] == bob_id]
        assert _numbers(get(key=bob_id)["totals"]) == _sum(bobs)
        assert _numbers(get(key="bob", group_by="model")["totals"]) == _sum(bobs)
        assert _numbers(get(key=bob_id, model="priced")["totals"]) == _sum(
            [r for r in bobs if r["model"] == "priced"])
        assert get(key="key_nobody")["data"] == []
        assert get(key="key_nobody")["totals"] == {**dict.fromkeys(COUNTS, 0), "cache_read_tokens": 0,
                                                "cache_write_tokens": 0, "cost_usd": 0.0, "error_rate": None,
                                                "p50_ms": None, "p95_ms": None}
        assert _numbers(get(since="1h", group_by="model")["totals"]) == _sum(rows)
        now = datetime.now(UTC)
        assert get(since=(now + timedelta(hours=2)).isoformat())["data"] == []
        assert get(until=(now - timedelta(hours=2)).isoformat())["data"] == []
        assert _numbers(get(since="2d", until=(now + timedelta(hours=1)).isoformat())["totals"]) == _sum(rows)

        # bad parameters: 400 naming the parameter
        for params, param in (({"group_by": "week"}, "group_by"), ({"group_by": "hour,day"}, "group_by"),
                              ({"since": "yesterday"}, "since"), ({"until": "2025-13-45"}, "until"),
                              ({"since": "1h", "until": "2d"}, "until")):
            bad = admin.get("/admin/usage", params=params)
            assert bad.status_code == 400, bad.text
            error = bad.json()["error"]
            assert error["param"] == param and error["type"] == "invalid_request_error", error
            assert set(error) >= {"message", "type", "param", "code"}

    with server.http() as anonymous:
        assert anonymous.get("/admin/usage").status_code == 401


def test_under_load_the_raw_ring_stays_capped_and_the_rollups_stay_exact(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """3,200 requests, 16 at a time, into a 1,000-row ring: the writer prunes as it fills (not
    only once a minute), and the rollups count every request and token the clients were told."""
    import sqlite3
    import threading

    config: dict[str, Any] = {
        "providers": {"fake": {"type": "openai", "base_url": fake_openai.base_url, "api_key": UPSTREAM_KEY}},
        "models": [{"alias": "priced", "provider": "fake", "model": "gpt-4o-mini", **PRICE}],
        "usage_raw_max_rows": 1000,
    }
    total, workers = 3200, 16
    with run_server(tmp_path / "data", **config) as server:
        db = server.settings.resolved_database_url.partition(":///")[2]
        counts: list[int] = []
        done = threading.Event()

        def watch() -> None:  # the raw table's size while the load runs
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                while not done.is_set():
                    counts.append(conn.execute("SELECT COUNT(*) FROM usage_records").fetchone()[0])
                    done.wait(0.05)

        async def load() -> tuple[int, int]:
            prompt = completion = 0
            headers = {"Authorization": f"Bearer {server.admin_key}"}
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:

                async def worker(n: int) -> None:
                    nonlocal prompt, completion
                    for _ in range(n):
                        reply = await client.post("/v1/chat/completions", json={"model": "priced", "messages": HELLO})
                        assert reply.status_code == 200, reply.text
                        prompt += reply.json()["usage"]["prompt_tokens"]
                        completion += reply.json()["usage"]["completion_tokens"]

                await asyncio.gather(*(worker(total // workers) for _ in range(workers)))
            return prompt, completion

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            prompt, completion = asyncio.run(load())
        finally:
            done.set()
            watcher.join(10)
        with server.http(server.admin_key) as admin:
            for _ in range(100):  # the last batch is written within a flush interval
                totals = admin.get("/admin/usage").json()["totals"]
                if totals["requests"] >= total:
                    break
                asyncio.run(asyncio.sleep(0.05))
        assert (totals["requests"], totals["prompt_tokens"], totals["completion_tokens"]) == (total, prompt, completion)
        assert totals["cost_usd"] == pytest.approx((prompt * 2.0 + completion * 8.0) / 1e6, rel=1e-9)
        assert len(counts) > 10 and max(counts) > 500  # it was watched while it filled
        # the ring: 1,000 rows, plus the tenth written before a prune is due, plus a batch in flight
        assert max(counts) <= 1250, max(counts)
