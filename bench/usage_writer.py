"""What writing usage rows costs: ``SqlUsageStore.write`` on batches of made-up rows.

Prints the process CPU time (both threads: aiosqlite's and the event loop's) per row written.
For a figure that does not depend on the machine's speed, run it under cachegrind with two batch
counts and divide the difference by the difference in rows:

  for B in 5 25; do PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no \\
      --cachegrind-out-file=/tmp/writer.$B .venv/bin/python bench/usage_writer.py --batches $B; done
  # per row = (Ir of 25 - Ir of 5) / 2000; about 63,700 of it is making the rows, as the harness does

``--url postgresql+asyncpg://postgres@127.0.0.1:5432/test`` runs it on PostgreSQL (it creates the
tables there if they are missing); the default is a fresh SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from switchyard.core.usage import UsageRecord
from switchyard.store import upgrade
from switchyard.store.database import Database
from switchyard.store.usage import SqlUsageStore

_FIELDS = {f.name for f in dataclasses.fields(UsageRecord)}  # older trees have fewer


def _record(i: int) -> UsageRecord:
    values = dict(created_at=datetime.now(UTC), request_id=f"req_{i:032x}", key_id="key_bench", model="bench-model",
                  provider="fake", endpoint="chat", prompt_tokens=12, completion_tokens=9, latency_ms=0.4,
                  status=200, streamed=False, estimated=False, cost_usd=0.0, cache_read_tokens=0,
                  cache_write_tokens=0, session_id=None, team_id=None)
    return UsageRecord(**{k: v for k, v in values.items() if k in _FIELDS})


async def run(url: str, batches: int, size: int) -> None:
    await upgrade(url)
    async with Database.create(url) as db:
        store = SqlUsageStore(db.engine)
        await store.write([_record(i) for i in range(size)])  # compiles the statements, warms the caches
        rows = [[_record((b + 1) * size + i) for i in range(size)] for b in range(batches)]
        started = time.process_time()
        for batch in rows:
            await store.write(batch)
        per_row = (time.process_time() - started) / (batches * size) * 1e6
    print(f"{url.split(':', 1)[0]}: {batches} batches of {size} rows: {per_row:.1f} us CPU per row")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="database URL (default: a new SQLite file)")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--size", type=int, default=100, help="rows per batch")
    args = ap.parse_args()
    url = args.url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'usage.db'}"
    asyncio.run(run(url, args.batches, args.size))


if __name__ == "__main__":
    main()
