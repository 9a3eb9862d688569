"""Soak: many requests through a real ``switchyard serve`` with limits and a budget on, checking
that the raw usage table stays a capped ring and that the hourly rollups add up exactly.

    .venv/bin/python bench/soak.py                      # 100,000 requests, ring of 10,000 rows
    .venv/bin/python bench/soak.py --requests 20000 --cap 2000 --out /tmp/soak.md
    .venv/bin/python bench/soak.py --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test \
        --redis redis://127.0.0.1:6379/7 --out bench/SOAK-postgres.md   # the stores replicas share

The fake upstream (``bench/fake_upstream.py``) reports 9 prompt tokens and ``max_tokens``
completion tokens for every request, so the expected totals are exact. A tenth of the requests
are streams (usage from the final chunk), the rest are not. A reader samples the raw table's row
count every 0.2 s while the load runs. By default the gateway keeps its data in SQLite; with
``--postgres URL`` the soak makes a fresh database on that server (dropped afterwards) and the
gateway stores keys and usage there, and with ``--redis URL`` its limits and budget holds live in
Redis. At the end the gateway is stopped
(which writes what is still queued), started again, and ``/admin/usage`` is read back.

Writes a Markdown report (default ``bench/SOAK.md``); exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import LoadConfig, run_load_sync
from run import (
    API_KEY,
    BENCH_DIR,
    MODEL,
    OUT_DIR,
    Service,
    free_port,
    governed_key,
    switchyard_binary,
    tree_rss_mb,
)

PROMPT_TOKENS = 9  # what bench/fake_upstream.py reports for every request
CHUNKS = 20
IN_PRICE, OUT_PRICE = 0.15, 0.60  # USD per 1M tokens


def _get(port: int, path: str) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


_COUNT = "SELECT COUNT(*) FROM usage_records"


async def _pg(url: str, statement: str, *, autocommit: bool = False) -> Any:
    """Run one statement on PostgreSQL (the URL as the gateway takes it); its scalar result."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT" if autocommit else None)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.text(statement))
            return result.scalar() if result.returns_rows else None
    finally:
        await engine.dispose()


class RingWatch(threading.Thread):
    """Samples ``SELECT COUNT(*) FROM usage_records`` until stopped: in the SQLite file ``db``
    (read-only), or in the PostgreSQL database ``pg_url``."""

    def __init__(self, db: Path, pg_url: str | None = None, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.db, self.pg_url, self.every = db, pg_url, every
        self.counts: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        if self.pg_url is not None:
            while not self.done.is_set():
                self.counts.append(rows(self.db, self.pg_url))
                self.done.wait(self.every)
            return
        while not self.db.exists() and not self.done.is_set():
            time.sleep(self.every)
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as conn:
            while not self.done.is_set():
                try:
                    self.counts.append(int(conn.execute(_COUNT).fetchone()[0]))
                except sqlite3.OperationalError:
                    pass  # busy: the next sample
                self.done.wait(self.every)


def rows(db: Path, pg_url: str | None) -> int:
    """The raw usage table's row count now."""
    if pg_url is not None:
        return int(asyncio.run(_pg(pg_url, _COUNT)))
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute(_COUNT).fetchone()[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--cap", type=int, default=10_000, help="usage_raw_max_rows")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--stream-share", type=float, default=0.1)
    ap.add_argument("--switchyard-bin", default=None)
    ap.add_argument("--out", default=str(BENCH_DIR / "SOAK.md"))
    ap.add_argument("--postgres", default=None, metavar="URL",
                    help="a PostgreSQL server (postgresql+asyncpg://…/db): the gateway's store, in a fresh database")
    ap.add_argument("--redis", default=None, metavar="URL", help="limits and budget holds in this Redis")
    args = ap.parse_args(argv)
    binary = switchyard_binary(args.switchyard_bin)
    if binary is None:
        print("no switchyard binary", file=sys.stderr)
        return 2
    n_stream = int(args.requests * args.stream_share)
    n_plain = args.requests - n_stream

    work = Path(tempfile.mkdtemp(prefix="switchyard-soak-"))
    up_port, gw_port = free_port(), free_port()
    upstream = Service("upstream", [sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--host", "127.0.0.1",
                                    "--port", str(up_port)], {}, up_port, "/health", OUT_DIR / "logs" / "soak-up.log")
    cfg = work / "switchyard.yaml"
    cfg.write_text(
        "providers:\n  fake:\n    type: openai\n"
        f"    base_url: http://127.0.0.1:{up_port}/v1\n"
        f"models:\n  - alias: {MODEL}\n    provider: fake\n    model: {MODEL}\n"
        f"    input_cost_per_1m: {IN_PRICE}\n    output_cost_per_1m: {OUT_PRICE}\n"
        "    rate_limits: {rpm: 1000000000, tpm: 1000000000000}\n"
        f"usage_raw_max_rows: {args.cap}\n"
    )
    data = work / "data"
    data.mkdir()
    pg_url: str | None = None
    store: list[str] = []
    if args.postgres:
        name = f"sy_soak_{uuid.uuid4().hex[:12]}"
        asyncio.run(_pg(args.postgres, f'CREATE DATABASE "{name}"', autocommit=True))
        pg_url = make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
        store = ["--database-url", pg_url]
    env = dict(os.environ)
    if args.redis:
        env["SWITCHYARD_REDIS_URL"] = args.redis
    gateway = Service("switchyard", [binary, "serve", "--host", "127.0.0.1", "--port", str(gw_port), "--config",
                                     str(cfg), "--data-dir", str(data), "--workers", "1", "--api-key", API_KEY,
                                     *store],
                      env, gw_port, "/health", OUT_DIR / "logs" / "soak-switchyard.log")
    watch = RingWatch(data / "switchyard.db", pg_url)
    failures: list[str] = []
    try:
        key = governed_key(binary, data, store)
        upstream.start(30)
        gateway.start(30)
        rss_start = tree_rss_mb(gateway.pid)
        watch.start()
        t0 = time.perf_counter()
        url = f"http://127.0.0.1:{gw_port}"
        plain = run_load_sync(LoadConfig(url=url, concurrency=args.concurrency, duration=None, requests=n_plain,
                                         api_key=key, chunks=CHUNKS))
        streamed = run_load_sync(LoadConfig(url=url, concurrency=args.concurrency, duration=None, requests=n_stream,
                                            stream=True, api_key=key, chunks=CHUNKS)) if n_stream else None
        elapsed = time.perf_counter() - t0
        rss_end = tree_rss_mb(gateway.pid)
        key_id = next(k["id"] for k in _get(gw_port, "/admin/keys")["data"] if k["name"] == "bench-governed")
        gateway.stop()  # drains: the queued usage rows are written before it exits
        watch.done.set()
        watch.join(10)
        rows_after = rows(data / "switchyard.db", pg_url)
        gateway.log = OUT_DIR / "logs" / "soak-switchyard-after.log"
        gateway.start(30)  # read back what the stopped gateway wrote
        totals = _get(gw_port, f"/admin/usage?key={key_id}")["totals"]
    finally:
        watch.done.set()
        gateway.stop()
        upstream.stop()
        if pg_url is not None:
            if watch.is_alive():
                watch.join(10)
            asyncio.run(_pg(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', autocommit=True))

    ok = plain.ok + (streamed.ok if streamed else 0)
    errors = plain.errors + (streamed.errors if streamed else 0)
    want = {"requests": args.requests, "prompt_tokens": PROMPT_TOKENS * args.requests,
            "completion_tokens": CHUNKS * args.requests, "errors": 0, "estimated": 0}
    got = {k: totals[k] for k in want}
    cost = args.requests * (PROMPT_TOKENS * IN_PRICE + CHUNKS * OUT_PRICE) / 1e6
    peak = max(watch.counts, default=0)
    bound = args.cap + args.cap // 10 + 1000  # the ring, the tenth before a prune is due, one batch
    if ok != args.requests or errors:
        failures.append(f"{ok} of {args.requests} requests answered 200 ({errors} errors)")
    if got != want:
        failures.append(f"rollups {got} != expected {want}")
    if abs(totals["cost_usd"] - cost) > 1e-9 * max(1.0, cost):
        failures.append(f"rollup cost {totals['cost_usd']} != expected {cost}")
    if peak > bound or rows_after > bound:
        failures.append(f"raw rows peaked at {peak} (final {rows_after}); bound {bound}")
    options = (f" --postgres {args.postgres}" if args.postgres else "") + (
        f" --redis {args.redis}" if args.redis else "")
    stores = ("PostgreSQL (a fresh database)" if args.postgres else "SQLite") + (
        ", limits and budget holds in Redis" if args.redis else ", limits and budget holds in process")
    lines = [
        "# Soak: usage ring and rollups under load",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `.venv/bin/python bench/soak.py --requests {args.requests} --cap {args.cap} "
        f"--concurrency {args.concurrency}{options}`",
        f"- Gateway: `switchyard serve`, 1 worker, {stores}, a key with rate limits and a total budget (every "
        f"request reserves and settles), model rate limits, prices {IN_PRICE}/{OUT_PRICE} USD per 1M tokens",
        f"- Load: {n_plain:,} non-stream + {n_stream:,} stream requests ({CHUNKS} chunks, usage in the last chunk), "
        f"c={args.concurrency}, in {elapsed:.1f} s ({args.requests / elapsed:,.0f} req/s)",
        "",
        "| Check | Expected | Measured | Result |",
        "|---|---:|---:|---|",
        f"| 200 responses | {args.requests:,} | {ok:,} | {'PASS' if ok == args.requests and not errors else 'FAIL'} |",
    ]
    for k in ("requests", "prompt_tokens", "completion_tokens", "errors", "estimated"):
        lines.append(f"| rollups: {k} | {want[k]:,} | {got[k]:,} | {'PASS' if got[k] == want[k] else 'FAIL'} |")
    lines += [
        f"| rollups: cost_usd | {cost:.6f} | {totals['cost_usd']:.6f} | "
        f"{'PASS' if abs(totals['cost_usd'] - cost) <= 1e-9 * max(1.0, cost) else 'FAIL'} |",
        f"| raw rows, peak while loaded (ring {args.cap:,}) | ≤ {bound:,} | {peak:,} | "
        f"{'PASS' if peak <= bound else 'FAIL'} |",
        f"| raw rows once the gateway stopped | ≤ {bound:,} | {rows_after:,} | "
        f"{'PASS' if rows_after <= bound else 'FAIL'} |",
        "",
        f"- Raw-row samples: {len(watch.counts)} (every 0.2 s). Gateway RSS {rss_start:.1f} MB after start, "
        f"{rss_end:.1f} MB after the load.",
        "",
        "Result: " + ("**PASS**" if not failures else "**FAIL**: " + "; ".join(failures)),
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
