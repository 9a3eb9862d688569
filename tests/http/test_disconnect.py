"""A client that leaves stops the work at every stage, through the real server: during a
non-streaming call, before a stream's first byte, and while queued for a concurrency slot.
The fake upstream's ``slow`` model waits 5 s before its first byte and counts the connections
closed on it meanwhile; each request is accounted once, as 499."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[RunningServer]:
    providers = {"up": {"type": "openai", "base_url": upstream.base_url, "cooldown_failures": 0}}
    models = [{"alias": "slow", "provider": "up", "model": "slow"},
              {"alias": "capped", "provider": "up", "model": "slow-stream", "max_concurrent": 1, "max_queue": 4}]
    with run_server(tmp_path_factory.mktemp("disconnect"), providers=providers, models=models) as srv:
        yield srv


def rows_for(server: RunningServer, request_id: str) -> list[dict[str, object]]:
    server.usage_row(request_id)  # waits for the flush
    return [r for r in server.usage_rows(wait_for=0) if r["request_id"] == request_id]


@pytest.mark.parametrize("stream", [False, True], ids=["whole-answer", "before-the-first-byte"])
def test_a_client_that_gives_up_waiting_closes_the_upstream_connection(
    server: RunningServer, upstream: FakeOpenAI, stream: bool,
) -> None:
    before = upstream.disconnects
    rid = f"leaves-{'stream' if stream else 'whole'}"
    with server.http(server.admin_key) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json={"model": "slow", "messages": HELLO, "stream": stream},
                  headers={"x-request-id": rid}, timeout=httpx.Timeout(5.0, read=0.5))
    # the upstream was still to wait 4.5 s before its first byte: it sees its connection closed instead
    assert upstream.wait_for_disconnects(before + 1, timeout=3.0)
    rows = rows_for(server, rid)
    assert [r["status"] for r in rows] == [499]  # once
    assert rows[0]["estimated"] and int(str(rows[0]["prompt_tokens"])) > 0  # the upstream had the prompt


def test_a_client_that_leaves_the_queue_never_reaches_the_upstream(server: RunningServer,
                                                                  upstream: FakeOpenAI) -> None:
    with server.holding_stream("capped"), server.http(server.admin_key) as http:  # the one slot is taken
        asked = len(upstream.requests)
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/chat/completions", json={"model": "capped", "messages": HELLO},
                      headers={"x-request-id": "leaves-queue"}, timeout=httpx.Timeout(5.0, read=0.5))
        rows = rows_for(server, "leaves-queue")
        assert [r["status"] for r in rows] == [499] and rows[0]["prompt_tokens"] == 0
        assert len(upstream.requests) == asked  # it left while waiting for the slot
        assert 'switchyard_queue_depth{gate="capped"} 0.0' in http.get("/metrics").text  # and left the queue
