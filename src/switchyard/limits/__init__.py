"""Rate-limit and budget engines: the implementations of ``core.limits.Limiter`` and
``core.limits.BudgetLedger``, in process memory, in the supervisor of several workers, or in
Redis (shared by every replica).

    rates.py          rolling-window rate limits; ``MemoryLimiter``
    rates_redis.py    ``RedisLimiter``: the same windows, one Lua script per admit
    budgets.py        periods and micro-dollars; ``MemoryLedger``
    budgets_redis.py  ``RedisLedger``: the same ledger, one Lua script per reserve
    host.py           ``LimitsHost``: the memory engines of every worker of ``serve --workers N``
                      (without Redis), in the supervising process, on a Unix socket
    host_client.py    ``HostLimiter`` and ``HostLedger``: a worker's side of it
    circuit.py        ``Circuit``: the one fallback circuit (primary, else fallback or 503)
    fallback.py       ``FallbackLimiter`` and ``FallbackLedger``: a Redis engine behind a circuit
    redis_client.py   ``open_redis``: the one client the engines share

The composition root (``app.py``) chooses the engines; the pipeline sees only the Protocols.
The Redis modules import ``redis``: import them only when Redis is configured.
"""
