"""Faults mid-run, on servers of the test's own (the shared ones are never stopped): Redis killed
and PostgreSQL stopped and restarted while requests flow. No request hangs, no usage row is lost,
and no valid key gets a 401. Then SQLite held locked: writes wait, and nothing is lost."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, free_port, run_server

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


def _as_postgres(*cmd: str | Path) -> list[str]:
    args = [str(c) for c in cmd]
    return args if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port (initdb + pg_ctl), stoppable at will."""

    def __init__(self) -> None:
        if PG_BIN is None:
            pytest.fail("PostgreSQL's server binaries (Debian: postgresql) are needed for the fault tests")
        self.root = Path(tempfile.mkdtemp(prefix="switchyard-pg-"))  # pytest's own tmp is root-only
        self.root.chmod(0o777)
        self.dir = self.root / "pgdata"
        self.port = free_port()
        subprocess.run(_as_postgres(PG_BIN / "initdb", "-D", self.dir, "-A", "trust", "-U", "postgres"),
                       check=True, capture_output=True, timeout=120)
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run(_as_postgres(PG_BIN / "pg_ctl", "-D", self.dir, "-w", "-l", self.dir / "log",  # type: ignore[operator]
                                    "-o", f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1", "start"),
                       check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        subprocess.run(_as_postgres(PG_BIN / "pg_ctl", "-D", self.dir, "-w", "-m", "fast", "stop"),  # type: ignore[operator]
                       check=False, capture_output=True, timeout=60)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout != b"PONG\n":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None


class Traffic:
    """One client sending requests back to back, noting status and time of each."""

    def __init__(self, server: RunningServer, key: str) -> None:
        self.results: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server, key))

    def _run(self, server: RunningServer, key: str) -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status = http.post("/v1/chat/completions",
                                       json={"model": "m", "messages": HELLO, "max_tokens": 3}).status_code
                except httpx.HTTPError:
                    status = -1
                self.results.append((status, time.monotonic() - started))
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


async def _rows(url: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(sa.text("SELECT count(*) FROM usage_records WHERE key_id IS NOT NULL"))
                        ).scalar_one())
    finally:
        await engine.dispose()


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def test_redis_killed_and_postgresql_restarted_mid_run(tmp_path: Path, upstream: FakeOpenAI) -> None:
    pg, redis = PrivatePostgres(), PrivateRedis()
    pg.start()
    redis.start()
    try:
        # (Redis killed is refused at once; a longer wait than the 50 ms default keeps a loaded test
        # machine from sending the server to per-process limits after Redis is back)
        with run_server(tmp_path / "data", database_url=pg.url, redis_url=redis.url, secret_key="f" * 40,
                        limits_redis_timeout_ms=1000,
                        providers={"up": {"type": "openai", "base_url": upstream.base_url}},
                        models=[{"alias": "m", "provider": "up", "model": "gpt-4o-mini",
                                 "input_cost_per_1m": 1.0, "output_cost_per_1m": 1.0}]) as server:
            with server.http(server.admin_key) as admin:
                key = admin.post("/admin/keys", json={"name": "faulty", "limits": {"rpm": 100_000},
                                                      "budget": {"amount_usd": 100.0}}).json()["key"]
                with Traffic(server, key) as traffic:
                    time.sleep(0.5)
                    redis.kill()  # limits and budgets fall back to this process
                    time.sleep(1.5)
                    ready = admin.get("/ready").json()
                    assert ready["status"] == "degraded", ready
                    redis.start()
                    time.sleep(2.5)  # back on Redis (probed at most every couple of seconds)
                    assert admin.get("/ready").json()["status"] == "ready"
                    pg.stop()  # the database goes away: cached keys work, usage waits in memory
                    time.sleep(2.0)
                    assert admin.get("/ready").status_code == 503
                    pg.start()
                    time.sleep(1.0)
                served = Counter(status for status, _ in traffic.results)
                slowest = max(seconds for _, seconds in traffic.results)
                assert set(served) == {200}, served  # never a 401, never an error
                assert slowest < 3.0, slowest  # nothing hung
                deadline = time.monotonic() + 15
                while asyncio.run(_rows(pg.url)) < len(traffic.results):
                    assert time.monotonic() < deadline, "usage rows were lost"
                    time.sleep(0.2)
                assert asyncio.run(_rows(pg.url)) == len(traffic.results)
    finally:
        redis.kill()
        pg.remove()


def test_a_locked_sqlite_database_delays_usage_but_loses_none(tmp_path: Path, upstream: FakeOpenAI) -> None:
    with run_server(tmp_path, providers={"up": {"type": "openai", "base_url": upstream.base_url}},
                    models=[{"alias": "m", "provider": "up", "model": "gpt-4o-mini"}]) as server:
        db = tmp_path / "switchyard.db"
        with server.http(server.admin_key) as http:
            http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO})
            server.usage_rows(wait_for=1)
            blocker = sqlite3.connect(db, timeout=0, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database
            try:
                statuses = [http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO}).status_code
                            for _ in range(20)]
                time.sleep(1.5)  # the writer keeps trying meanwhile
            finally:
                blocker.execute("COMMIT")
                blocker.close()
        assert statuses == [200] * 20
        assert len(server.usage_rows(wait_for=21, timeout=15)) == 21
    shutil.rmtree(tmp_path, ignore_errors=True)
