"""``switchyard serve --workers 2`` on SQLite, without Redis, is one server: a rate limit, a budget
and ``/metrics`` cover both workers (the supervisor owns the counters; every worker's metrics
files are added up at a scrape). Real processes, the official SDK as the client, requests on
connections held by each worker (the access log names the worker of each request)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.cli.support import ServeProcess, db_rows, serve, wait_until
from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeOpenAI

ADMIN = "workers-admin-key-0123456789"
BUDGET = 0.05
OUT_PRICE = 1000.0  # USD per 1M completion tokens: $0.001 a token; "echo: hello there" costs $0.003


@dataclass
class Server:
    proc: ServeProcess
    keys: dict[str, tuple[str, str]]  # name -> (id, secret)
    tmp: Path  # the server's TMPDIR
    connections: dict[int, list[httpx.Client]] = field(default_factory=dict)  # by the worker holding each

    def worker_of(self, request_ids: list[str]) -> dict[str, int]:
        """Which worker served each request, from the access log (waiting for its lines)."""
        wanted = set(request_ids)

        def lines() -> list[dict[str, int]] | None:
            found = {}
            for line in self.proc.stderr.splitlines():
                if '"switchyard.access"' in line:
                    entry = json.loads(line)
                    if entry["request_id"] in wanted:
                        found[entry["request_id"]] = entry["worker"]
            return [found] if len(found) == len(wanted) else None

        [found] = wait_until(lines, 10, what="the access log lines")
        return found

    def workers_of(self, request_ids: list[str]) -> Counter[int]:
        """How many of the requests each worker served."""
        found = self.worker_of(request_ids)
        return Counter(found[rid] for rid in request_ids)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("workers")
    data_dir = tmp / "data"
    config = tmp / "switchyard.yaml"
    config.write_text(yaml.safe_dump({
        "metrics_public": True,
        "providers": {"fake": {"type": "openai", "base_url": fake_openai.base_url, "api_key": UPSTREAM_KEY}},
        "models": [
            {"alias": "chat", "provider": "fake", "model": "gpt-4o-mini"},
            {"alias": "metered", "provider": "fake", "model": "gpt-4o-mini"},
            {"alias": "priced", "provider": "fake", "model": "gpt-4o-mini", "input_cost_per_1m": 0,
             "output_cost_per_1m": OUT_PRICE},
        ],
    }), encoding="utf-8")
    (tmp / "tmp").mkdir()
    with serve(tmp, data_dir, "--workers", "2", "--api-key", ADMIN, config=config,
               env={"TMPDIR": str(tmp / "tmp")}) as proc:
        keys = {}
        with proc.http(ADMIN) as admin:
            for name, spec in (("limited", {"limits": {"rpm": 6}}),
                               ("budgeted", {"budget": {"amount_usd": BUDGET, "period": "total"}}), ("plain", {})):
                made = admin.post("/admin/keys", json={"name": name, **spec})
                assert made.status_code == 201, made.text
                keys[name] = (made.json()["id"], made.json()["key"])
        server = Server(proc, keys, tmp / "tmp")
        try:
            yield server
        finally:
            for client in (c for held in server.connections.values() for c in held):
                client.close()


@dataclass
class Reply:
    status: int
    request_id: str
    body: dict[str, Any]


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads of their own, released together."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _connections(server: Server, per_worker: int) -> list[httpx.Client]:
    """``2 * per_worker`` clients of one kept-alive connection each, ``per_worker`` of them held by
    each worker (learnt from a first request on each), alternating: a burst on them reaches both
    workers for sure. (A worker takes every connection waiting when it accepts, so a burst of
    fresh ones may all go to one.) Made once for the module's server."""
    by_worker = server.connections
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=None)
    for _ in range(50):
        if len(by_worker) == 2 and all(len(v) >= per_worker for v in by_worker.values()):
            a, b = (v[:per_worker] for v in by_worker.values())
            return [c for pair in zip(a, b, strict=True) for c in pair]
        fresh = [httpx.Client(base_url=server.proc.url, timeout=30, limits=one) for _ in range(8)]
        answers = [a.headers["x-request-id"] for a in _at_once([partial(c.get, "/health") for c in fresh])]
        worker = server.worker_of(answers)
        for client, answer in zip(fresh, answers, strict=True):
            by_worker.setdefault(worker[answer], []).append(client)
    raise AssertionError(f"a worker took no connection: { {k: len(v) for k, v in by_worker.items()} }")


def _burst(server: Server, key: str, per_worker: int, model: str, **extra: Any) -> list[Reply]:
    """``per_worker`` chat requests on each worker, all at once (the official SDK)."""

    def one(http: httpx.Client) -> Reply:
        client = openai.OpenAI(base_url=f"{server.proc.url}/v1", api_key=key, max_retries=0, http_client=http)
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": "hello there"}], **extra)
        except openai.APIStatusError as exc:
            return Reply(exc.status_code, exc.response.headers["x-request-id"], exc.response.json())
        return Reply(raw.http_response.status_code, raw.headers["x-request-id"], raw.http_response.json())

    return _at_once([partial(one, http) for http in _connections(server, per_worker)])


def _assert_openai_429(reply: Reply, code: str) -> None:
    assert reply.status == 429, reply
    error = reply.body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, reply


def test_a_6_per_minute_key_passes_exactly_6_of_24_concurrent_requests(server: Server) -> None:
    key_id, secret = server.keys["limited"]
    replies = (_burst(server, secret, 12, "chat"))
    passed = [r for r in replies if r.status == 200]
    assert len(passed) == 6, Counter(r.status for r in replies)
    for reply in replies:
        if reply.status != 200:
            _assert_openai_429(reply, "rate_limit_exceeded")
    workers = server.workers_of([r.request_id for r in replies])
    assert sorted(workers.values()) == [12, 12], workers
    # more, on either worker, are refused too: the window is full for both
    refused = (_burst(server, secret, 2, "chat"))
    assert [r.status for r in refused] == [429] * 4
    rows = wait_until(lambda: (r := db_rows(server.proc.data_dir, "SELECT status FROM usage_records WHERE key_id = ?",
                                            (key_id,))) and len(r) == 28 and r, 10, what="28 usage rows")
    assert Counter(r["status"] for r in rows) == {200: 6, 429: 22}


def test_60_concurrent_requests_never_spend_past_the_budget(server: Server) -> None:
    key_id, secret = server.keys["budgeted"]
    replies = (_burst(server, secret, 30, "priced", max_tokens=5))
    passed = [r for r in replies if r.status == 200]
    for reply in replies:
        if reply.status != 200:
            _assert_openai_429(reply, "insufficient_quota")
    # every hold is $0.005 (5 tokens): a refusal means ten were held or paid, and all of those pass
    assert 10 <= len(passed) < 60, Counter(r.status for r in replies)
    workers = server.workers_of([r.request_id for r in replies])
    assert sorted(workers.values()) == [30, 30], workers
    rows = wait_until(lambda: (r := db_rows(server.proc.data_dir, "SELECT status, cost_usd FROM usage_records "
                                            "WHERE key_id = ?", (key_id,))) and len(r) == 60 and r,
                      10, what="60 usage rows")
    spent = sum(r["cost_usd"] for r in rows)
    assert spent <= BUDGET + 1e-9, f"spent ${spent:.6f} of a ${BUDGET} budget"
    assert Counter(r["status"] for r in rows) == {200: len(passed), 429: 60 - len(passed)}
    assert all(r["cost_usd"] > 0 for r in rows if r["status"] == 200)  # (a hold lowers max_tokens when it must)


def _requests_total(text: str, model: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("switchyard_requests_total{") and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_one_scrape_counts_the_requests_of_both_workers(server: Server) -> None:
    _, secret = server.keys["plain"]
    replies = (_burst(server, secret, 5, "metered"))
    assert sorted(server.workers_of([r.request_id for r in replies]).values()) == [5, 5]
    assert all(r.status == 200 for r in replies)
    scrape = httpx.get(f"{server.proc.url}/metrics", timeout=10)
    assert scrape.status_code == 200
    assert _requests_total(scrape.text, "metered") == len(replies), scrape.text
    # and a second scrape, on whichever worker takes it, says the same
    again = httpx.get(f"{server.proc.url}/metrics", timeout=10, headers={"connection": "close"})
    assert _requests_total(again.text, "metered") == len(replies)
    assert 'switchyard_requests_in_flight{model="metered"} 0.0' in again.text


def test_the_shared_directory_is_private_and_goes_with_the_server(server: Server) -> None:
    """The limits socket and the metrics files live in a directory made for this serve, that only
    the server's user can enter; a clean stop removes it. (Runs last: it stops the server.)"""
    [shared] = list(server.tmp.glob("switchyard-*"))
    assert shared.stat().st_mode & 0o777 == 0o700
    assert (shared / "limits.sock").stat().st_mode & 0o777 == 0o600
    assert any((shared / "metrics").glob("counter_*.db"))
    server.proc.sigterm()
    assert server.proc.wait(30) == 0, server.proc.describe()
    assert not shared.exists()
