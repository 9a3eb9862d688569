"""The in-process rate limiter (rolling windows on an injected clock) and the x-ratelimit-* headers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from switchyard.core.limits import Admission, LimitCheck, LimitState, RateLimits, format_reset, ratelimit_headers
from switchyard.errors import RateLimitError
from switchyard.limits.rates import MemoryLimiter


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def admit(lim: MemoryLimiter, checks: Sequence[LimitCheck], lease: str = "l", tokens: int = 0) -> Admission:
    return asyncio.run(lim.admit(checks, lease, tokens))


def refuse(lim: MemoryLimiter, checks: Sequence[LimitCheck], lease: str = "l", tokens: int = 0) -> RateLimitError:
    with pytest.raises(RateLimitError) as info:
        asyncio.run(lim.admit(checks, lease, tokens))
    return info.value


def settle(lim: MemoryLimiter, admission: Admission, tokens: int = 0) -> None:
    asyncio.run(lim.settle(admission, tokens))


RPM5 = [LimitCheck("key:k", "requests", 5, 60.0)]


# -- headers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (-3, "0s"), (0.02, "20ms"), (0.0004, "1ms"), (0.999, "999ms"), (1, "1s"), (12.5, "12.5s"),
    (12.345, "12.345s"), (59.9991, "1m0s"), (360, "6m0s"), (61.25, "1m1.25s"), (3600, "1h0m0s"),
    (86399.5, "23h59m59.5s"), (86400, "24h0m0s"),
])
def test_reset_durations_in_openai_format(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_headers_of_an_admission_and_of_states() -> None:
    admission = Admission("l", requests=LimitState(60, 59, 1.0), tokens=LimitState(150000, 149984, 0.0064))
    assert ratelimit_headers(admission) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "7ms",
    }
    assert ratelimit_headers(None, LimitState(1000, -5, 360.0)) == {
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s",
    }
    assert ratelimit_headers(Admission("l")) == {}


# -- request windows ------------------------------------------------------------------------------
def test_exactly_the_limit_then_429_with_retry_after_and_headers() -> None:
    clock = Clock(1000.0)
    lim = MemoryLimiter(clock)
    for i in range(5):
        clock.t = 1000.0 + i
        got = admit(lim, RPM5, f"l{i}")
        assert got.requests == LimitState(5, 4 - i, 60.0 - i)  # the oldest leaves at 1060
        assert got.tokens is None
    clock.t = 1010.0
    err = refuse(lim, RPM5)
    assert err.status_code == 429 and err.code == "rate_limit_exceeded"
    assert err.message == "Rate limit reached for key k: 5 requests per minute. Try again in 50s."
    assert err.retry_after == 50.0
    assert err.headers == {"x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "0",
                           "x-ratelimit-reset-requests": "50s"}
    clock.t = 1060.0  # the request of 1000 has left the window: room for exactly one
    assert admit(lim, RPM5).requests == LimitState(5, 0, 1.0)
    clock.t = 1060.5
    err = refuse(lim, RPM5)
    assert err.retry_after == 1.0  # 0.5 s, never rounded down to 0
    assert err.headers["x-ratelimit-reset-requests"] == "500ms"
    clock.t = 1061.0
    admit(lim, RPM5)


def test_rolling_window_has_no_burst_at_the_minute_boundary() -> None:
    clock = Clock(59.9)
    lim = MemoryLimiter(clock)
    for i in range(5):
        admit(lim, RPM5, f"a{i}")
    clock.t = 60.1  # a fixed window would start afresh here and let 5 more through
    err = refuse(lim, RPM5)
    assert err.headers["x-ratelimit-reset-requests"] == "59.8s"
    assert err.retry_after == 60.0
    clock.t = 119.89
    refuse(lim, RPM5)
    clock.t = 119.9
    for i in range(5):
        admit(lim, RPM5, f"b{i}")
    refuse(lim, RPM5)


def test_requests_per_hour_and_per_day() -> None:
    clock = Clock(0.0)
    lim = MemoryLimiter(clock)
    checks = RateLimits(rph=3, rpd=4).checks("team:t")
    for t in (0.0, 10.0, 20.0):
        clock.t = t
        admit(lim, checks, f"l{t}")
    clock.t = 30.0
    err = refuse(lim, checks)
    assert err.message == "Rate limit reached for team t: 3 requests per hour. Try again in 3570s."
    assert err.retry_after == 3570.0
    assert err.headers["x-ratelimit-reset-requests"] == "59m30s"
    clock.t = 3600.0  # the hour has room again; the day takes its 4th request
    got = admit(lim, checks, "l4")
    assert got.requests == LimitState(4, 0, 82800.0)  # none left in either: the one that waits longer
    clock.t = 3610.0  # the hour has room again, the day has none: the longer wait is the answer
    err = refuse(lim, checks)
    assert err.message == "Rate limit reached for team t: 4 requests per day. Try again in 82790s."
    assert err.retry_after == 82790.0
    assert err.headers["x-ratelimit-reset-requests"] == "22h59m50s"
    clock.t = 86400.0
    admit(lim, checks, "l5")


def test_refusal_by_one_check_counts_nothing_in_the_others() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock)
    key = [LimitCheck("key:k", "requests", 10, 60.0), LimitCheck("key:k", "parallel", 5, 0.0),
           LimitCheck("key:k", "tokens", 1000, 60.0)]
    team = [LimitCheck("team:t", "requests", 2, 60.0)]
    per_model = [LimitCheck("key:k|model:gpt-4o", "requests", 100, 3600.0)]
    admit(lim, key + team + per_model, "a", 100)
    admit(lim, key + team + per_model, "b", 100)
    for i in range(3):
        err = refuse(lim, key + team + per_model, f"c{i}", 100)
        assert err.message.startswith("Rate limit reached for team t: 2 requests per minute.")
        # the failing counter, and the tightest token counter as it stands
        assert err.headers["x-ratelimit-remaining-requests"] == "0"
        assert err.headers["x-ratelimit-remaining-tokens"] == "800"
    got = admit(lim, key + per_model, "d", 100)
    assert got.requests == LimitState(10, 7, 60.0)
    assert got.tokens == LimitState(1000, 700, 60.0)
    assert admit(lim, per_model, "e").requests == LimitState(100, 96, 3600.0)
    # the parallel check holds a, b and d: two more fit, not five
    admit(lim, key, "f")
    admit(lim, key, "g")
    assert refuse(lim, key, "h").message == "Rate limit reached for key k: 5 parallel requests. Try again in 1s."


def test_scopes_are_named_in_the_message() -> None:
    lim = MemoryLimiter(Clock())
    checks = [LimitCheck("key:k1|model:gpt-4o", "requests", 1, 60.0)]
    admit(lim, checks)
    assert refuse(lim, checks).message.startswith("Rate limit reached for key k1 on model gpt-4o: 1 requests per")
    checks = [LimitCheck("model:llama", "requests", 1, 30.0)]
    admit(lim, checks)
    assert refuse(lim, checks).message == (
        "Rate limit reached for model llama: 1 requests per 30 seconds. Try again in 30s.")


# -- parallel ------------------------------------------------------------------------------------
def test_parallel_slots_are_held_until_settled_once() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock)
    checks = RateLimits(max_parallel=2).checks("key:k")
    a = admit(lim, checks, "a")
    b = admit(lim, checks, "b")
    err = refuse(lim, checks, "c")
    assert err.retry_after == 1.0
    assert err.headers == {}  # no request or token window to report
    settle(lim, a)
    assert a.settled
    c = admit(lim, checks, "c")
    settle(lim, a)  # a second settle frees nothing more
    refuse(lim, checks, "d")
    settle(lim, b)
    settle(lim, c)
    admit(lim, checks, "d")
    admit(lim, checks, "e")


def test_parallel_lease_never_settled_expires_after_lease_ttl() -> None:
    clock = Clock(100.0)
    lim = MemoryLimiter(clock, lease_ttl=30.0)
    checks = RateLimits(max_parallel=1).checks("key:k")
    admit(lim, checks, "crashed")
    clock.t = 129.9
    refuse(lim, checks, "b")
    clock.t = 130.0
    admit(lim, checks, "b")


def test_a_limit_of_zero_never_admits() -> None:
    lim = MemoryLimiter(Clock())
    for checks in (RateLimits(rpm=0).checks("key:k"), RateLimits(max_parallel=0).checks("key:k")):
        err = refuse(lim, checks)
        assert err.retry_after is None
        assert err.headers["x-should-retry"] == "false"
        assert err.message.startswith("Rate limit for key k admits no requests")


# -- tokens ---------------------------------------------------------------------------------------
def test_token_window_holds_the_prompt_then_counts_the_real_total() -> None:
    clock = Clock(0.0)
    lim = MemoryLimiter(clock)
    tpm = RateLimits(tpm=1000).checks("key:k")
    a = admit(lim, tpm, "a", 600)
    assert a.tokens == LimitState(1000, 400, 60.0)
    assert a.requests is None
    clock.t = 10.0
    err = refuse(lim, tpm, "b", 500)  # 600 held + 500 > 1000
    assert err.message == "Rate limit reached for key k: 1000 tokens per minute. Try again in 50s."
    assert err.headers == {"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "400",
                           "x-ratelimit-reset-tokens": "50s"}
    settle(lim, a, 200)  # the request really used 200: its hold of 600 is replaced by 200 at t=10
    settle(lim, a, 200)
    clock.t = 20.0
    b = admit(lim, tpm, "b", 500)
    assert b.tokens == LimitState(1000, 300, 60.0)
    clock.t = 30.0
    settle(lim, b, 900)  # its completion overshoots what was left: counted anyway
    err = refuse(lim, tpm, "c", 101)
    assert err.headers["x-ratelimit-remaining-tokens"] == "0"
    assert err.retry_after == 60.0  # 200 (t=10) leaving is not enough; 900 (t=30) leaves at t=90
    assert refuse(lim, tpm, "c", 100).retry_after == 40.0  # 200 leaving is enough for 100
    clock.t = 70.0
    err = refuse(lim, tpm, "c", 101)
    assert err.retry_after == 20.0
    clock.t = 90.0
    assert admit(lim, tpm, "c", 1000).tokens == LimitState(1000, 0, 60.0)


def test_a_prompt_larger_than_the_tpm_is_refused_for_good() -> None:
    lim = MemoryLimiter(Clock())
    err = refuse(lim, RateLimits(tpm=1000).checks("key:k"), "a", 1001)
    assert err.message == "Request too large for key k: it needs 1001 tokens, the limit is 1000 tokens per minute."
    assert err.retry_after is None
    assert err.headers == {"x-should-retry": "false", "x-ratelimit-limit-tokens": "1000",
                           "x-ratelimit-remaining-tokens": "1000", "x-ratelimit-reset-tokens": "0s"}


def test_failed_request_settled_with_zero_tokens_gives_its_hold_back() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock)
    tpm = RateLimits(tpm=100).checks("key:k")
    a = admit(lim, tpm, "a", 80)
    refuse(lim, tpm, "b", 80)
    settle(lim, a, 0)
    assert admit(lim, tpm, "b", 80).tokens == LimitState(100, 20, 60.0)


# -- concurrency and memory ---------------------------------------------------------------------
def test_two_hundred_concurrent_admits_let_exactly_sixty_through() -> None:
    lim = MemoryLimiter()
    checks = RateLimits(rpm=60).checks("key:k")

    async def run() -> list[Admission | BaseException]:
        return await asyncio.gather(*(lim.admit(checks, f"l{i}", 0) for i in range(200)), return_exceptions=True)

    results = asyncio.run(run())
    assert sum(isinstance(r, Admission) for r in results) == 60
    assert sum(isinstance(r, RateLimitError) for r in results) == 140


def test_idle_scopes_are_dropped() -> None:
    clock = Clock(0.0)
    lim = MemoryLimiter(clock, lease_ttl=120.0)
    for i in range(100):
        limits = RateLimits(rpm=5, tpm=100, max_parallel=2)
        admit(lim, limits.checks(f"key:{i}"), f"l{i}", 10)  # never settled: a leaked lease
    assert len(lim._requests) == len(lim._tokens) == len(lim._parallel) == len(lim._held) == 100
    clock.t = 130.0  # past every window and lease; the next admit sweeps
    admit(lim, RateLimits(rpm=5).checks("key:new"), "n")
    assert len(lim._requests) == 1
    assert lim._tokens == {} and lim._parallel == {} and lim._held == {}


def test_the_token_window_matches_a_plain_log_over_random_traffic() -> None:
    """Admits, refusals, remaining tokens and waits agree with a naive (time, tokens) list, over
    random prompts, settles and clock steps: holds given back while in the window, after it,
    and after the sweep dropped their window's counter."""
    import math
    import random

    limit, window = 1000, 60.0
    rng = random.Random(20261123)
    clock = Clock(0.0)
    lim = MemoryLimiter(clock)
    checks = RateLimits(tpm=limit).checks("key:k")
    log: list[list[float]] = []  # [at, tokens]: the reference
    pending: dict[str, tuple[Admission, list[float] | None]] = {}
    admitted = refused = 0
    for step in range(3000):
        clock.t += rng.choice((0.0, 0.5, 3.0, 17.0, 70.0 if step % 500 == 0 else 1.0))
        live = [e for e in log if e[0] > clock.t - window]
        used = int(sum(e[1] for e in live))
        if pending and rng.random() < 0.45:  # settle one request in flight, in any order
            lease = rng.choice(list(pending))
            admission, hold = pending.pop(lease)
            total = rng.choice((0, 0, rng.randrange(1, 500)))
            if hold is not None:
                hold[1] = 0
            if total:
                log.append([clock.t, total])
            settle(lim, admission, total)
            continue
        tokens = rng.choice((0, rng.randrange(1, 400)))
        lease = f"l{step}"
        if used + tokens <= limit:
            admission = admit(lim, checks, lease, tokens)
            assert admission.tokens is not None
            assert admission.tokens.remaining == max(0, limit - used - tokens)
            hold = [clock.t, tokens] if tokens else None
            if hold is not None:
                log.append(hold)
            pending[lease] = (admission, hold)
            admitted += 1
        else:
            err = refuse(lim, checks, lease, tokens)
            left, wait = used, None
            for at, n in sorted(live):
                left -= int(n)
                if left + tokens <= limit:
                    wait = at + window - clock.t
                    break
            assert wait is not None
            assert err.retry_after == max(1, math.ceil(round(wait, 6)))
            assert err.headers["x-ratelimit-remaining-tokens"] == str(max(0, limit - used))
            refused += 1
    assert admitted > 500 and refused > 200  # both paths were exercised
