"""The limits host (``serve --workers N`` without Redis): the supervisor owns the counters and
each worker asks it over a Unix socket. Real sockets, the real engines; a worker is a
connection of its own (``HostLink``), or a process of its own when it has to die.

The budget ledger's shared behaviour (exact arithmetic, periods, seeding, the hard ceiling
across two workers) runs on the host too, in ``test_budgets.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from switchyard.core.limits import Admission, BudgetCheck, LimitCheck
from switchyard.errors import InsufficientQuotaError, RateLimitError, ServiceUnavailableError
from switchyard.limits.budgets import LedgerUnavailableError
from switchyard.limits.fallback import FallbackLimiter
from switchyard.limits.host import LimitsHost, serving
from switchyard.limits.host_client import HostLedger, HostLimiter, HostLink
from switchyard.limits.rates import MemoryLimiter

RPM60 = [LimitCheck("key:k", "requests", 60, 60.0)]
PARALLEL2 = [LimitCheck("key:p", "parallel", 2, 0.0)]
BUDGET = BudgetCheck("key:b", 1.00, "total")


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "limits.sock"


@pytest.fixture
def host(sock: Path) -> Iterator[LimitsHost]:
    with serving(sock) as running:
        yield running


async def refused(limiter: HostLimiter | FallbackLimiter, checks: list[LimitCheck], lease: str = "x",
                  tokens: int = 0) -> RateLimitError:
    with pytest.raises(RateLimitError) as info:
        await limiter.admit(checks, lease, tokens)
    return info.value


def test_two_workers_two_hundred_concurrent_admits_exactly_sixty(sock: Path, host: LimitsHost) -> None:
    """One window for both: exactly the limit, and the refusals are the in-process limiter's own
    429s (message, Retry-After, x-ratelimit-* headers)."""

    async def main() -> None:
        a, b = HostLimiter(HostLink(sock)), HostLimiter(HostLink(sock))
        try:
            async def one(i: int) -> Admission | None:
                try:
                    return await (a, b)[i % 2].admit(RPM60, f"l{i}", 0)
                except RateLimitError:
                    return None

            results = await asyncio.gather(*(one(i) for i in range(200)))
            admitted = [r for r in results if r is not None]
            assert len(admitted) == 60
            assert sorted(r.requests.remaining for r in admitted if r.requests) == list(range(60))
            err = await refused(b, RPM60)
            assert err.status_code == 429 and err.code == "rate_limit_exceeded"
            assert err.message == "Rate limit reached for key k: 60 requests per minute. Try again in 60s."
            assert err.retry_after == 60.0
            assert err.headers["x-ratelimit-limit-requests"] == "60"
            assert err.headers["x-ratelimit-remaining-requests"] == "0"
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(main())


def test_tokens_and_parallel_slots_are_held_then_settled(sock: Path, host: LimitsHost) -> None:
    tpm = [LimitCheck("key:t", "tokens", 1000, 60.0), *PARALLEL2]

    async def main() -> None:
        a, b = HostLimiter(HostLink(sock)), HostLimiter(HostLink(sock))
        try:
            first = await a.admit(tpm, "one", 600)
            assert first.tokens is not None and first.tokens.remaining == 400
            err = await refused(b, tpm, tokens=600)  # 600 held + 600 wanted > 1000
            assert err.message.startswith("Rate limit reached for key t: 1000 tokens per minute")
            await a.settle(first, 100)  # the real total replaces the hold
            # a settle is sent without waiting for an answer: a call on the same connection
            # returns once the host has read it (one connection's frames are handled in order)
            await a.settle(await a.admit([], "sync", 0), 0)
            second = await b.admit(tpm, "two", 600)
            assert second.tokens is not None and second.tokens.remaining == 300
            third = await a.admit(PARALLEL2, "three", 0)
            err = await refused(b, PARALLEL2)
            assert err.message == "Rate limit reached for key p: 2 parallel requests. Try again in 1s."
            await b.settle(second, 0)
            await b.settle(second, 0)  # idempotent
            await a.settle(third, 0)
            await a.settle(await a.admit([], "sync-2", 0), 0)
            await b.admit(PARALLEL2, "four", 0)
            await b.admit(PARALLEL2, "five", 0)
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(main())


def test_a_cancelled_admit_and_reserve_hold_nothing(sock: Path, host: LimitsHost) -> None:
    """The client left while its admit or reserve was on the wire: what the host counted for it
    is given back (a settle or release follows it on the same connection)."""

    async def main() -> None:
        link = HostLink(sock)
        limiter, ledger = HostLimiter(link), HostLedger(link)
        other = HostLimiter(HostLink(sock))
        try:
            await limiter.admit([LimitCheck("key:warm", "requests", 10, 60.0)], "warm", 0)  # connected
            for i in range(20):
                task = asyncio.ensure_future(limiter.admit(PARALLEL2, f"gone-{i}", 0))
                hold = asyncio.ensure_future(ledger.reserve([BUDGET], f"gone-{i}", 0.6))
                await asyncio.sleep(0)  # their frames are sent
                task.cancel()
                hold.cancel()
                await asyncio.gather(task, hold, return_exceptions=True)
            assert await ledger.available([BUDGET]) == 1.0  # (a round trip: the host has read it all)
            await other.admit(PARALLEL2, "a", 0)
            await other.admit(PARALLEL2, "b", 0)
        finally:
            await link.aclose()
            await other.aclose()

    asyncio.run(main())


_WORKER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from switchyard.core.limits import BudgetCheck, LimitCheck
    from switchyard.limits.host_client import HostLedger, HostLimiter, HostLink

    async def main():
        link = HostLink(Path(sys.argv[1]))
        await HostLimiter(link).admit([LimitCheck("key:p", "parallel", 2, 0.0)], "w1", 0)
        await HostLimiter(link).admit([LimitCheck("key:p", "parallel", 2, 0.0)], "w2", 0)
        await HostLedger(link).reserve([BudgetCheck("key:b", 1.00, "total")], "w3", 0.8)
        print("held", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
""")


def test_a_worker_killed_mid_request_gives_its_slots_and_holds_back_at_once(sock: Path, host: LimitsHost) -> None:
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, str(sock)], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline() == "held\n"

        async def blocked() -> None:
            limiter, ledger = HostLimiter(HostLink(sock)), HostLedger(HostLink(sock))
            try:
                await refused(limiter, PARALLEL2)
                with pytest.raises(InsufficientQuotaError):
                    await ledger.reserve([BUDGET], "mine", 0.5)
                assert await ledger.available([BUDGET]) == pytest.approx(0.2)
            finally:
                await limiter.aclose()
                await ledger.aclose()

        asyncio.run(blocked())
        os.kill(worker.pid, signal.SIGKILL)  # no goodbye: only its connection closes
        worker.wait(10)

        async def free() -> None:
            limiter, ledger = HostLimiter(HostLink(sock)), HostLedger(HostLink(sock))
            try:
                for _ in range(100):  # the host notices the closed connection within milliseconds
                    if await ledger.available([BUDGET]) == 1.0:
                        break
                    await asyncio.sleep(0.01)
                await limiter.admit(PARALLEL2, "a", 0)
                await limiter.admit(PARALLEL2, "b", 0)
                held = await ledger.reserve([BUDGET], "mine", 1.0)
                assert held.remaining_usd == {"key:b": 0.0}
            finally:
                await limiter.aclose()
                await ledger.aclose()

        asyncio.run(free())
    finally:
        worker.kill()
        worker.wait(10)
        assert worker.stdout is not None
        worker.stdout.close()


def test_two_workers_seeding_one_counter_at_once_agree(sock: Path, host: LimitsHost) -> None:
    """Their reads of the usage rollups differ (one ran later): the host keeps the first seed,
    and each worker reads the rollups once, however many of its requests found the counter new."""
    calls: list[str] = []

    def source(worker: str, spent: float):  # type: ignore[no-untyped-def]
        async def read(scope: str, since: datetime | None) -> float:
            calls.append(worker)
            await asyncio.sleep(0.02)
            return spent
        return read

    async def main() -> None:
        a, b = HostLedger(HostLink(sock), source("a", 0.30)), HostLedger(HostLink(sock), source("b", 0.40))
        try:
            await asyncio.gather(*(ledger.reserve([BUDGET], uuid.uuid4().hex, 0.01)
                                   for _ in range(25) for ledger in (a, b)))
            left_a, left_b = await a.available([BUDGET]), await b.available([BUDGET])
            assert left_a == left_b
            assert left_a in (pytest.approx(0.2), pytest.approx(0.1))
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(main())
    assert sorted(calls) in (["a"], ["b"], ["a", "b"])


def test_the_host_gone_is_per_process_limits_and_back_when_it_returns(sock: Path) -> None:
    """The supervisor's host cannot be reached: the circuit serves per-process limits (degraded,
    for /ready) without waiting on it, or 503 when failing closed; once the host answers again,
    the next probe goes back to it. A host that goes away while connected is the same."""
    rpm2 = [LimitCheck("key:r", "requests", 2, 60.0)]

    async def main() -> None:
        lim = FallbackLimiter(HostLimiter(HostLink(sock)), MemoryLimiter(), probe_interval=0.05)
        closed = FallbackLimiter(HostLimiter(HostLink(sock)), MemoryLimiter(), fail_closed=True,
                                 probe_interval=0.05)
        try:
            await lim.admit(rpm2, "p1", 0)  # nobody there: per-process
            assert lim.degraded
            with pytest.raises(ServiceUnavailableError) as info:
                await closed.admit(rpm2, "c1", 0)
            assert info.value.code == "limits_unavailable"
            with pytest.raises(LedgerUnavailableError):
                await HostLedger(HostLink(sock)).reserve([BUDGET], "b1", 0.1)

            host = LimitsHost(sock)
            await host.start()
            await asyncio.sleep(0.06)
            await lim.admit(rpm2, "p2", 0)  # the probe: the host answers
            assert not lim.degraded
            await lim.admit(rpm2, "p3", 0)
            await asyncio.sleep(0.06)
            err = await refused(closed, rpm2)  # its probe reaches the host, whose window is full
            assert err.message.startswith("Rate limit reached for key r: 2 requests per minute")
            assert not closed.degraded

            await host.aclose()  # gone, with both connected
            await asyncio.sleep(0.01)
            await lim.admit(rpm2, "p4", 0)
            assert lim.degraded
            with pytest.raises(ServiceUnavailableError):
                await closed.admit(rpm2, "c3", 0)
        finally:
            await lim.aclose()
            await closed.aclose()

    asyncio.run(main())
