"""The chaos soak: a real ``switchyard serve`` in front of a misbehaving upstream, mixed traffic, then checks.

Shared by ``bench/chaos.py`` (minutes, the figures in bench/RESULTS.md) and
``tests/e2e/test_chaos.py`` (seconds, in the suite). :func:`run_chaos` starts
:class:`~tests.fakes.chaotic_upstream.ChaoticOpenAI` on loopback with two credentials (one in the
config, one in the encrypted vault), ``python -m switchyard serve`` (SQLite, or a fresh
PostgreSQL database) with a master key, a server secret and a static admin key, makes several
client keys, and runs ``concurrency`` clients (:mod:`tests.e2e.chaos_traffic`) for a warm-up and
then for ``duration`` seconds. Then it stops the gateway (which writes what is queued) and checks:

- **rows**: one usage row per request sent, by request id (none missing, none twice, none
  unknown); a completed answer's row has its status, and a client that left while the gateway
  waited, or mid-stream, has a 499 row. No request fails authentication, so every one reaches
  accounting;
- **secrets**: no upstream credential, client key, admin key, master key or server secret in any
  byte a client received (traffic, ``/admin/status``, ``/metrics``) or in the server's log;
- **failures**: every answer is a success, a 4xx/5xx in OpenAI's error shape (never a 500 of the
  gateway's own), or a stream that ends in an in-band error event; none takes longer than the
  client timeout, and the gateway never drops a connection;
- **rss**: the gateway's resident memory (VmRSS of its process tree, at rest after the warm-up
  and at the end) grew less than 10 %.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.chaos_traffic import Client, Outcome, draw, judge
from tests.fakes.chaotic_upstream import ChaoticOpenAI

__all__ = ["ChaosConfig", "ChaosReport", "run_chaos"]

REPO = Path(__file__).resolve().parents[2]
RSS_GROWTH_LIMIT = 0.10
SLOW_FIRST_BYTE = 1.0  # the upstream's "slow" fault
TRICKLE_S = 1.0  # at least how long a "trickle" stream lasts (15 chunks, 0.1 s apart)


@dataclass(frozen=True)
class ChaosConfig:
    duration: float = 15.0  # seconds of measured traffic, after the warm-up
    warmup: float = 5.0
    concurrency: int = 8
    seed: int = 1
    fault_rate: float = 0.35  # share of requests that ask the upstream for a fault
    leave_rate: float = 0.1  # share of clients that hang up early
    keys: int = 4
    upstream_timeout: float = 2.0  # the provider's timeout: a hang becomes a 504 / error event
    client_timeout: float = 15.0  # an answer slower than this is a hang
    postgres: str | None = None  # a server URL (postgresql+asyncpg://…/db): a fresh database there
    workdir: Path | None = None
    log_level: str = "info"


@dataclass
class ChaosReport:
    config: ChaosConfig
    requests: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)  # as the upstream carried them out
    leaves: Counter[str] = field(default_factory=Counter)  # clients that hung up, by plan
    upstream_disconnects: int = 0
    rows: int = 0
    rows_499: int = 0
    secrets_seen: list[str] = field(default_factory=list)
    redacted: int = 0  # answers in which the client saw "[redacted]" (an echo, redacted)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    elapsed_s: float = 0.0
    slowest_s: float = 0.0  # as the clients timed it
    gateway_slowest_s: float = 0.0  # as the gateway's access log timed it
    failures: dict[str, list[str]] = field(default_factory=dict)  # check -> problems
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return not any(self.failures.values())

    @property
    def rss_growth(self) -> float:
        return (self.rss_end_mb - self.rss_start_mb) / self.rss_start_mb if self.rss_start_mb else 0.0

    def summary(self) -> str:
        lines = [
            f"requests {self.requests} in {self.elapsed_s:.1f} s ({dict(self.by_endpoint)}), "
            f"verdicts {dict(self.verdicts)}",
            f"statuses {dict(sorted(self.statuses.items()))}",
            f"faults injected {dict(sorted(self.faults.items()))}; upstream saw {self.upstream_disconnects} "
            f"answers abandoned",
            f"clients that left {dict(self.leaves)}; usage rows {self.rows} ({self.rows_499} with 499)",
            f"secrets seen {len(self.secrets_seen)} ({self.redacted} answers redacted); "
            f"slowest answer {self.slowest_s:.2f} s at the client (timeout {self.config.client_timeout} s), "
            f"{self.gateway_slowest_s:.2f} s at the gateway (upstream timeout {self.config.upstream_timeout} s)",
            f"RSS {self.rss_start_mb:.1f} MB after warm-up, {self.rss_end_mb:.1f} MB at the end "
            f"({self.rss_growth:+.1%})",
        ]
        for check, problems in self.failures.items():
            lines.append(f"{check}: {'PASS' if not problems else 'FAIL'}")
            lines += [f"  - {p}" for p in problems[:10]]
            if len(problems) > 10:
                lines.append(f"  - … and {len(problems) - 10} more")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- the gateway
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_rss_mb(root: int) -> float:
    """VmRSS of ``root`` and its descendants, in MB (from /proc/<pid>/status)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


class Gateway:
    """``python -m switchyard serve`` (this checkout's src first on the path), its log in files."""

    def __init__(self, work: Path, config: Path, env: dict[str, str], store: list[str], admin_key: str,
                 log_level: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / "serve.log"
        self._log = open(self.log, "wb")  # closed in stop()
        cmd = [sys.executable, "-m", "switchyard", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--config", str(config), "--data-dir", str(work / "data"), "--workers", "1", "--api-key",
               admin_key, "--log-level", log_level, "--log-json", *store]
        self.proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"switchyard serve exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"switchyard serve not ready after {timeout} s:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # drains: queued usage rows are written before it exits
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return {**env, **extra}


async def _pg(url: str, *statements: str) -> list[Any]:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            results = [await conn.execute(sa.text(s)) for s in statements]
            return [r.all() if r.returns_rows else None for r in results]
    finally:
        await engine.dispose()


def _usage_rows(data: Path, pg_url: str | None) -> list[tuple[str, int]]:
    query = "SELECT request_id, status FROM usage_records"
    if pg_url is not None:
        return [(r[0], int(r[1])) for r in asyncio.run(_pg(pg_url, query))[0]]
    with contextlib.closing(sqlite3.connect(f"file:{data / 'switchyard.db'}?mode=ro", uri=True, timeout=30)) as db:
        return [(r[0], int(r[1])) for r in db.execute(query)]


# ----------------------------------------------------------------------------- the run
def run_chaos(cfg: ChaosConfig) -> ChaosReport:
    work = cfg.workdir or Path(tempfile.mkdtemp(prefix="switchyard-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "data").mkdir(exist_ok=True)
    token = secrets.token_urlsafe
    named = {  # every secret the gateway holds; none may reach a client or the log
        "upstream credential (config)": f"up-config-{token(24)}",
        "upstream credential (vault)": f"up-vault-{token(24)}",
        "master key": f"mk-chaos-{token(32)}",
        "server secret": f"ss-chaos-{token(32)}",
        "admin key": f"sk-chaos-admin-{token(24)}",
    }
    upstream = ChaoticOpenAI(credentials={named["upstream credential (config)"], named["upstream credential (vault)"]},
                             slow_first_byte=SLOW_FIRST_BYTE, trickle_delay=0.1)
    upstream.start()
    config = work / "switchyard.yaml"
    config.write_text(yaml.safe_dump({
        "providers": {"chaos": {"type": "openai", "base_url": upstream.base_url, "timeout": cfg.upstream_timeout,
                                "api_key": named["upstream credential (config)"]}},
        "models": [{"alias": "chat", "provider": "chaos", "model": "gpt-4o-mini"}],
    }, sort_keys=False))
    env = _env({"SWITCHYARD_MASTER_KEY": named["master key"], "SWITCHYARD_SECRET_KEY": named["server secret"]})
    pg_url: str | None = None
    store: list[str] = []
    if cfg.postgres:
        from sqlalchemy.engine import make_url

        name = f"sy_chaos_{uuid.uuid4().hex[:12]}"
        asyncio.run(_pg(cfg.postgres, f'CREATE DATABASE "{name}"'))
        pg_url = make_url(cfg.postgres).set(database=name).render_as_string(hide_password=False)
        store = ["--database-url", pg_url]
    report = ChaosReport(cfg)
    gateway = Gateway(work, config, env, store, named["admin key"], cfg.log_level)
    try:
        gateway.wait_ready()
        client_keys = _prepare(gateway.url, named, upstream, cfg)
        named.update({f"client key {i}": k for i, k in enumerate(client_keys)})
        outcomes, admin_bytes = asyncio.run(_traffic(gateway, upstream, client_keys, named["admin key"], cfg, report))
        gateway.stop()
        rows = _usage_rows(work / "data", pg_url)
    finally:
        gateway.stop()
        upstream.stop()
        if pg_url is not None:
            asyncio.run(_pg(cfg.postgres or "", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    report.faults = Counter(upstream.faults)
    report.upstream_disconnects = upstream.disconnects
    log = gateway.log.read_bytes()
    report.log_tail = log[-4000:].decode("utf-8", "replace")
    _check(report, cfg, outcomes, rows, named, admin_bytes, log, dict(upstream.seen))
    return report


def _prepare(url: str, named: dict[str, str], upstream: ChaoticOpenAI, cfg: ChaosConfig) -> list[str]:
    """The vault credential and the embeddings model that uses it, and the client keys (admin API)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {named['admin key']}"}, timeout=30) as admin:
        made = admin.post("/admin/credentials", json={"name": "chaos-vault", "provider": "openai",
                                                      "base_url": upstream.base_url, "check": False,
                                                      "api_key": named["upstream credential (vault)"]})
        made.raise_for_status()
        made = admin.post("/admin/models", json={
            "alias": "embed", "provider": "openai", "model": "text-embedding-3-small", "base_url": upstream.base_url,
            "credential": "chaos-vault", "provider_settings": {"timeout": cfg.upstream_timeout}})
        made.raise_for_status()
        keys = []
        for i in range(cfg.keys):
            made = admin.post("/admin/keys", json={"name": f"chaos-{i}"})
            made.raise_for_status()
            keys.append(made.json()["key"])
        return keys


async def _traffic(gateway: Gateway, upstream: ChaoticOpenAI, keys: list[str], admin_key: str, cfg: ChaosConfig,
                   report: ChaosReport) -> tuple[list[Outcome], bytes]:
    client = Client(gateway.url, keys, upstream.has_seen, cfg.client_timeout)
    outcomes: list[Outcome] = []
    run = uuid.uuid4().hex[:8]
    counter = iter(range(10**9))
    rngs = [random.Random(f"{cfg.seed}:{i}") for i in range(cfg.concurrency)]

    async def phase(seconds: float) -> None:
        end = time.monotonic() + seconds

        async def worker(rng: random.Random) -> None:
            while time.monotonic() < end:
                plan = draw(rng, f"chaos-{run}-{next(counter)}", len(keys), cfg.fault_rate, cfg.leave_rate)
                outcomes.append(await client.send(plan))

        await asyncio.gather(*(worker(rng) for rng in rngs))

    async def at_rest() -> float:
        await asyncio.sleep(1.5)  # the last usage batch written, abandoned upstream calls closed
        return tree_rss_mb(gateway.proc.pid)

    started = time.monotonic()
    try:
        await phase(cfg.warmup)
        report.rss_start_mb = await at_rest()
        await phase(cfg.duration)
        report.rss_end_mb = await at_rest()
    finally:
        await client.aclose()
    report.elapsed_s = time.monotonic() - started
    seen = b""
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {admin_key}"},
                                 timeout=30) as admin:
        for path in ("/admin/status", "/admin/upstreams", "/metrics"):
            resp = await admin.get(path)
            seen += b"".join(k + b": " + v + b"\r\n" for k, v in resp.headers.raw) + resp.content + b"\n"
    return outcomes, seen


# ----------------------------------------------------------------------------- the checks
def _check(report: ChaosReport, cfg: ChaosConfig, outcomes: list[Outcome], rows: list[tuple[str, int]],
           named: dict[str, str], admin_bytes: bytes, log: bytes, seen: dict[str, float]) -> None:
    report.requests = len(outcomes)
    report.rows = len(rows)
    report.rows_499 = sum(1 for _, status in rows if status == 499)
    for out in outcomes:
        judge(out, cfg.client_timeout)
        report.verdicts[out.verdict] += 1
        report.by_endpoint[out.plan.endpoint] += 1
        if out.status is not None and not out.left:
            report.statuses[out.status] += 1
        if out.left:
            report.leaves[out.plan.leave or "?"] += 1
    report.slowest_s = max((o.seconds for o in outcomes), default=0.0)
    sent_ids = {o.plan.request_id for o in outcomes}
    report.gateway_slowest_s = max((line["duration_ms"] / 1000 for line in _access_log(log)
                                    if line.get("request_id") in sent_ids), default=0.0)

    # rows: one per request, by request id, with the status the client saw
    problems: list[str] = []
    by_id: dict[str, list[int]] = {}
    for request_id, status in rows:
        by_id.setdefault(request_id, []).append(status)
    sent = {o.plan.request_id for o in outcomes}
    if len(rows) != len(outcomes):
        problems.append(f"{len(outcomes)} requests sent, {len(rows)} usage rows")
    for out in outcomes:
        got = by_id.get(out.plan.request_id, [])
        if len(got) != 1:
            problems.append(f"{out.plan.request_id} ({out.plan.endpoint}, fault {out.plan.fault}, "
                            f"{out.verdict}): {len(got)} rows")
            continue
        want = _row_status(out, seen.get(out.plan.request_id), cfg)
        if want is not None and got[0] != want:
            timing = ""
            if out.left_at is not None and out.plan.request_id in seen:
                timing = f", left {out.left_at - seen[out.plan.request_id]:.2f} s after the upstream had it"
            problems.append(f"{out.plan.request_id} ({out.plan.endpoint}, fault {out.plan.fault}, {out.verdict}, "
                            f"left: {out.plan.leave}{timing}): row status {got[0]}, expected {want}")
    problems += [f"a row for a request nobody sent: {rid}" for rid in by_id if rid not in sent]
    report.failures["rows == requests"] = problems

    # secrets: in whole and in part (a 16-character stretch from the middle)
    problems = []
    places = [(f"answer to {o.plan.request_id}", bytes(o.received)) for o in outcomes]
    places += [("admin status, upstreams and metrics", admin_bytes), ("server log", log)]
    for what, secret in named.items():
        middle = secret[len(secret) // 2 - 8: len(secret) // 2 + 8]
        for where, data in places:
            if secret.encode() in data or middle.encode() in data:
                problems.append(f"{what} in the {where}")
    report.secrets_seen = problems
    report.redacted = sum(1 for o in outcomes if b"[redacted]" in o.received)
    report.failures["no secret seen"] = problems

    # failures: in OpenAI's shape or in-band, never a hang or a dropped connection
    report.failures["failures well-formed, no hang"] = [
        f"{o.plan.request_id} ({o.plan.endpoint}, fault {o.plan.fault}): {o.verdict}: {o.problem}"
        for o in outcomes if o.problem is not None]

    growth = report.rss_growth
    report.failures["RSS growth < 10%"] = [] if growth < RSS_GROWTH_LIMIT else [
        f"RSS grew {growth:.1%}: {report.rss_start_mb:.1f} MB -> {report.rss_end_mb:.1f} MB"]


def _access_log(log: bytes) -> list[dict[str, Any]]:
    lines = []
    for raw in log.splitlines():
        with contextlib.suppress(ValueError):
            line = json.loads(raw)
            if isinstance(line, dict) and line.get("logger") == "switchyard.access":
                lines.append(line)
    return lines


def _row_status(out: Outcome, seen: float | None, cfg: ChaosConfig) -> int | None:
    """The status the usage row must have, when the client's view decides it. ``seen``: when the
    upstream had the request (``time.monotonic()``, the clock the clients use too)."""
    if out.left:
        if out.plan.leave not in ("wait", "mid-stream") or seen is None or out.left_at is None:
            return None
        # left while the gateway surely still waited or relayed, with 0.3 s to spare: a 499. A
        # client starved of CPU may leave later, when the answer (or a timeout) may have come first.
        answer_by = {"slow": SLOW_FIRST_BYTE, "hang": cfg.upstream_timeout, "trickle": TRICKLE_S}[out.plan.fault]
        return 499 if out.left_at - seen < answer_by - 0.3 else None
    if out.verdict == "ok":
        return 200
    if out.verdict == "http-error":
        return out.status
    return None  # an in-band stream error: the row says what the upstream did
