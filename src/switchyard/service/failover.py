"""Which deployments one request may try, in which order, and when to try the next one.

Retries happen only before the first byte reaches the client (the gateway makes sure of that);
this module decides the order and whether an error is worth another deployment.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence

from switchyard.core.keys import Principal
from switchyard.core.models import Route, Target
from switchyard.errors import GatewayError, ModelNotFoundError

__all__ = ["RETRYABLE", "Plan", "order"]

RETRYABLE = frozenset({429, 502, 503, 504})  # rate limited, unreachable/failing, overloaded, too slow


def order(route: Route, busy: Mapping[str, int], rng: random.Random) -> list[Target]:
    """The route's deployments in the order to try them: weighted random without replacement
    (Efraimidis-Spirakis keys), fewest in flight first (ties broken at random), or as listed."""
    deployments = list(route.deployments)
    if len(deployments) < 2 or route.strategy == "ordered":
        return deployments
    if route.strategy == "least_busy":
        ties = [rng.random() for _ in deployments]
        ranked = sorted(zip(deployments, ties, strict=True), key=lambda dt: (busy.get(dt[0].breaker, 0), dt[1]))
        return [t for t, _ in ranked]
    keyed = [(rng.random() ** (1.0 / w), t) for w, t in zip(route.weights, deployments, strict=True)]
    return [t for _, t in sorted(keyed, key=lambda kt: kt[0], reverse=True)]


class Plan:
    """The deployments one request may try: the route's own (in its strategy's order), then each
    fallback alias's (not their fallbacks in turn). A prompt too long for the model switches to
    the route's context-window fallbacks instead. Aliases the key may not use are skipped. With
    ``pinned``, only deployments of that configured provider are tried."""

    def __init__(
        self,
        route: Route,
        principal: Principal,
        resolve: Callable[[str], Route],
        arrange: Callable[[Route], list[Target]],
        pinned: str | None = None,
    ) -> None:
        self.first = route
        self._pinned = pinned
        self._principal = principal
        self._resolve = resolve
        self._arrange = arrange
        self._routes: deque[Route] = deque([route])
        self._pending: deque[tuple[Route, Target]] = deque()
        self._seen = {route.alias}
        self._fallbacks_added = False

    def _add(self, aliases: Sequence[str]) -> None:
        for alias in aliases:
            if alias in self._seen or not self._principal.may_use(alias):
                continue
            self._seen.add(alias)
            try:
                self._routes.append(self._resolve(alias))
            except ModelNotFoundError:
                continue

    def __iter__(self) -> Iterator[tuple[Route, Target]]:
        return self

    def __next__(self) -> tuple[Route, Target]:
        # an iterator, not a generator: a request served by its first deployment leaves it
        # unfinished, and a generator would then be closed (an exception) on every request
        while not self._pending:
            if not self._routes and not self._fallbacks_added:
                self._fallbacks_added = True
                self._add(self.first.fallbacks)
            if not self._routes:
                raise StopIteration
            route = self._routes.popleft()
            targets = self._arrange(route)
            if self._pinned is not None:
                targets = [t for t in targets if t.provider == self._pinned]
            self._pending.extend((route, t) for t in targets)
        return self._pending.popleft()

    def failed(self, route: Route, exc: GatewayError) -> bool:
        """Whether to go on to the next deployment after ``exc`` (on ``route``)."""
        if exc.code == "context_length_exceeded" and route.context_fallbacks:
            self._pending.clear()
            self._routes.clear()
            self._fallbacks_added = True
            self._add(route.context_fallbacks)
            return bool(self._routes)
        return exc.status_code in RETRYABLE
