"""Prompt caching through the real server, on SQLite and PostgreSQL: ``cache_control`` reaches
Anthropic upstreams, ``prompt_cache_key`` reaches OpenAI ones, cache reads and writes are
recorded on usage rows and priced at their own rates (never counted twice, never charged at the
input price when a cache price is set), clients see them in each wire format, and budgets and
``/admin/usage`` see the true cost. Agent sessions (Claude Code's and Codex's session headers)
are recorded too, and ``/admin/usage?group_by=session`` keeps them apart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY, reset_pg_schema
from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.harness import RunningServer, run_server

# Anthropic's own ratios to the input price: reads 0.1x, writes (5 minutes) 1.25x
CLAUDE = {"input_cost_per_1m": 3.0, "output_cost_per_1m": 15.0,
          "cache_read_cost_per_1m": 0.3, "cache_write_cost_per_1m": 3.75}
GPT = {"input_cost_per_1m": 2.5, "output_cost_per_1m": 10.0, "cache_read_cost_per_1m": 1.25}
# a cent a token in and out, a tenth of that for cache reads: budgets that are easy to read
DEAR = {"input_cost_per_1m": 10_000.0, "output_cost_per_1m": 10_000.0, "cache_read_cost_per_1m": 1_000.0}
LONG_PREFIX = "x " * 1100  # 1100 words: the fake OpenAI reports 1024 of them as read from its cache


@pytest.fixture(scope="module")
def upstream_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def upstream_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=UPSTREAM_KEY) as fake:
        yield fake


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           upstream_openai: FakeOpenAI, upstream_anthropic: FakeAnthropic) -> Iterator[RunningServer]:
    store: dict[str, Any] = {}
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        asyncio.run(reset_pg_schema(url))
        store = {"database_url": url, "secret_key": "s" * 40}
    with run_server(
        tmp_path_factory.mktemp("cache"), **store,
        providers={
            "oai": {"type": "openai", "base_url": upstream_openai.base_url, "api_key": UPSTREAM_KEY,
                    "cooldown_failures": 0},
            "anth": {"type": "anthropic", "base_url": upstream_anthropic.base_url, "api_key": UPSTREAM_KEY,
                     "cooldown_failures": 0},
        },
        models=[
            {"alias": "claude-cached", "provider": "anth", "model": "cached", **CLAUDE},
            {"alias": "claude-unpriced-cache", "provider": "anth", "model": "cached",
             "input_cost_per_1m": 3.0, "output_cost_per_1m": 15.0},
            {"alias": "gpt-cached", "provider": "oai", "model": "cached", **GPT},
            {"alias": "gpt-dear", "provider": "oai", "model": "cached", **DEAR},
            {"alias": "local-agent", "provider": "oai", "model": "gpt-4o-mini", **GPT},
        ],
    ) as running:
        yield running


def _cost(row: dict[str, Any], prices: dict[str, float]) -> float:
    """The hand-computed cost of a usage row: prompt_tokens includes the cached tokens."""
    read_price = prices.get("cache_read_cost_per_1m", prices["input_cost_per_1m"])
    write_price = prices.get("cache_write_cost_per_1m", prices["input_cost_per_1m"])
    uncached = row["prompt_tokens"] - row["cache_read_tokens"] - row["cache_write_tokens"]
    return (uncached * prices["input_cost_per_1m"] + row["cache_read_tokens"] * read_price
            + row["cache_write_tokens"] * write_price + row["completion_tokens"] * prices["output_cost_per_1m"]) / 1e6


def _messages_body(**extra: Any) -> dict[str, Any]:
    """A Claude Code-shaped request: cache breakpoints on the tools, the system prompt and the last turn."""
    return {
        "max_tokens": 50,
        "system": [{"type": "text", "text": "You are a careful agent."},
                   {"type": "text", "text": "Project notes follow.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "read_file", "description": "Read a file",
                   "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
                   "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "tool_choice": {"type": "none"},
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "earlier context"},
            {"type": "text", "text": "hello there", "cache_control": {"type": "ephemeral"}}]}],
        **extra,
    }


def test_anthropic_cache_tokens_reach_the_client_the_row_and_the_price(
    server: RunningServer, upstream_anthropic: FakeAnthropic,
) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key=server.admin_key, max_retries=0)
    seen = len(upstream_anthropic.messages_requests())
    reply = client.messages.with_raw_response.create(model="claude-cached", **_messages_body())
    message = reply.parse()
    # cache_control went upstream on every block that had it, and on no other
    sent = upstream_anthropic.messages_requests()[seen]
    assert sent["system"] == [{"type": "text", "text": "You are a careful agent."},
                              {"type": "text", "text": "Project notes follow.", "cache_control": {"type": "ephemeral"}}]
    assert sent["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert sent["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "earlier context"},
        {"type": "text", "text": "hello there", "cache_control": {"type": "ephemeral"}}]}]
    # Anthropic's meaning on the way back: input_tokens excludes the cache reads and writes
    words = len("You are a careful agent. Project notes follow. earlier context hello there".split())
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens,
            message.usage.cache_creation_input_tokens) == (words, 100, 20)
    row = server.usage_row(reply.headers["x-request-id"])
    assert (row["prompt_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (words + 120, 100, 20)
    assert row["completion_tokens"] == message.usage.output_tokens
    want = (words * 3.0 + 100 * 0.3 + 20 * 3.75 + message.usage.output_tokens * 15.0) / 1e6
    assert row["cost_usd"] == pytest.approx(want, rel=1e-12) and row["cost_usd"] == pytest.approx(_cost(row, CLAUDE))

    # streamed: message_delta carries the same counts, and the row the same cost
    with client.messages.stream(model="claude-cached", **_messages_body()) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens,
            final.usage.cache_creation_input_tokens) == (words, 100, 20)
    streamed = server.usage_row(request_id)
    assert (streamed["prompt_tokens"], streamed["cache_read_tokens"], streamed["cache_write_tokens"]) == (
        words + 120, 100, 20)
    assert streamed["cost_usd"] == pytest.approx(_cost(streamed, CLAUDE), rel=1e-12)

    # no cache prices set: cache tokens cost the input price, each token once
    plain = client.messages.with_raw_response.create(model="claude-unpriced-cache", **_messages_body())
    unpriced = server.usage_row(plain.headers["x-request-id"])
    assert unpriced["cost_usd"] == pytest.approx(
        ((words + 120) * 3.0 + plain.parse().usage.output_tokens * 15.0) / 1e6, rel=1e-12)


def test_openai_clients_of_an_anthropic_upstream_see_cached_tokens(
    server: RunningServer, upstream_anthropic: FakeAnthropic,
) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0)
    seen = len(upstream_anthropic.messages_requests())
    reply = client.chat.completions.with_raw_response.create(model="claude-cached", messages=[
        {"role": "system", "content": [{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "hello there", "cache_control": {"type": "ephemeral"}},  # type: ignore[misc]
    ])
    sent = upstream_anthropic.messages_requests()[seen]
    assert sent["system"] == [{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}]
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "hello there", "cache_control": {"type": "ephemeral"}}]
    usage = reply.parse().usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens == 3 + 120  # OpenAI's meaning: every input token, the cached ones included
    assert usage.prompt_tokens_details.cached_tokens == 100
    assert usage.prompt_tokens_details.cache_write_tokens == 20  # the field OpenAI's SDK has for cache writes
    row = server.usage_row(reply.headers["x-request-id"])
    assert (row["prompt_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (123, 100, 20)
    assert row["cost_usd"] == pytest.approx((3 * 3.0 + 100 * 0.3 + 20 * 3.75 + usage.completion_tokens * 15.0) / 1e6,
                                            rel=1e-12)


def test_openai_cached_tokens_are_priced_once_at_their_rate(
    server: RunningServer, upstream_openai: FakeOpenAI,
) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0)
    messages: Any = [{"role": "system", "content": LONG_PREFIX}, {"role": "user", "content": "hello"}]
    seen = len(upstream_openai.requests)
    reply = client.chat.completions.with_raw_response.create(
        model="gpt-cached", messages=messages, prompt_cache_key="repo-42")
    assert upstream_openai.requests[seen].body["prompt_cache_key"] == "repo-42"  # forwarded as given
    usage = reply.parse().usage
    assert usage is not None and usage.prompt_tokens == 1101 and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1024
    row = server.usage_row(reply.headers["x-request-id"])
    assert (row["prompt_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (1101, 1024, 0)
    # 77 uncached at 2.50, 1024 cached at 1.25 (not 1101 at 2.50, nor 1101 + 1024 of anything)
    assert row["cost_usd"] == pytest.approx((77 * 2.5 + 1024 * 1.25 + row["completion_tokens"] * 10.0) / 1e6,
                                            rel=1e-12)

    raw = client.chat.completions.with_raw_response.create(model="gpt-cached", messages=messages, stream=True,
                                                           stream_options={"include_usage": True})
    chunks = list(raw.parse())
    streamed_usage = chunks[-1].usage
    assert streamed_usage is not None and streamed_usage.prompt_tokens_details is not None
    assert streamed_usage.prompt_tokens_details.cached_tokens == 1024
    streamed = server.usage_row(raw.headers["x-request-id"])
    assert streamed["streamed"] and (streamed["prompt_tokens"], streamed["cache_read_tokens"]) == (1101, 1024)
    assert streamed["cost_usd"] == pytest.approx(_cost(streamed, GPT), rel=1e-12)

    # the Anthropic endpoint in front of an OpenAI upstream reports the cache read Anthropic's way
    claude = anthropic.Anthropic(base_url=server.url, api_key=server.admin_key, max_retries=0)
    message = claude.messages.create(model="gpt-cached", max_tokens=20, system=[
        {"type": "text", "text": LONG_PREFIX, "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hello"}])
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (77, 1024)
    assert message.usage.cache_creation_input_tokens == 0
    # ... and never sends cache_control to an upstream that is not Anthropic
    body = upstream_openai.requests[-1].body
    assert "cache_control" not in str(body)


def test_a_budget_and_the_usage_api_count_the_true_cost(server: RunningServer) -> None:
    """A budget of 30 USD at a cent a token (a tenth of that for cache reads). Each request holds
    its prompt's bytes at the dearest price (about 22 USD) and costs ~1.8 USD at the true rate,
    so five fit; charging its 1024 cached tokens at the input price (~11 USD a request) would
    refuse the second."""
    with server.http(server.admin_key) as admin:
        made = admin.post("/admin/keys", json={"name": "thrifty", "budget": {"amount_usd": 30.0, "period": "daily"}})
        assert made.status_code == 201, made.text
        key_id, secret = made.json()["id"], made.json()["key"]
        body = {"model": "gpt-dear", "max_tokens": 3,
                "messages": [{"role": "system", "content": LONG_PREFIX}, {"role": "user", "content": "hello"}]}
        ids = []
        with server.http(secret) as http:
            for _ in range(4):
                reply = http.post("/v1/chat/completions", json=body)
                assert reply.status_code == 200, reply.text
                ids.append(reply.headers["x-request-id"])
        rows = [server.usage_row(i) for i in ids]
        for row in rows:
            assert row["cache_read_tokens"] == 1024 and row["prompt_tokens"] == 1101
            assert row["cost_usd"] == pytest.approx((77 * 0.01 + 1024 * 0.001 + row["completion_tokens"] * 0.01),
                                                    rel=1e-12)
        spent = sum(r["cost_usd"] for r in rows)
        assert spent < 10.0  # at the input price the 4 requests would have cost over 44 USD
        status = admin.get(f"/admin/keys/{key_id}").json()["budget_status"]
        assert status["spent_usd"] == pytest.approx(spent, abs=1e-6)
        assert status["remaining_usd"] == pytest.approx(30.0 - spent, abs=1e-6)
        usage = admin.get("/admin/usage", params={"key": key_id, "group_by": "model"}).json()
        (item,) = usage["data"]
        assert item["cost_usd"] == pytest.approx(spent, abs=1e-6)
        assert (item["prompt_tokens"], item["cache_read_tokens"], item["cache_write_tokens"]) == (4 * 1101, 4096, 0)

        # the budget runs out at the true cost: the hold (~22 USD of prompt bytes) no longer fits
        with server.http(secret) as http:
            answers = [http.post("/v1/chat/completions", json=body) for _ in range(4)]
        codes = [a.status_code for a in answers]
        assert codes == [200, 429, 429, 429], codes
        refusal = answers[1].json()["error"]
        assert refusal["type"] == "insufficient_quota" and "budget" in refusal["message"].lower(), refusal
        paid = sum(r["cost_usd"] for r in server.usage_rows(wait_for=0) if r["key_id"] == key_id)
        assert paid <= 30.0


def test_sessions_are_recorded_and_grouped(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0)
    hello: Any = [{"role": "user", "content": "hello"}]
    ids: dict[str, list[str]] = {}
    plan = [({"X-Claude-Code-Session-Id": "claude-s1"}, "claude-s1"),
            ({"X-Claude-Code-Session-Id": "claude-s1"}, "claude-s1"),
            ({"session-id": "codex-7f3a"}, "codex-7f3a"),  # Codex CLI
            ({"session_id": "codex-old"}, "codex-old"),  # older Codex CLI versions
            ({}, None),
            ({"X-Claude-Code-Session-Id": "a" * 300}, "a" * 128)]  # cut to the column's length
    for headers, session in plan:
        reply = client.chat.completions.with_raw_response.create(model="local-agent", messages=hello,
                                                                 extra_headers=headers)
        ids.setdefault(str(session), []).append(reply.headers["x-request-id"])
    for session, request_ids in ids.items():
        for request_id in request_ids:
            assert server.usage_row(request_id)["session_id"] == (None if session == "None" else session)

    # the Anthropic endpoint, as Claude Code calls it
    claude = anthropic.Anthropic(base_url=server.url, api_key=server.admin_key, max_retries=0)
    reply = claude.messages.with_raw_response.create(
        model="local-agent", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Claude-Code-Session-Id": "claude-s2"})
    assert server.usage_row(reply.headers["x-request-id"])["session_id"] == "claude-s2"

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_key}"}) as admin:
        report = admin.get("/admin/usage", params={"group_by": "session", "model": "local-agent"})
        assert report.status_code == 200, report.text
        by_session = {d["session_id"]: d for d in report.json()["data"]}
        named = ("claude-s1", "claude-s2", "codex-7f3a", "codex-old")
        assert {s: d["requests"] for s, d in by_session.items() if s in named} == {
            "claude-s1": 2, "claude-s2": 1, "codex-7f3a": 1, "codex-old": 1}
        s1_rows = [server.usage_row(i) for i in ids["claude-s1"]]
        assert by_session["claude-s1"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in s1_rows), abs=1e-9)
        assert by_session["claude-s1"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in s1_rows)
        assert None in by_session  # requests that named no session
        both = admin.get("/admin/usage", params={"group_by": "day,key,session", "model": "local-agent"}).json()
        assert {d["session_id"] for d in both["data"]} == set(by_session)
        assert all(d["period"] and d["key_id"] for d in both["data"])
