"""What limits and budgets cost per request, in process, with no HTTP around them.

Runs ``Governance.admit`` then ``Governance.finish`` in a loop on the in-process engines, with
the checks ``bench/run.py --governance`` puts on every request: the key's rpm, tpm and
max-parallel limits and its total budget, and the model's rpm and tpm limits. Prints the best
microseconds per request of several rounds (the best, because this shared machine only ever
adds time), and how many objects the garbage collector tracks that the engines still hold per
request afterwards (window entries kept until they age out: every full collection walks them),
and the bytes they still hold per request (tracemalloc, in a separate pass).
Inside the server the same code costs more (its caches are cold between requests);
use this to compare two versions of the engines, run one after the other:

  .venv/bin/python bench/governance_cost.py
  PYTHONPATH=/path/to/other/checkout/src .venv/bin/python bench/governance_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc
from datetime import datetime

from switchyard.core.chat import ChatRequest, GenerationKind
from switchyard.core.keys import Principal
from switchyard.core.limits import Budget, RateLimits
from switchyard.core.usage import Usage
from switchyard.limits.budgets import MemoryLedger
from switchyard.limits.rates import MemoryLimiter
from switchyard.service.governance import Governance


async def _nothing_spent(scope: str, since: datetime | None) -> float:
    return 0.0


class _Bench:
    """The governed request of ``bench/run.py --governance``, admitted and finished in a loop."""

    def __init__(self) -> None:
        self.gov = Governance(MemoryLimiter(), MemoryLedger(_nothing_spent))
        self.key = Principal(key_id="key_bench", name="bench", is_admin=False,
                             limits=RateLimits(rpm=10**9, tpm=10**12, max_parallel=100_000),
                             budget=Budget(10**9, "total"))
        self.model = RateLimits(rpm=10**9, tpm=10**12)
        self.body = {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello."}],
                     "max_tokens": 16}
        self.chat = ChatRequest(kind=GenerationKind.CHAT, model="bench-model", body=self.body, stream=False,
                                include_usage=False, max_tokens=16, keep_alive=None)

    async def run(self, requests: int) -> None:
        gov, key, chat, body, model = self.gov, self.key, self.chat, self.body, self.model
        for _ in range(requests):
            ticket, _sent = await gov.admit(key, "bench-model", chat, body, lambda: 4, lambda: (0.15e-6, 0.6e-6), model)
            assert ticket is not None
            await gov.finish(ticket, Usage(4, 16), 0.15e-6 * 4 + 0.6e-6 * 16)


async def measure(requests: int, rounds: int) -> tuple[float, float, float]:
    """Best µs per request; GC-tracked objects and bytes the engines still hold per request."""
    bench = _Bench()
    best = float("inf")
    gc.collect()
    tracked = len(gc.get_objects())
    for _ in range(rounds):
        started = time.perf_counter()
        await bench.run(requests)
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
    gc.collect()
    left = (len(gc.get_objects()) - tracked) / (requests * rounds)
    await bench.gov.aclose()

    bench = _Bench()  # bytes, apart: tracing allocations slows the loop
    await bench.run(100)  # first-use allocations (counters, caches) are not per request
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    await bench.run(requests)
    gc.collect()
    held = (tracemalloc.get_traced_memory()[0] - before) / requests
    tracemalloc.stop()
    await bench.gov.aclose()
    return best, left, held


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    best, left, held = asyncio.run(measure(args.requests, args.rounds))
    print(f"admit + finish: {best:.1f} µs per request (best of {args.rounds} rounds of {args.requests})")
    # what the windows keep until they age out: objects every full garbage collection walks
    print(f"objects the garbage collector tracks, still held per request: {left:.2f}")
    print(f"bytes still held per request: {held:.0f} (two request windows and two token windows)")


if __name__ == "__main__":
    main()
