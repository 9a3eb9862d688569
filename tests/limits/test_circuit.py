"""The fallback circuit alone: a store the test takes down and brings back, on a clock the test
moves. (The Redis engines behind it, with a real Redis killed and hung: test_rates_redis.py,
test_budgets.py and tests/e2e/test_faults.py.)"""

from __future__ import annotations

import asyncio

import pytest

from switchyard.errors import RateLimitError, ServiceUnavailableError
from switchyard.limits.circuit import Circuit

PROBE_S = 5.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Outage(Exception):
    """What the store's client raises when it cannot reach it."""


class Store:
    """A shared store: ``up``, or down (``Outage``); ``refusing`` answers with a 429; ``hold``
    keeps the next call waiting until it is set (``held`` says one is). ``calls`` counts the calls
    that reached it."""

    def __init__(self) -> None:
        self.up = True
        self.refusing = False
        self.hold: asyncio.Event | None = None
        self.held = asyncio.Event()  # set once a call is waiting on ``hold``
        self.calls = 0

    async def get(self) -> str:
        self.calls += 1
        hold, self.hold = self.hold, None
        if hold is not None:
            self.held.set()
            await hold.wait()
        if not self.up:
            raise Outage
        if self.refusing:
            raise RateLimitError("no room")
        return "primary"


async def local() -> str:
    return "fallback"


class Setup:
    def __init__(self, *, fail_closed: bool = False, timeout: float | None = None) -> None:
        self.clock = FakeClock()
        self.store = Store()
        self.degradations = 0
        self.circuit = Circuit(
            "things", is_outage=lambda exc: isinstance(exc, Outage),
            unavailable=lambda: ServiceUnavailableError("Things are away.", code="things_unavailable",
                                                        retry_after=2.0),
            fail_closed=fail_closed, probe_interval=PROBE_S, timeout=timeout, on_degraded=self.degraded,
            clock=self.clock)

    def degraded(self) -> None:
        self.degradations += 1

    async def call(self, *, may_refuse: bool = True) -> str:
        return await self.circuit.call(self.store.get, local, may_refuse=may_refuse)

    async def go_down(self) -> None:
        self.store.up = False
        assert await self.call() == "fallback"
        assert self.circuit.degraded


def test_primary_while_it_answers_then_fallback_and_one_probe_per_interval() -> None:
    async def main() -> None:
        s = Setup()
        assert await s.call() == "primary"
        assert not s.circuit.degraded and s.store.calls == 1

        await s.go_down()  # the call that found it down is served by the fallback
        assert s.store.calls == 2 and s.degradations == 1
        assert await s.call() == "fallback"  # degraded: no call waits on the store
        s.clock.advance(PROBE_S - 0.001)
        assert await s.call() == "fallback"
        assert s.store.calls == 2

        s.clock.advance(0.001)  # a probe is due: still down
        assert await s.call() == "fallback"
        assert s.store.calls == 3 and s.circuit.degraded and s.degradations == 1
        assert await s.call() == "fallback"  # the next probe is an interval after the failed one
        s.clock.advance(PROBE_S - 0.001)
        assert await s.call() == "fallback"
        assert s.store.calls == 3

        s.store.up = True
        assert await s.call() == "fallback"  # back, but nobody has probed yet
        s.clock.advance(0.001)
        assert await s.call() == "primary"  # the probe answers: closed again
        assert not s.circuit.degraded and s.store.calls == 4
        assert await s.call() == "primary"
        assert s.store.calls == 5

        await s.go_down()  # a second outage is a second degradation
        assert s.degradations == 2

    asyncio.run(main())


def test_one_probe_at_a_time() -> None:
    async def main() -> None:
        s = Setup()
        await s.go_down()
        s.clock.advance(PROBE_S)
        s.store.up = True
        hold = s.store.hold = asyncio.Event()
        probe = asyncio.create_task(s.call())
        await s.store.held.wait()
        for _ in range(3):  # while it is out, everyone else uses the fallback
            assert await s.call() == "fallback"
        assert s.store.calls == 2
        hold.set()
        assert await probe == "primary"
        assert not s.circuit.degraded

    asyncio.run(main())


def test_a_probe_cancelled_in_flight_lets_the_next_call_probe() -> None:
    async def main() -> None:
        s = Setup()
        await s.go_down()
        s.clock.advance(PROBE_S)
        s.store.hold = asyncio.Event()
        probe = asyncio.create_task(s.call())
        await s.store.held.wait()
        probe.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await probe
        s.store.up = True
        assert await s.call() == "primary"
        assert s.store.calls == 3 and not s.circuit.degraded

    asyncio.run(main())


def test_fail_closed_refuses_with_503_but_never_a_call_that_may_not_refuse() -> None:
    async def main() -> None:
        s = Setup(fail_closed=True)
        assert await s.call() == "primary"
        s.store.up = False
        for _ in range(2):  # the call that finds it down, and the calls while it is down
            with pytest.raises(ServiceUnavailableError) as info:
                await s.call()
            assert info.value.code == "things_unavailable" and info.value.retry_after == 2.0
        assert s.circuit.degraded and s.store.calls == 2
        assert await s.call(may_refuse=False) == "fallback"  # a settle makes do
        s.store.up = True
        s.clock.advance(PROBE_S)
        assert await s.call() == "primary"

    asyncio.run(main())


def test_a_refusal_is_an_answer() -> None:
    async def main() -> None:
        s = Setup()
        s.store.refusing = True
        with pytest.raises(RateLimitError):
            await s.call()
        assert not s.circuit.degraded  # a 429 from the store: it is there
        await s.go_down()
        s.store.up = True
        s.clock.advance(PROBE_S)
        with pytest.raises(RateLimitError):
            await s.call()  # the probe is refused: the store answered, so the circuit closes
        assert not s.circuit.degraded

    asyncio.run(main())


def test_no_answer_within_the_timeout_is_an_outage() -> None:
    async def main() -> None:
        s = Setup(timeout=0.01)
        s.store.hold = asyncio.Event()  # a hung store: it never answers
        assert await s.call() == "fallback"
        assert s.circuit.degraded and s.degradations == 1

    asyncio.run(main())


def test_a_call_begun_before_the_outage_does_not_close_it() -> None:
    async def main() -> None:
        s = Setup()
        hold = s.store.hold = asyncio.Event()
        early = asyncio.create_task(s.call())  # on its way when the store goes down
        await s.store.held.wait()
        await s.go_down()
        s.store.up = True
        hold.set()
        assert await early == "primary"
        assert s.circuit.degraded  # only a probe says the store is back

    asyncio.run(main())


def test_work_kept_for_later_is_replayed_in_order_once_a_probe_finds_the_store_back() -> None:
    async def main() -> None:
        s = Setup()
        done: list[str] = []

        def later(name: str) -> None:
            async def call() -> None:
                await s.store.get()  # reaches the store (an Outage while it is down)
                done.append(name)

            s.circuit.later(call)

        await s.go_down()
        later("settle a")
        later("release b")
        assert s.circuit.waiting == 2
        s.clock.advance(PROBE_S)
        assert await s.call() == "fallback"  # the probe fails: nothing replayed
        await asyncio.sleep(0)
        assert done == [] and s.circuit.waiting == 2
        s.store.up = True
        s.clock.advance(PROBE_S)
        assert await s.call() == "primary"  # the probe answers: the replay starts, in the background
        for _ in range(10):
            await asyncio.sleep(0)
        assert done == ["settle a", "release b"] and s.circuit.waiting == 0

    asyncio.run(main())


def test_a_replay_that_finds_the_store_away_again_keeps_the_rest_for_the_next_recovery() -> None:
    async def main() -> None:
        s = Setup()
        done: list[int] = []
        away_again = [True]

        def later(n: int) -> None:
            async def call() -> None:
                if n == 2 and away_again:
                    away_again.clear()
                    s.store.up = False  # the store goes away again mid-replay, once
                await s.store.get()
                done.append(n)

            s.circuit.later(call)

        await s.go_down()
        for n in (1, 2, 3):
            later(n)
        s.store.up = True
        s.clock.advance(PROBE_S)
        assert await s.call() == "primary"
        for _ in range(10):
            await asyncio.sleep(0)
        assert done == [1] and s.circuit.degraded and s.circuit.waiting == 2
        s.store.up = True
        s.clock.advance(PROBE_S)
        assert await s.call() == "primary"
        for _ in range(10):
            await asyncio.sleep(0)
        assert done == [1, 2, 3] and s.circuit.waiting == 0
        await s.circuit.aclose()

    asyncio.run(main())


def test_the_work_kept_for_later_is_bounded() -> None:
    async def main() -> None:
        s = Setup()
        s.circuit = Circuit("things", is_outage=lambda exc: isinstance(exc, Outage),
                            unavailable=lambda: ServiceUnavailableError("away", code="x"), max_later=3,
                            clock=s.clock)
        done: list[int] = []
        for n in range(5):
            async def call(n: int = n) -> None:
                done.append(n)

            s.circuit.later(call)
        assert s.circuit.waiting == 3
        await s.go_down()
        s.store.up = True
        s.clock.advance(1.0)
        assert await s.call() == "primary"
        for _ in range(10):
            await asyncio.sleep(0)
        assert done == [2, 3, 4]  # the oldest were dropped

    asyncio.run(main())


def test_circuits_on_one_store_share_an_outage_and_close_on_their_own_probes() -> None:
    async def main() -> None:
        limits, budgets = Setup(), Setup()
        budgets.store = limits.store  # one store, two circuits
        budgets.clock = limits.clock
        budgets.circuit = Circuit("budgets", is_outage=lambda exc: isinstance(exc, Outage),
                                  unavailable=lambda: ServiceUnavailableError("away", code="x"),
                                  probe_interval=PROBE_S * 2, on_degraded=budgets.degraded, clock=limits.clock)
        limits.circuit.share_outages_with(budgets.circuit)
        await limits.go_down()  # the limits found it away...
        assert budgets.circuit.degraded and budgets.degradations == 1  # ...and budgets go with them
        calls = limits.store.calls
        assert await budgets.call() == "fallback"
        assert limits.store.calls == calls  # the second engine did not wait on the store again
        limits.store.up = True
        limits.clock.advance(PROBE_S)
        assert await limits.call() == "primary"  # each closes on its own probe
        assert not limits.circuit.degraded and budgets.circuit.degraded
        limits.clock.advance(PROBE_S)
        assert await budgets.call() == "primary"
        assert not budgets.circuit.degraded

    asyncio.run(main())
