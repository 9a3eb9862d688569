"""Lean HTTP/1.1 load generator for OpenAI-style chat completions.

A raw asyncio ``Protocol`` per connection (uvloop + httptools response parsing,
keep-alive, one connection per concurrency slot), so the client itself burns as
little CPU as possible on a 2-core machine it shares with the system under test.

Measures: requests/s, latency p50/p90/p99 (request written -> response complete),
time to first body chunk for streams, SSE chunks per response (``data:`` events
other than ``[DONE]``; includes the usage chunk), status codes and errors.
The warm-up runs the same load and the measured window opens while it is running
(no drain in between); requests/s counts responses completed inside the window.
Prints one JSON object.

CLI:
  python bench/loadgen.py --url http://127.0.0.1:8000 --concurrency 64 --duration 5
  python bench/loadgen.py --url ... --stream --chunks 200 --requests 100 --api-key KEY

Importable: ``run_load(LoadConfig(...))`` (async) or ``run_load_sync(...)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

_DATA = b"data:"
_DONE = b"[DONE]"
_RESPONSES_DONE = b'"usage":{'  # a Responses stream ends with the one event whose response has usage
_INF_NS = 1 << 62


@dataclass
class LoadConfig:
    url: str = "http://127.0.0.1:8000/v1/chat/completions"
    concurrency: int = 1
    duration: float | None = 5.0
    requests: int | None = None
    stream: bool = False
    chunks: int = 20
    api_key: str | None = None
    model: str = "bench-model"
    include_usage: bool = True
    timeout: float = 30.0
    warmup: float = 0.0
    api: str = "chat"  # or "responses": POST /v1/responses (input, max_output_tokens)
    store: bool = False  # /v1/responses: keep the response (the API's default is true)


@dataclass
class LoadResult:
    """One workload's numbers.

    The window is ``duration`` s long and opens after ``warmup`` s of the same load.
    ``ok``, ``rps``, latencies, TTFC and ``chunks_per_response`` cover the 200s completed
    inside the window; ``errors``/``status_codes`` everything completed from its start on.
    ``responses_total`` and ``chunks_total`` (SSE ``data:`` events other than ``[DONE]``,
    counted as bytes arrive) run from the window's start until the in-flight requests
    drained after it: the span a caller measuring server CPU around ``run_load`` sees.
    """

    url: str
    concurrency: int
    stream: bool
    chunks_requested: int
    requests: int
    ok: int
    errors: int
    elapsed_s: float
    rps: float
    latency_ms: dict[str, float]
    ttfc_ms: dict[str, float] | None
    responses_total: int
    chunks_total: int
    chunks_per_response: float | None
    status_codes: dict[str, int]
    error_samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _target(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported: {url!r}")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path.rstrip("/")
    if path in ("", "/"):
        path = "/v1/chat/completions"
    elif not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return host, port, path


def build_request(cfg: LoadConfig) -> tuple[str, int, bytes]:
    host, port, path = _target(cfg.url)
    payload: dict[str, Any]
    if cfg.api == "responses":
        path = path.removesuffix("/chat/completions") + "/responses"
        payload = {"model": cfg.model, "input": "Say hello.", "max_output_tokens": cfg.chunks, "store": cfg.store}
        if cfg.stream:
            payload["stream"] = True
    else:
        payload = {
            "model": cfg.model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": cfg.chunks,
        }
        if cfg.stream:
            payload["stream"] = True
            if cfg.include_usage:
                payload["stream_options"] = {"include_usage": True}
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: text/event-stream" if cfg.stream else "Accept: application/json",
        f"Content-Length: {len(body)}",
    ]
    if cfg.api_key:
        head.append(f"Authorization: Bearer {cfg.api_key}")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    return host, port, raw


def _done_marker(cfg: LoadConfig) -> bytes:
    return _RESPONSES_DONE if cfg.api == "responses" else _DONE


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    __slots__ = (
        "_parser",
        "body",
        "carry",
        "closed",
        "data_events",
        "done_events",
        "done_marker",
        "first_body_ns",
        "keep_alive",
        "keep_body",
        "stats",
        "status",
        "transport",
        "waiter",
    )

    def __init__(self, keep_body: bool, stats: _Stats | None = None, done_marker: bytes = _DONE) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.done_marker = done_marker
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.keep_body = keep_body
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.first_body_ns = 0
        self.data_events = 0
        self.done_events = 0
        self.carry = b""
        self.body: list[bytes] = []
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports don't subclass asyncio.Transport; cast, don't check.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(ConnectionError(f"connection lost: {exc!r}" if exc else "connection closed"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            w = self.waiter
            if w is not None and not w.done():
                w.set_exception(ConnectionError(f"bad response: {e}"))
            if self.transport is not None:
                self.transport.close()

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if not self.first_body_ns:
            self.first_body_ns = time.perf_counter_ns()
        # Count SSE events across body-piece boundaries: a match never lies
        # wholly inside the carried tail, so none is counted twice.
        buf = self.carry + body if self.carry else body
        n_data = buf.count(_DATA)
        n_done = buf.count(self.done_marker)
        self.data_events += n_data
        self.done_events += n_done
        self.carry = buf[-(len(self.done_marker) - 1):]
        st = self.stats
        if st is not None:
            st.live_data += n_data
            st.live_done += n_done
        if self.keep_body or self.status != 200:
            self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def request(self, raw: bytes, timeout: float) -> None:
        assert self.transport is not None
        self._reset()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        try:
            await asyncio.wait_for(self.waiter, timeout)
        finally:
            self.waiter = None


def _pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))  # nearest rank
    return sorted_vals[k]


def _summary(vals_ns: list[int]) -> dict[str, float]:
    vals = sorted(v / 1e6 for v in vals_ns)
    if not vals:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": float("nan")}
    return {
        "p50": round(_pct(vals, 50), 4),
        "p90": round(_pct(vals, 90), 4),
        "p99": round(_pct(vals, 99), 4),
        "mean": round(sum(vals) / len(vals), 4),
        "max": round(vals[-1], 4),
    }


class _Stats:
    """Shared by the workers of one run.

    The measured window opens ``warmup`` seconds into the run, while the load keeps
    going (no drain between warm-up and measurement), and closes ``duration`` seconds
    later; then no new request starts and the in-flight ones drain.
    """

    def __init__(self, budget: int | None) -> None:
        self.lat: list[int] = []
        self.ttfc: list[int] = []
        self.ok = 0  # 200s completed inside the window
        self.errors = 0
        self.resp_chunks = 0  # SSE chunks of the responses counted in ``ok``
        self.after_start = 0  # 200s completed from the window's start through the drain
        self.status: Counter[str] = Counter()
        self.samples: list[str] = []
        # Live SSE event counters, bumped by every connection as bytes arrive.
        self.live_data = 0
        self.live_done = 0
        self.mark_chunks = 0
        self.start_ns = _INF_NS  # window start
        self.end_ns = _INF_NS  # window end (duration mode)
        self.stop_at = float("inf")  # perf_counter() after which no request starts
        self.budget = budget  # requests mode: requests left to start in the window
        self.last_ns = 0

    @property
    def started(self) -> bool:
        return self.start_ns != _INF_NS

    def error(self, msg: str) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(msg[:500])


async def _worker(host: str, port: int, raw: bytes, cfg: LoadConfig, stats: _Stats) -> None:
    loop = asyncio.get_running_loop()
    conn: _Conn | None = None
    try:
        while True:
            if time.perf_counter() >= stats.stop_at:
                return
            if stats.budget is not None and stats.started:
                if stats.budget <= 0:
                    return
                stats.budget -= 1
            if conn is None or conn.closed:
                try:
                    _, conn = await asyncio.wait_for(
                        loop.create_connection(lambda: _Conn(False, stats, _done_marker(cfg)), host, port), cfg.timeout
                    )
                except (OSError, TimeoutError) as e:
                    if stats.started:
                        stats.error(f"connect: {e!r}")
                    await asyncio.sleep(0.05)
                    continue
            c = conn
            assert c is not None
            t0 = time.perf_counter_ns()
            try:
                await c.request(raw, cfg.timeout)
            except (ConnectionError, TimeoutError) as e:
                if time.perf_counter_ns() >= stats.start_ns:
                    stats.error(f"request: {e!r}")
                if c.transport is not None:
                    c.transport.close()
                conn = None
                continue
            t1 = time.perf_counter_ns()
            if t1 >= stats.start_ns:
                stats.status[str(c.status)] += 1
                if c.status != 200:
                    stats.error(f"HTTP {c.status}: {b''.join(c.body)[:300]!r}")
                elif cfg.stream and c.done_events == 0:
                    stats.error("stream ended without data: [DONE]")
                else:
                    stats.after_start += 1
                    stats.last_ns = t1
                    if t1 <= stats.end_ns:
                        stats.ok += 1
                        stats.lat.append(t1 - t0)
                        if cfg.stream:
                            stats.ttfc.append(c.first_body_ns - t0)
                            stats.resp_chunks += c.data_events - c.done_events
            if not c.keep_alive:
                if c.transport is not None:
                    c.transport.close()
                conn = None
    finally:
        if conn is not None and conn.transport is not None:
            conn.transport.close()


async def run_load(cfg: LoadConfig, on_start: Callable[[], None] | None = None) -> LoadResult:
    """Run one workload. ``on_start`` is called when the measured window opens (after the
    warm-up, with the load still running); the call returns once in-flight requests drained."""
    if cfg.duration is None and cfg.requests is None:
        raise ValueError("set duration or requests")
    host, port, raw = build_request(cfg)
    conc = max(1, cfg.concurrency)
    stats = _Stats(cfg.requests)
    duration = cfg.duration if cfg.requests is None else None

    def open_window() -> None:
        if on_start is not None:
            on_start()
        stats.mark_chunks = stats.live_data - stats.live_done
        stats.start_ns = time.perf_counter_ns()
        if duration:
            stats.end_ns = stats.start_ns + int(duration * 1e9)
            stats.stop_at = stats.start_ns / 1e9 + duration

    loop = asyncio.get_running_loop()
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    timer: asyncio.TimerHandle | None = None
    try:
        if cfg.warmup > 0:
            timer = loop.call_later(cfg.warmup, open_window)
        else:
            open_window()
        await asyncio.gather(*(_worker(host, port, raw, cfg, stats) for _ in range(conc)))
    finally:
        if timer is not None:
            timer.cancel()
        if gc_was_enabled:
            gc.enable()
    drained_ns = time.perf_counter_ns()
    if duration:
        window_s = duration
    else:
        window_s = max(stats.last_ns - stats.start_ns, 1) / 1e9
    total = stats.ok + stats.errors
    return LoadResult(
        url=cfg.url,
        concurrency=conc,
        stream=cfg.stream,
        chunks_requested=cfg.chunks,
        requests=total,
        ok=stats.ok,
        errors=stats.errors,
        elapsed_s=round((drained_ns - stats.start_ns) / 1e9, 4) if stats.started else 0.0,
        rps=round(stats.ok / window_s, 2) if stats.started else 0.0,
        latency_ms=_summary(stats.lat),
        ttfc_ms=_summary(stats.ttfc) if cfg.stream else None,
        responses_total=stats.after_start,
        chunks_total=stats.live_data - stats.live_done - stats.mark_chunks,
        chunks_per_response=round(stats.resp_chunks / stats.ok, 3) if cfg.stream and stats.ok else None,
        status_codes=dict(stats.status),
        error_samples=stats.samples,
    )


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run_load_sync(cfg: LoadConfig, on_start: Callable[[], None] | None = None) -> LoadResult:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(run_load(cfg, on_start))


async def _fetch_one(url: str, raw: bytes, timeout: float) -> tuple[int, bytes]:
    host, port, _ = _target(url)
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(loop.create_connection(lambda: _Conn(True), host, port), timeout)
    try:
        await conn.request(raw, timeout)
        return conn.status, b"".join(conn.body)
    finally:
        if conn.transport is not None:
            conn.transport.close()


def request_once(cfg: LoadConfig) -> tuple[int, bytes]:
    """Send one request as the load would and return (status, de-chunked body)."""
    _, _, raw = build_request(cfg)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(_fetch_one(cfg.url, raw, cfg.timeout))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="base URL or full chat-completions URL")
    ap.add_argument("--concurrency", "-c", type=int, default=1)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--duration", "-d", type=float, default=None, help="seconds (default 5)")
    g.add_argument("--requests", "-n", type=int, default=None, help="total requests instead of a duration")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--chunks", type=int, default=20, help="max_tokens = content chunks per stream")
    ap.add_argument("--no-usage", action="store_true", help="don't ask for stream_options.include_usage")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--model", default="bench-model")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=0.0, help="seconds of unmeasured load first")
    ap.add_argument("--api", choices=("chat", "responses"), default="chat",
                    help="responses: POST /v1/responses (store: false unless --store)")
    ap.add_argument("--store", action="store_true", help="/v1/responses: store: true")
    args = ap.parse_args(argv)
    duration = args.duration if args.duration is not None else (None if args.requests else 5.0)
    cfg = LoadConfig(
        url=args.url,
        concurrency=args.concurrency,
        duration=duration,
        requests=args.requests,
        stream=args.stream,
        chunks=args.chunks,
        api_key=args.api_key,
        model=args.model,
        include_usage=not args.no_usage,
        timeout=args.timeout,
        warmup=args.warmup,
        api=args.api,
        store=args.store,
    )
    with contextlib.suppress(KeyboardInterrupt):
        res = run_load_sync(cfg)
        json.dump(res.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if res.ok else 1
    return 130


if __name__ == "__main__":
    sys.exit(main())
