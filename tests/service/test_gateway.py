"""The pipeline's logic in-process, through a fake Provider: failover, fallbacks, the contract,
cooldowns, governance settling and estimated usage. (What travels on the wire is tested against
the loopback fakes, in tests/http and tests/providers.)"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest

from switchyard.core.chat import StreamPiece
from switchyard.core.keys import Principal
from switchyard.core.limits import Budget, RateLimits
from switchyard.core.usage import Usage
from switchyard.errors import (
    BadRequestError,
    ServiceUnavailableError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamRateLimitError,
)
from switchyard.limits.budgets import MemoryLedger
from switchyard.limits.rates import MemoryLimiter
from switchyard.service.call import CLIENT_CLOSED
from switchyard.service.governance import Governance
from tests.service.fake_provider import Answer, Call, completion, stream_of, vectors
from tests.service.pipeline import Pipeline

PRICE = 10_000.0  # USD per 1M tokens, in and out: one cent a token


def upstream(call: Call) -> Answer:
    """Upstreams that behave by model name, as the loopback FakeOpenAI does."""
    model = call.target.upstream_model
    if call.target.provider == "dead":
        raise UpstreamConnectionError("Could not connect to the upstream.")
    if model == "error-400":
        raise BadRequestError("The upstream refused it.", code="upstream_bad_request")
    if model == "error-429":
        raise UpstreamRateLimitError("The upstream is rate limiting.")
    if model == "error-500":
        raise UpstreamError("The upstream failed (500).")
    if model == "error-503":
        raise ServiceUnavailableError("The upstream is unavailable.")
    if call.kind == "embed":
        return vectors()
    usage = None if model == "no-usage" else Usage(5, 3)
    if call.kind == "chat":
        return completion("Hello there friend", usage, model=model)
    if model == "fail-mid-stream":
        return stream_of("this stream is cut", fail=UpstreamError("The upstream closed the connection."))
    if model == "slow-stream":
        return stream_of(" ".join(["word"] * 50), usage, model=model)
    return stream_of("Hello there friend", usage, model=model)


NO_COOLDOWN = {"cooldown_failures": 0}
FAILOVER = {
    "providers": {
        "up": {"type": "openai", "base_url": "http://up.invalid/v1", **NO_COOLDOWN},
        "twin": {"type": "openai", "base_url": "http://twin.invalid/v1", **NO_COOLDOWN},
        "dead": {"type": "openai", "base_url": "http://dead.invalid/v1", "cooldown_failures": 2,
                 "cooldown_window": 60, "cooldown_seconds": 60},
    },
    "models": [
        {"alias": "failover", "routing": "ordered", "deployments": [
            {"provider": "dead", "model": "gpt-4o-mini"}, {"provider": "up", "model": "gpt-4o-mini"}]},
        {"alias": "cut", "routing": "ordered", "deployments": [
            {"provider": "up", "model": "fail-mid-stream"}, {"provider": "twin", "model": "gpt-4o-mini"}]},
        {"alias": "late", "routing": "ordered", "deployments": [
            {"provider": "up", "model": "error-500"}, {"provider": "twin", "model": "gpt-4o-mini"}]},
        {"alias": "split", "deployments": [
            {"provider": "up", "model": "gpt-4o-mini", "weight": 3},
            {"provider": "twin", "model": "gpt-4o", "weight": 1}]},
        {"alias": "balanced", "routing": "least_busy", "deployments": [
            {"provider": "up", "model": "slow-stream"}, {"provider": "twin", "model": "slow-stream"}]},
        {"alias": "limited", "provider": "up", "model": "error-429", "fallbacks": ["backup"]},
        {"alias": "broken", "provider": "up", "model": "error-503", "fallbacks": ["forbidden", "backup"]},
        {"alias": "picky", "provider": "up", "model": "error-400", "fallbacks": ["backup"]},
        {"alias": "forbidden", "provider": "twin", "model": "gpt-4o"},
        {"alias": "backup", "provider": "twin", "model": "gpt-4o-mini"},
        {"alias": "small", "provider": "up", "model": "gpt-4o-mini", "capabilities": {"context_length": 20},
         "context_window_fallbacks": ["large"]},
        {"alias": "small-only", "provider": "up", "model": "gpt-4o-mini", "capabilities": {"context_length": 20}},
        {"alias": "large", "provider": "twin", "model": "gpt-4o"},
        {"alias": "warm", "provider": "up", "model": "gpt-4o-mini", "default_temperature": 0.2},
        {"alias": "quiet", "provider": "up", "model": "no-usage"},
        {"alias": "embed", "provider": "up", "model": "text-embedding-3-small"},
    ],
}


@pytest.fixture
def pipe() -> Pipeline:
    return Pipeline(FAILOVER, upstream)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def events(seen: bytes) -> list[bytes]:
    return [e for e in seen.split(b"\n\n") if e.startswith(b"data: ")]


# -- failover --------------------------------------------------------------------------------
def test_a_refused_deployment_fails_over_and_then_cools_down(pipe: Pipeline) -> None:
    async def body() -> None:
        for attempts in (2, 2, 1, 1):  # two refusals cool the dead deployment down for 60 s
            asked = len(pipe.providers["up"].calls)
            result, ctx = await pipe.chat("failover")
            assert orjson.loads(result.body)["choices"][0]["message"]["content"]
            assert (ctx.deployment, ctx.attempts) == ("up/gpt-4o-mini", attempts)
            assert len(pipe.providers["up"].calls) == asked + 1

    run(body())
    assert pipe.metric('switchyard_upstream_cooling_down{provider="dead/gpt-4o-mini"} 1.0')
    assert pipe.metric('switchyard_upstream_errors_total{code="upstream_connection_error",provider="dead"} 2.0')


def test_a_stream_that_dies_after_its_first_byte_is_not_retried(pipe: Pipeline) -> None:
    seen = run(pipe.stream("cut"))
    assert seen.ctx.attempts == 1 and isinstance(seen.error, UpstreamError)
    assert b"this" in seen.text  # content was relayed
    assert pipe.asked() == ["fail-mid-stream"]  # the twin deployment was never asked
    row = pipe.row(seen.ctx)
    assert row.status == 502 and row.streamed


def test_a_stream_that_fails_before_its_first_byte_moves_on(pipe: Pipeline) -> None:
    seen = run(pipe.stream("late"))
    assert seen.error is None
    assert (seen.ctx.attempts, seen.ctx.deployment) == (2, "twin/gpt-4o-mini")
    assert events(seen.text)[-1] == b"data: [DONE]"
    assert pipe.asked() == ["error-500", "gpt-4o-mini"]
    assert pipe.row(seen.ctx).status == 200


def test_a_stream_that_ends_before_its_first_piece_moves_on() -> None:
    def handler(call: Call) -> Answer:
        return [] if call.target.provider == "up" else stream_of()

    pipe = Pipeline(FAILOVER, handler)
    seen = run(pipe.stream("late"))
    assert (seen.ctx.attempts, seen.ctx.deployment, seen.error) == (2, "twin/gpt-4o-mini", None)
    assert pipe.metric('switchyard_upstream_errors_total{code="upstream_error",provider="up"} 1.0')


def test_weights_share_the_traffic(pipe: Pipeline) -> None:
    async def body() -> Counter[str | None]:
        return Counter([(await pipe.chat("split"))[1].deployment for _ in range(400)])

    served = run(body())
    assert set(served) == {"up/gpt-4o-mini", "twin/gpt-4o"}
    assert 0.65 < served["up/gpt-4o-mini"] / 400 < 0.85  # 3:1 is 0.75


def test_least_busy_picks_the_idle_deployment(pipe: Pipeline) -> None:
    async def body() -> None:
        held, first = pipe.open_stream("balanced")
        await anext(held)  # in flight on one deployment
        other = await pipe.stream("balanced")
        assert {first.deployment, other.ctx.deployment} == {"up/slow-stream", "twin/slow-stream"}
        await held.aclose()  # type: ignore[attr-defined]

    run(body())
    assert pipe.attempts.in_flight == 0 and set(pipe.attempts.busy.values()) == {0}


@pytest.mark.parametrize(("alias", "served"), [("limited", "gpt-4o-mini"), ("broken", "gpt-4o")])
def test_fallbacks_serve_what_the_alias_could_not(pipe: Pipeline, alias: str, served: str) -> None:
    _, ctx = run(pipe.chat(alias))
    assert (ctx.deployment, ctx.attempts) == ("twin", 2)
    assert pipe.asked()[-1] == served  # the first fallback


def test_a_fallback_the_key_may_not_use_is_skipped(pipe: Pipeline) -> None:
    scoped = Principal(key_id="k", name="scoped", is_admin=False, allowed_models=("broken", "backup"))
    _, ctx = run(pipe.chat("broken", principal=scoped))
    assert ctx.attempts == 2
    assert pipe.asked() == ["error-503", "gpt-4o-mini"]  # "forbidden" (gpt-4o) was not tried


def test_a_bad_request_is_not_retried_elsewhere(pipe: Pipeline) -> None:
    exc, ctx = run(pipe.refused("picky"))
    assert isinstance(exc, BadRequestError) and ctx.attempts == 1
    assert pipe.row(ctx).status == 400


def test_a_prompt_too_long_goes_to_the_context_window_fallback(pipe: Pipeline) -> None:
    long = [{"role": "user", "content": "word " * 200}]
    _, ctx = run(pipe.chat("small", messages=long))
    assert ctx.deployment == "twin"
    exc, refused = run(pipe.refused("small-only", messages=long))
    assert (exc.status_code, exc.code, exc.param) == (400, "context_length_exceeded", "messages")
    assert "maximum context length is 20 tokens" in exc.message and refused.attempts == 0
    _, short = run(pipe.chat("small"))
    assert short.deployment == "up"


def test_default_temperature_applies_only_when_the_request_sets_none(pipe: Pipeline) -> None:
    run(pipe.chat("warm"))
    assert pipe.calls[-1].body["temperature"] == 0.2
    run(pipe.chat("warm", temperature=1.1))
    assert pipe.calls[-1].body["temperature"] == 1.1


# -- accounting ------------------------------------------------------------------------------
def test_usage_the_upstream_did_not_report_is_estimated(pipe: Pipeline) -> None:
    _, ctx = run(pipe.chat("quiet"))
    whole = pipe.row(ctx)
    assert whole.estimated and whole.prompt_tokens >= 1 and whole.status == 200
    seen = run(pipe.stream("quiet"))
    streamed = pipe.row(seen.ctx)
    assert streamed.estimated and streamed.completion_tokens == 3 and streamed.streamed  # one event per word
    _, reported = run(pipe.chat("backup"))
    assert (pipe.row(reported).prompt_tokens, pipe.row(reported).completion_tokens) == (5, 3)
    assert not pipe.row(reported).estimated


def test_a_client_that_leaves_is_accounted_as_499_and_frees_everything(pipe: Pipeline) -> None:
    seen = run(pipe.stream("balanced", leave_after=3))
    row = pipe.row(seen.ctx)
    assert row.status == CLIENT_CLOSED and row.estimated and row.completion_tokens >= 1
    assert pipe.attempts.in_flight == 0 and set(pipe.attempts.busy.values()) == {0}
    assert not pipe.accounting.recent_errors  # a client leaving is no error


def test_a_client_that_leaves_a_whole_answer_is_accounted_once_with_its_prompt_estimated() -> None:
    async def body() -> None:
        reached = asyncio.Event()

        async def hang(call: Call) -> Answer:
            reached.set()
            await asyncio.Event().wait()  # an upstream that never answers
            raise AssertionError("unreachable")

        pipe = Pipeline(COOLING, hang)
        waiting = asyncio.create_task(pipe.chat("m"))
        await reached.wait()
        waiting.cancel()  # what the edge does when the client leaves
        with pytest.raises(asyncio.CancelledError):
            await waiting
        [row] = pipe.rows
        assert (row.status, row.estimated, row.completion_tokens) == (CLIENT_CLOSED, True, 0)
        assert row.prompt_tokens > 0  # the upstream had the prompt
        assert pipe.attempts.in_flight == 0 and not pipe.accounting.recent_errors
        assert 'switchyard_upstream_cooling_down{provider="up"}' not in pipe.metrics.render().decode()

    run(body())


def test_failures_are_kept_for_operators(pipe: Pipeline) -> None:
    run(pipe.refused("picky"))
    exc, _ctx = run(pipe.refused("nothing-like-it"))
    assert exc.status_code == 404
    [entry] = list(pipe.accounting.recent_errors)  # an unknown model never reaches accounting
    assert (entry["model"], entry["status"]) == ("picky", 400)


def test_embeddings_go_through_the_same_loop(pipe: Pipeline) -> None:
    result, ctx = run(pipe.embed("embed"))
    assert len(result.vectors) == 1 and ctx.attempts == 1
    row = pipe.row(ctx)
    assert (row.endpoint, row.prompt_tokens, row.status) == ("embeddings", 4, 200)


# -- cooldowns -------------------------------------------------------------------------------
COOLING = {
    "providers": {"up": {"type": "openai", "base_url": "http://up.invalid/v1", "cooldown_failures": 2,
                         "cooldown_window": 10, "cooldown_seconds": 0.5}},
    "models": [{"alias": "m", "provider": "up", "model": "gpt-4o-mini"},
               {"alias": "limited", "provider": "up", "model": "error-429"},
               {"alias": "picky", "provider": "up", "model": "error-400"}],
}


def test_a_lone_upstream_that_cools_down_still_serves_and_its_first_success_closes_the_breaker() -> None:
    down = False

    def handler(call: Call) -> Answer:
        if down:
            raise UpstreamConnectionError("Could not connect to the upstream.")
        return completion()

    pipe = Pipeline(COOLING, handler)

    async def body() -> None:
        nonlocal down
        await pipe.chat("m")
        down = True  # the upstream goes away
        assert [(await pipe.refused("m"))[0].status_code for _ in range(2)] == [502, 502]
        assert pipe.metric('switchyard_upstream_cooling_down{provider="up"} 1.0')
        assert pipe.metric('switchyard_upstream_cooldowns_total{provider="up"} 1.0')
        asked = len(pipe.calls)
        panicked, ctx = await pipe.refused("m")  # nothing else to go to: it is asked anyway (panic)
        assert (panicked.status_code, panicked.code, ctx.attempts) == (502, "upstream_connection_error", 1)
        assert len(pipe.calls) == asked + 1
        status = {u["name"]: u for u in await pipe.upstreams.status()}
        assert (status["up"]["breaker"], status["up"]["cooldown_s"]) == ("panic", 0.5)
        assert pipe.metric('switchyard_upstream_panic{provider="up"} 1.0')
        assert pipe.metric('switchyard_upstream_panic_requests_total{provider="up"} 1.0')

        down = False  # back: the very next request succeeds, long before the cooldown is over
        for _ in range(3):
            await pipe.chat("m")
        status = {u["name"]: u for u in await pipe.upstreams.status()}
        assert (status["up"]["breaker"], status["up"]["cooldown_s"]) == ("closed", 0.0)
        assert pipe.metric('switchyard_upstream_cooling_down{provider="up"} 0.0')
        assert pipe.metric('switchyard_upstream_panic{provider="up"} 0.0')
        assert pipe.metric('switchyard_upstream_panic_requests_total{provider="up"} 2.0')

    run(body())


async def breakers(pipe: Pipeline) -> dict[str, str]:
    """Each upstream's breaker state, and each deployment breaker that is not closed."""
    states: dict[str, str] = {}
    for up in await pipe.upstreams.status():
        states[str(up["name"])] = str(up["breaker"])
        states.update({d["breaker"]: d["state"] for d in up["deployment_breakers"]})  # type: ignore[attr-defined]
    return states


BOTH_DOWN = {
    "providers": {name: {"type": "openai", "base_url": f"http://{name}.invalid/v1", "cooldown_failures": 1,
                         "cooldown_window": 10, "cooldown_seconds": 30} for name in ("a", "b", "c")},
    "models": [{"alias": "m", "routing": "ordered", "deployments": [
        {"provider": "a", "model": "gpt-4o-mini"}, {"provider": "b", "model": "gpt-4o-mini"}],
        "fallbacks": ["spare"]},
               {"alias": "spare", "provider": "c", "model": "gpt-4o-mini"}],
}


def test_when_every_deployment_and_fallback_cools_down_the_one_that_failed_longest_ago_serves() -> None:
    down = {"a", "b", "c"}

    def handler(call: Call) -> Answer:
        if call.target.provider in down:
            raise UpstreamError("The upstream failed (500).")
        return completion()

    pipe = Pipeline(BOTH_DOWN, handler)

    async def body() -> None:
        await pipe.refused("m")  # a, b and the fallback c each fail once: all three cool down, in that order
        assert [c.target.provider for c in pipe.calls] == ["a", "b", "c"]
        pipe.clock.now += 1
        down.clear()
        _result, ctx = await pipe.chat("m")  # all skipped, then a (the oldest failure) is tried anyway
        assert (ctx.deployment, ctx.attempts) == ("a/gpt-4o-mini", 1)
        assert [c.target.provider for c in pipe.calls][3:] == ["a"]
        await pipe.chat("m")  # a is closed again: ordinary routing
        assert [c.target.provider for c in pipe.calls][4:] == ["a"]

    run(body())


def test_a_deployment_cooling_down_is_skipped_while_another_serves_then_probed_by_one_request() -> None:
    down = {"a"}

    def handler(call: Call) -> Answer:
        if call.target.provider in down:
            raise UpstreamError("The upstream failed (500).")
        return completion()

    pipe = Pipeline(BOTH_DOWN, handler)

    async def body() -> None:
        for _ in range(4):
            _result, ctx = await pipe.chat("m")
            assert ctx.deployment == "b/gpt-4o-mini"
        assert [c.target.provider for c in pipe.calls] == ["a", "b", "b", "b", "b"]  # a asked once, then steered away
        assert await breakers(pipe) == {"a": "closed", "b": "closed", "c": "closed", "a/gpt-4o-mini": "open"}
        pipe.clock.now += 31  # the cooldown is over: the next request probes a (half-open)
        assert (await breakers(pipe))["a/gpt-4o-mini"] == "half_open"
        down.clear()
        _result, ctx = await pipe.chat("m")
        assert ctx.deployment == "a/gpt-4o-mini"
        assert "a/gpt-4o-mini" not in await breakers(pipe)  # closed

    run(body())


def test_client_errors_and_upstream_429s_do_not_cool_an_upstream_down() -> None:
    pipe = Pipeline({**COOLING, "providers": {"up": {**COOLING["providers"]["up"], "cooldown_failures": 1}}},
                    upstream)

    async def body() -> None:
        for _ in range(3):
            assert (await pipe.refused("limited"))[0].status_code == 429
            assert (await pipe.refused("picky"))[0].status_code == 400
        await pipe.chat("m")

    run(body())


def test_a_malformed_tool_call_says_nothing_about_the_upstream() -> None:
    def handler(call: Call) -> Answer:
        raise UpstreamError("The model produced a malformed tool call.", code="malformed_function_call")

    pipe = Pipeline({**COOLING, "providers": {"up": {**COOLING["providers"]["up"], "cooldown_failures": 1}}},
                    handler)
    for _ in range(3):
        exc, _ = run(pipe.refused("m"))
        assert exc.code == "malformed_function_call"  # never upstream_cooldown


# -- governance ------------------------------------------------------------------------------
PRICED = {
    "providers": {"up": {"type": "openai", "base_url": "http://up.invalid/v1", **NO_COOLDOWN}},
    "models": [{"alias": alias, "provider": "up", "model": model, "input_cost_per_1m": PRICE,
                "output_cost_per_1m": PRICE}
               for alias, model in (("m", "gpt-4o-mini"), ("broken", "error-500"), ("slow", "slow-stream"))],
}


def governed(amount_usd: float) -> tuple[Pipeline, Principal]:
    async def nothing_spent(scope: str, since: Any) -> float:
        return 0.0

    pipe = Pipeline(PRICED, upstream, governance=Governance(MemoryLimiter(), MemoryLedger(nothing_spent)))
    return pipe, Principal(key_id="k1", name="budgeted", is_admin=False, budget=Budget(amount_usd, "monthly"))


def test_failed_requests_release_their_reservation() -> None:
    pipe, key = governed(0.35)  # room for one worst case at a time: a hold that leaked refuses the next

    async def body() -> None:
        for _ in range(5):
            assert (await pipe.refused("broken", principal=key, max_tokens=5))[0].status_code == 502
        await pipe.chat("m", principal=key, max_tokens=5)

    run(body())


def test_a_client_that_leaves_pays_for_what_it_got_and_frees_the_rest() -> None:
    pipe, key = governed(0.8)

    async def body() -> None:
        seen = await pipe.stream("slow", principal=key, leave_after=4, max_tokens=50)
        row = pipe.row(seen.ctx)
        assert row.status == CLIENT_CLOSED and row.estimated and 0 < row.cost_usd < 0.3
        await pipe.chat("m", principal=key, max_tokens=5)  # the unused worst case was freed

    run(body())


def test_without_max_tokens_the_answer_is_capped_to_what_the_budget_pays() -> None:
    pipe, key = governed(0.5)
    run(pipe.chat("m", principal=key))
    # $0.50 at a cent a token, less the prompt counted at a token a byte: well under 50 tokens
    assert 1 <= pipe.calls[-1].body["max_tokens"] < 50


def test_max_parallel_counts_requests_in_flight() -> None:
    pipe, _ = governed(1.0)
    key = Principal(key_id="k2", name="parallel", is_admin=False, limits=RateLimits(max_parallel=1))

    async def body() -> None:
        held, _ = pipe.open_stream("slow", principal=key, max_tokens=50)
        await anext(held)
        refused, _ = await pipe.refused("m", principal=key)
        assert refused.status_code == 429 and "1 parallel requests" in refused.message
        assert len([chunk async for chunk in held]) > 10  # the held stream went on to its end
        await pipe.chat("m", principal=key)  # the slot came back when the stream ended

    run(body())


def test_a_stream_piece_without_events_is_not_counted() -> None:
    def handler(call: Call) -> Answer:
        return [StreamPiece(b": keep-alive\n\n"), *stream_of("one two", usage=None)]

    pipe = Pipeline(PRICED, handler)
    seen = run(pipe.stream("m"))
    assert pipe.row(seen.ctx).completion_tokens == 2 and seen.text.startswith(b": keep-alive")
