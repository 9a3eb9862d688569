"""The fallback circuit: a shared store (Redis) while it answers, this process while it does not.

``Circuit.call(primary, fallback)`` runs ``primary`` while the store is in use. A call that finds
the store unreachable (an exception ``is_outage`` accepts, or no answer within ``timeout``
seconds) marks the circuit ``degraded``; from then on calls run ``fallback`` (or raise the 503
``unavailable()`` when ``fail_closed``) without waiting on the store, and one call at a time,
at most every ``probe_interval`` seconds, probes the store instead. Any answer to a probe, a
refusal included (a 429 is an answer), closes the circuit again. Time is read from the
injected ``clock`` (monotonic seconds).

    closed (primary) --outage--> degraded (fallback or 503) --probe answers--> closed
                                     ^                  |                      (replays what waits)
                                     +--probe fails-----+

"No answer" covers a store that is down and one that hangs (accepts connections, never
answers): either costs a call at most ``timeout`` seconds (or the engine's own, shorter,
timeout), after which calls do not wait on the store until a probe finds it back. Circuits on
one store share what they find (``share_outages_with``): a request pays the wait once.

Work that ends a request and that the store could not take (a settle, a release: the request is
over, the fallback has counted it) is handed to ``later``: kept, up to ``max_later`` calls (the
oldest dropped, with a warning), and replayed in order, in the background, once a probe finds the
store back. A replay must be safe to run when the first try did reach the store after all
(the engines' late settles are idempotent). A replay the store cannot take waits for the next
recovery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from switchyard.errors import ServiceUnavailableError

__all__ = ["Circuit"]

log = logging.getLogger("switchyard.limits")

_T = TypeVar("_T")


class Circuit:
    """One shared store and its per-process fallback; ``what`` names them in the log
    ("rate limits", "budgets")."""

    def __init__(
        self, what: str, *, is_outage: Callable[[BaseException], bool],
        unavailable: Callable[[], ServiceUnavailableError], fail_closed: bool = False,
        probe_interval: float = 1.0, timeout: float | None = None,
        on_degraded: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic,
        max_later: int = 10_000,
    ) -> None:
        self._what = what
        self._is_outage = is_outage
        self._unavailable = unavailable
        self._fail_closed = fail_closed
        self._probe_interval = probe_interval
        self._timeout = timeout
        self._on_degraded = on_degraded
        self._clock = clock
        self._degraded = False
        self._next_probe = 0.0
        self._probing = False
        self._later: list[Callable[[], Awaitable[object]]] = []
        self._max_later = max_later
        self._replaying: asyncio.Task[None] | None = None
        self._peers: list[Circuit] = []

    @property
    def degraded(self) -> bool:
        """Whether the fallback is in use (for /ready)."""
        return self._degraded

    async def call(
        self, primary: Callable[[], Awaitable[_T]], fallback: Callable[[], Awaitable[_T]], *, may_refuse: bool = True,
    ) -> _T:
        """``primary()``'s answer while the store answers; else ``fallback()``'s, or the 503 when
        ``fail_closed`` and ``may_refuse`` (a call that ends a request, such as a settle, never
        refuses: its fallback makes do)."""
        if self._degraded:
            if self._probing or self._clock() < self._next_probe:
                return await self._local(fallback, may_refuse)
            self._probing = True
        probing = self._degraded
        try:
            if self._timeout is None:
                result = await primary()
            else:
                async with asyncio.timeout(self._timeout):
                    result = await primary()
        except Exception as exc:
            if not (isinstance(exc, TimeoutError) or self._is_outage(exc)):
                self._answered(probing)  # the store answered, with a refusal
                raise
            self._failed(exc)
        else:
            self._answered(probing)
            return result
        finally:
            if probing:
                self._probing = False
        return await self._local(fallback, may_refuse)

    @property
    def waiting(self) -> int:
        """Calls kept for the store's return (``later``)."""
        return len(self._later)

    def later(self, call: Callable[[], Awaitable[object]]) -> None:
        """Make ``call`` on the store once it answers again (see the module docstring)."""
        self._later.append(call)
        if len(self._later) > self._max_later:
            del self._later[0]
            log.warning("%s: more than %d calls wait for the store; dropped the oldest", self._what,
                        self._max_later)

    async def _replay(self) -> None:
        while self._later and not self._degraded:
            call = self._later.pop(0)
            try:
                if self._timeout is None:
                    await call()
                else:
                    async with asyncio.timeout(self._timeout):
                        await call()
            except Exception as exc:
                if not (isinstance(exc, TimeoutError) or self._is_outage(exc)):
                    log.warning("%s: a late call failed (%s); dropped", self._what, type(exc).__name__)
                    continue
                self._later.insert(0, call)  # away again: the next recovery replays it
                self._failed(exc)
                return

    async def aclose(self) -> None:
        """Stop a replay in progress (what it has not replayed is dropped: the store's holds expire)."""
        if self._replaying is not None:
            self._replaying.cancel()
            await asyncio.gather(self._replaying, return_exceptions=True)
            self._replaying = None

    async def _local(self, fallback: Callable[[], Awaitable[_T]], may_refuse: bool) -> _T:
        if self._fail_closed and may_refuse:
            raise self._unavailable()
        return await fallback()

    def share_outages_with(self, other: Circuit) -> None:
        """Two circuits on one store (rate limits and budgets on one Redis): an outage one finds
        sends both to their fallbacks, so a request waits for the store once, not once per
        circuit. Each closes again on its own probe."""
        self._peers.append(other)
        other._peers.append(self)

    def _failed(self, exc: BaseException, *, told: bool = False) -> None:
        if not self._degraded:
            log.warning("%s: the store is unreachable (%s); %s", self._what, type(exc.__cause__ or exc).__name__,
                        "refusing requests" if self._fail_closed else f"using per-process {self._what}")
            self._degraded = True
            if self._on_degraded is not None:
                self._on_degraded()
        self._next_probe = self._clock() + self._probe_interval
        if not told:
            for peer in self._peers:
                peer._failed(exc, told=True)

    def _answered(self, probing: bool) -> None:
        if probing and self._degraded:  # (only a probe closes it: a call begun before the outage proves nothing)
            log.warning("%s: the store is back", self._what)
            self._degraded = False
            if self._later and (self._replaying is None or self._replaying.done()):
                self._replaying = asyncio.get_running_loop().create_task(self._replay())
