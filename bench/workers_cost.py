"""What the limits host costs a request, against the in-process engines (``serve --workers N``
without Redis: the supervisor owns the counters, each worker asks it over a Unix socket).

Runs ``Governance.admit`` then ``Governance.finish`` with the governed request of
``bench/governance_cost.py`` (the key's rpm, tpm and max-parallel limits and its total budget,
the model's rpm and tpm limits), on two stacks as ``app.py`` builds them:

    memory  MemoryLimiter and MemoryLedger (one worker)
    host    HostLimiter and HostLedger behind the fallback circuit, the host in a process of
            its own (as in the supervisor), over a Unix socket

On uvloop, as the server runs. For each: the wall time per request at one request at a time
(the latency it adds), the CPU time per request in this process (what a worker's event loop
spends), the host's CPU time per request, and the requests per second with 32 in flight.
Best of several rounds (this shared machine only ever adds time); ratios are taken within one
run.

  .venv/bin/python bench/workers_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import uvloop

from switchyard.core.chat import ChatRequest, GenerationKind
from switchyard.core.keys import Principal
from switchyard.core.limits import Budget, BudgetLedger, Limiter, RateLimits
from switchyard.core.usage import Usage
from switchyard.limits.budgets import MemoryLedger
from switchyard.limits.fallback import FallbackLedger, FallbackLimiter
from switchyard.limits.host_client import HostLedger, HostLimiter, HostLink
from switchyard.limits.rates import MemoryLimiter
from switchyard.service.governance import Governance

_HOST = """
import signal, sys, threading
from pathlib import Path
from switchyard.limits.host import serving
with serving(Path(sys.argv[1])):
    print("ready", flush=True)
    sys.stdin.read()
"""


async def _nothing_spent(scope: str, since: datetime | None) -> float:
    return 0.0


KEY = Principal(key_id="key_bench", name="bench", is_admin=False,
                limits=RateLimits(rpm=10**9, tpm=10**12, max_parallel=100_000), budget=Budget(10**9, "total"))
MODEL = RateLimits(rpm=10**9, tpm=10**12)
BODY = {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
CHAT = ChatRequest(kind=GenerationKind.CHAT, model="bench-model", body=BODY, stream=False, include_usage=False,
                   max_tokens=16, keep_alive=None)


async def _requests(gov: Governance, n: int) -> None:
    for _ in range(n):
        ticket, _sent = await gov.admit(KEY, "bench-model", CHAT, BODY, lambda: 4, lambda: (0.15e-6, 0.6e-6), MODEL)
        assert ticket is not None
        await gov.finish(ticket, Usage(4, 16), 0.15e-6 * 4 + 0.6e-6 * 16)


def _cpu_of(pid: int) -> float:
    """A process's CPU seconds so far (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(engines: tuple[Limiter, BudgetLedger], requests: int, rounds: int,
                   host_pid: int | None) -> dict[str, float]:
    gov = Governance(*engines)
    await _requests(gov, 200)  # connected, counters made
    best_wall = best_cpu = best_host = float("inf")
    for _ in range(rounds):
        host_before = _cpu_of(host_pid) if host_pid else 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        await _requests(gov, requests)
        best_wall = min(best_wall, (time.perf_counter() - wall) / requests * 1e6)
        best_cpu = min(best_cpu, (time.process_time() - cpu) / requests * 1e6)
        if host_pid:
            best_host = min(best_host, (_cpu_of(host_pid) - host_before) / requests * 1e6)
    best_rate = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        await asyncio.gather(*(_requests(gov, requests // 32) for _ in range(32)))
        best_rate = max(best_rate, (requests // 32 * 32) / (time.perf_counter() - started))
    await gov.aclose()
    return {"wall_us": best_wall, "cpu_us": best_cpu, "host_cpu_us": best_host if host_pid else 0.0,
            "per_s": best_rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=5_000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    memory = uvloop.run(_measure((MemoryLimiter(), MemoryLedger(_nothing_spent)), args.requests, args.rounds, None))
    with tempfile.TemporaryDirectory(prefix="sy-bench-") as tmp:
        sock = Path(tmp) / "limits.sock"
        host = subprocess.Popen([sys.executable, "-c", _HOST, str(sock)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert host.stdout is not None and host.stdout.readline() == "ready\n"

            async def on_host() -> dict[str, float]:
                link = HostLink(sock)
                engines = (FallbackLimiter(HostLimiter(link), MemoryLimiter()),
                           FallbackLedger(HostLedger(link, _nothing_spent), MemoryLedger(_nothing_spent)))
                return await _measure(engines, args.requests, args.rounds, host.pid)

            shared = uvloop.run(on_host())
        finally:
            host.communicate("")
    print(f"{'engines':<8} {'wall µs/req c=1':>16} {'worker CPU µs/req':>18} {'host CPU µs/req':>16} "
          f"{'req/s at c=32':>14}")
    for name, m in (("memory", memory), ("host", shared)):
        print(f"{name:<8} {m['wall_us']:>16.1f} {m['cpu_us']:>18.1f} {m['host_cpu_us']:>16.1f} {m['per_s']:>14.0f}")
    print(f"host/memory: wall x{shared['wall_us'] / memory['wall_us']:.1f}, worker CPU "
          f"x{shared['cpu_us'] / memory['cpu_us']:.1f}; +{shared['wall_us'] - memory['wall_us']:.0f} µs a request")


if __name__ == "__main__":
    main()
