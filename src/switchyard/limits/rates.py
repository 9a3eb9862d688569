"""Rate limit engines: rolling-window counters, kept in process memory or in Redis.

Every request window is a rolling log: at most ``limit`` requests in ANY ``window`` seconds,
so a limit is a hard ceiling with no burst at a minute's boundary (a token bucket or GCRA
lets refill leak extra requests into a window). A refused request waits until the oldest
counted request leaves the window; that is its ``Retry-After`` and ``x-ratelimit-reset-requests``.

Tokens per minute are a rolling log of (time, tokens). ``admit`` needs ``used + tokens <= limit``
for the prompt estimate it is given, and holds that estimate in the window while the request
runs (so concurrent requests cannot all spend the same room); ``settle`` replaces the hold by
the real total (prompt + completion) at the time the request ends. A single request can thus
overshoot the remaining TPM by its completion: TPM paces traffic, the budget engine
(``limits/budgets.py``) is the hard money ceiling.

Parallel limits hold one lease per admitted request until ``settle``; a lease that is never
settled (a crashed replica) expires after ``lease_ttl`` seconds.

``admit`` is all or nothing over every check: a refusal by any one counts nothing anywhere.

    MemoryLimiter    one process (an injected clock; idle scopes dropped)
    RedisLimiter     every replica: one Lua script per admit, Redis TIME as the clock
                     (``limits/rates_redis.py``)
    FallbackLimiter  Redis, and per-process limits (or 503) while Redis cannot be reached
                     (``limits/fallback.py``)
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from switchyard.core.limits import Admission, LimitCheck, LimitState, ratelimit_headers
from switchyard.errors import RateLimitError, ServiceUnavailableError

__all__ = ["PARALLEL_RETRY_S", "MemoryLimiter", "Verdict", "decide", "unavailable", "unique"]

PARALLEL_RETRY_S = 1.0  # a parallel slot frees when some request ends: no better guess
_SWEEP_S = 60.0  # the memory engine drops idle scopes at most this often


# -- deciding, the same for every engine -------------------------------------------------------
@dataclass(slots=True)  # not frozen: one is made per check per request, and frozen __init__ is slow
class Verdict:
    """One check as it stands before the request: ``remaining`` and ``reset_s`` of the counter
    now, and ``retry_s``: 0 when the request fits, the wait when it does not, None: never fits."""

    check: LimitCheck
    remaining: int
    reset_s: float
    retry_s: float | None = 0.0

    @property
    def fits(self) -> bool:
        return self.retry_s == 0.0

    def now(self) -> LimitState:
        return LimitState(self.check.limit, max(0, self.remaining), max(0.0, self.reset_s))

    def after(self, tokens: int) -> LimitState:
        """The counter once this request is counted in it."""
        c = self.check
        if c.kind == "tokens":
            return LimitState(c.limit, max(0, self.remaining - tokens), c.window if tokens > 0 else self.reset_s)
        return LimitState(c.limit, max(0, self.remaining - 1), self.reset_s if self.reset_s > 0 else c.window)


def unique(checks: Sequence[LimitCheck]) -> list[LimitCheck]:
    return list(dict.fromkeys(checks))


def decide(lease: str, checks: Sequence[LimitCheck], verdicts: Sequence[Verdict], tokens: int) -> Admission:
    """The admission when every verdict fits (the caller then counts it), else the 429."""
    if all(v.fits for v in verdicts):
        return Admission(lease, tuple(checks), requests=_tightest(verdicts, "requests", tokens),
                         tokens=_tightest(verdicts, "tokens", tokens))
    raise _refusal(verdicts, tokens)


def _tightest(verdicts: Sequence[Verdict], kind: str, tokens: int | None) -> LimitState | None:
    """The counter of ``kind`` with the least left (after this request when ``tokens`` is given)."""
    states = [v.now() if tokens is None else v.after(tokens) for v in verdicts if v.check.kind == kind]
    return min(states, key=lambda s: (s.remaining, -s.reset_s), default=None)


def _wait(v: Verdict) -> float:
    return math.inf if v.retry_s is None else v.retry_s


def _refusal(verdicts: Sequence[Verdict], tokens: int) -> RateLimitError:
    failing = [v for v in verdicts if not v.fits]
    binding = max(failing, key=_wait)
    states: dict[str, LimitState | None] = {}
    for kind in ("requests", "tokens"):
        refused = [v for v in failing if v.check.kind == kind]
        if refused:
            worst = max(refused, key=_wait)
            states[kind] = LimitState(worst.check.limit, max(0, worst.remaining),
                                      worst.retry_s if worst.retry_s is not None else max(0.0, worst.reset_s))
        else:
            states[kind] = _tightest(verdicts, kind, None)
    c = binding.check
    who = _who(c.scope)
    if binding.retry_s is None:
        if c.kind == "tokens":
            message = (f"Request too large for {who}: it needs {tokens} tokens, "
                       f"the limit is {_what(c)}.")
        else:
            message = f"Rate limit for {who} admits no requests: {_what(c)}."
        err = RateLimitError(message)
        err.headers["x-should-retry"] = "false"
    else:
        wait = max(1, math.ceil(round(binding.retry_s, 6)))
        err = RateLimitError(f"Rate limit reached for {who}: {_what(c)}. Try again in {wait}s.",
                             retry_after=float(wait))
    err.headers.update(ratelimit_headers(states["requests"], states["tokens"]))
    return err


def _who(scope: str) -> str:
    """``key:abc|model:gpt-4o`` → ``key abc on model gpt-4o``."""
    parts = []
    for part in scope.split("|"):
        kind, sep, ident = part.partition(":")
        parts.append(f"{kind} {ident}" if sep else part)
    return " on ".join(parts)


def _what(check: LimitCheck) -> str:
    if check.kind == "parallel":
        return f"{check.limit} parallel requests"
    per = {60.0: "minute", 3600.0: "hour", 86400.0: "day"}.get(check.window, f"{check.window:g} seconds")
    return f"{check.limit} {check.kind} per {per}"


def unavailable(retry_after: float = 1.0) -> ServiceUnavailableError:
    return ServiceUnavailableError("Rate limits cannot be checked right now: the limits store is unreachable.",
                                   code="limits_unavailable", retry_after=retry_after)


# -- in process memory ------------------------------------------------------------------------
class _TokenLog:
    """A rolling log of (time, tokens), oldest first, as two deques of plain numbers.

    A window at full use holds an entry per request for a whole window (a hold, then its settled
    total): kept as floats and ints, no entry is an object the garbage collector has to walk,
    so a busy limit does not make every full collection slower. An entry is addressed by its
    sequence number (``first`` is the number of the oldest one still in the window).
    """

    __slots__ = ("amounts", "first", "times", "used")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.amounts: deque[int] = deque()  # 0 once a hold was given back
        self.first = 0
        self.used = 0

    def add(self, at: float, tokens: int) -> int:
        """Count ``tokens`` at ``at``; returns the entry's sequence number."""
        self.times.append(at)
        self.amounts.append(tokens)
        self.used += tokens
        return self.first + len(self.times) - 1

    def give_back(self, seq: int) -> None:
        """Uncount entry ``seq`` (a settled hold), unless it has left the window already."""
        i = seq - self.first
        if i >= 0:
            self.used -= self.amounts[i]
            self.amounts[i] = 0

    def trim(self, edge: float) -> None:
        """Drop the entries at or before ``edge``."""
        times, amounts = self.times, self.amounts
        while times and times[0] <= edge:
            times.popleft()
            self.used -= amounts.popleft()
            self.first += 1

    def newest(self) -> float | None:
        """The time of the newest entry that still counts tokens."""
        return next((at for at, n in zip(reversed(self.times), reversed(self.amounts), strict=True) if n), None)


@dataclass(slots=True)
class _Held:
    """What an admitted request holds until settled: token holds and parallel slots."""

    expires: float
    # (counter key, the hold: its log and sequence number, or None when it held no tokens)
    tokens: list[tuple[tuple[str, float], tuple[_TokenLog, int] | None]] = field(default_factory=list)
    parallel: list[tuple[str, str]] = field(default_factory=list)  # (scope, member)


class MemoryLimiter:
    """The limits of one process. Single event loop: ``admit`` never awaits, so it is atomic."""

    def __init__(self, clock: Callable[[], float] = time.time, lease_ttl: float = 600.0) -> None:
        self._clock = clock
        self._lease_ttl = lease_ttl
        # (defaultdicts: a counter is made on first count, never for a look; the sweep drops empty ones)
        self._requests: defaultdict[tuple[str, float], deque[float]] = defaultdict(deque)
        self._tokens: defaultdict[tuple[str, float], _TokenLog] = defaultdict(_TokenLog)
        self._parallel: defaultdict[str, dict[str, float]] = defaultdict(dict)  # scope -> member -> expiry
        self._held: dict[str, _Held] = {}
        self._swept = clock()

    async def admit(self, checks: Sequence[LimitCheck], lease: str, tokens: int) -> Admission:
        now = self._clock()
        tokens = max(0, tokens)
        if now - self._swept >= _SWEEP_S:
            self._sweep(now)
        todo = unique(checks)
        admission = decide(lease, checks, [self._look(c, now, tokens) for c in todo], tokens)
        held = _Held(now + self._lease_ttl)
        for i, c in enumerate(todo):
            key = (c.scope, c.window)
            if c.kind == "requests":
                self._requests[key].append(now)
            elif c.kind == "tokens":
                hold = None
                if tokens:  # (a counter is made on first count, never for a look)
                    tlog = self._tokens[key]
                    hold = (tlog, tlog.add(now, tokens))
                held.tokens.append((key, hold))
            else:
                member = f"{lease}:{i}"
                self._parallel[c.scope][member] = now + self._lease_ttl
                held.parallel.append((c.scope, member))
        if held.tokens or held.parallel:
            self._held[lease] = held
        return admission

    async def settle(self, admission: Admission, tokens: int) -> None:
        admission.settled = True
        held = self._held.pop(admission.lease, None)
        if held is None:
            return
        now = self._clock()
        for key, hold in held.tokens:
            if hold is not None:
                tlog, seq = hold
                tlog.give_back(seq)  # (a log dropped by the sweep meanwhile is empty: nothing to give back)
            if tokens > 0:
                self._tokens[key].add(now, tokens)
        for scope, member in held.parallel:
            slots = self._parallel.get(scope)
            if slots is not None:
                slots.pop(member, None)
                if not slots:
                    del self._parallel[scope]

    def holds(self, lease: str) -> bool:
        """Whether ``lease`` was admitted here and holds something to settle."""
        return lease in self._held

    async def aclose(self) -> None:
        return None

    def _look(self, c: LimitCheck, now: float, tokens: int) -> Verdict:
        if c.kind == "requests":
            log_ = self._requests.get((c.scope, c.window))
            if log_ is not None:
                self._trim_requests(log_, now - c.window)
            count = len(log_) if log_ else 0
            reset = log_[0] + c.window - now if log_ else 0.0
            if c.limit <= 0:
                return Verdict(c, 0, reset, None)
            if count >= c.limit:
                assert log_ is not None
                return Verdict(c, 0, reset, log_[count - c.limit] + c.window - now)
            return Verdict(c, c.limit - count, reset)
        if c.kind == "tokens":
            tlog = self._tokens.get((c.scope, c.window))
            if tlog is not None:
                tlog.trim(now - c.window)
            used = tlog.used if tlog is not None else 0
            newest = tlog.newest() if tlog is not None else None
            reset = newest + c.window - now if newest is not None else 0.0
            if tokens > c.limit:
                return Verdict(c, c.limit - used, reset, None)
            if used + tokens > c.limit:
                assert tlog is not None
                left = used
                for at, n in zip(tlog.times, tlog.amounts, strict=True):
                    left -= n
                    if left + tokens <= c.limit:
                        return Verdict(c, c.limit - used, reset, at + c.window - now)
                return Verdict(c, c.limit - used, reset, c.window)  # not reached: the log sums to used
            return Verdict(c, c.limit - used, reset)
        slots = self._parallel.get(c.scope)
        if slots:
            for member in [m for m, expiry in slots.items() if expiry <= now]:
                del slots[member]
        count = len(slots) if slots else 0
        if c.limit <= 0:
            return Verdict(c, 0, 0.0, None)
        return Verdict(c, c.limit - count, 0.0, PARALLEL_RETRY_S if count >= c.limit else 0.0)

    @staticmethod
    def _trim_requests(log_: deque[float], edge: float) -> None:
        while log_ and log_[0] <= edge:
            log_.popleft()

    def _sweep(self, now: float) -> None:
        """Drop what left every window, and scopes left empty: memory stays bounded."""
        self._swept = now
        for key, log_ in list(self._requests.items()):
            self._trim_requests(log_, now - key[1])
            if not log_:
                del self._requests[key]
        for key, tlog in list(self._tokens.items()):
            tlog.trim(now - key[1])
            if not tlog.times:
                del self._tokens[key]
        for scope, slots in list(self._parallel.items()):
            for member in [m for m, expiry in slots.items() if expiry <= now]:
                del slots[member]
            if not slots:
                del self._parallel[scope]
        for lease in [lease for lease, held in self._held.items() if held.expires <= now]:
            del self._held[lease]
