"""What the gateway's own code costs per request, in process: the ASGI app with no server around it.

Starts ``bench/fake_upstream.py``, builds the app as ``switchyard serve`` does (``create_app``,
the configuration of ``bench/run.py``: one OpenAI-compatible provider, auth on, usage recorded),
runs its lifespan, and calls it directly with the messages uvicorn would send (the body, then a
disconnect once the answer is complete), keep-alive to the upstream as in the server. Prints the
CPU time (``time.process_time``) per request for non-streaming answers and for 20-chunk streams,
and per chunk: the best of several rounds (this shared machine only ever adds time). The upstream
runs in its own process, so its time is not counted; uvicorn's HTTP parsing is not either, which
is the same code whichever version of Switchyard runs.

Use it to compare two versions of the gateway, run one after the other (alternate them, twice):

  .venv/bin/python bench/hotpath_cost.py
  PYTHONPATH=/path/to/other/checkout/src .venv/bin/python bench/hotpath_cost.py

``--profile stream`` (or ``nonstream``) prints where the time goes instead (cProfile, by own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

BENCH_DIR = Path(__file__).resolve().parent
API_KEY = "sk-bench-key"
MODEL = "bench-model"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Cycle:
    """One request as uvicorn hands it to the app: the body, then (once the answer is complete,
    or never before) ``http.disconnect``."""

    __slots__ = ("body", "chunks", "done", "sent_body", "status")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.sent_body = False
        self.done = asyncio.Event()
        self.status = 0
        self.chunks = 0

    async def receive(self) -> dict[str, Any]:
        if not self.sent_body:
            self.sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.chunks += message.get("body", b"").count(b"data: {")
            if not message.get("more_body", False):
                self.done.set()


class _Bench:
    def __init__(self, app: Any, state: dict[str, Any], upstream_port: int, path: str) -> None:
        self.app = app
        self.state = state
        self.port = upstream_port
        self.path = path

    def _scope(self, body: bytes) -> dict[str, Any]:
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": self.path, "raw_path": self.path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
            "headers": [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {API_KEY}".encode()),
                        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "state": dict(self.state),
        }

    async def one(self, body: bytes) -> _Cycle:
        cycle = _Cycle(body)
        await self.app(self._scope(body), cycle.receive, cycle.send)
        if cycle.status != 200:
            raise RuntimeError(f"status {cycle.status}")
        return cycle

    async def many(self, body: bytes, n: int) -> int:
        chunks = 0
        for _ in range(n):
            chunks += (await self.one(body)).chunks
        return chunks


PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}


def _bodies(api: str) -> dict[str, bytes]:
    messages = [{"role": "user", "content": "Say hello."}]
    if api == "responses":  # the same request as the Responses API (store: false, as Codex sends)
        body = {"model": MODEL, "input": "Say hello.", "max_output_tokens": 20, "store": False}
        return {"nonstream": orjson.dumps(body), "stream": orjson.dumps({**body, "stream": True})}
    return {
        "nonstream": orjson.dumps({"model": MODEL, "messages": messages, "max_tokens": 20}),
        "stream": orjson.dumps({"model": MODEL, "messages": messages, "max_tokens": 20, "stream": True,
                                "stream_options": {"include_usage": True}}),
    }


async def _lifespan(app: Any, state: dict[str, Any]) -> tuple[asyncio.Task[None], asyncio.Queue[Any]]:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    message = await outbox.get()
    if message["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"start-up failed: {message}")
    return task, inbox


async def run(args: argparse.Namespace, port: int, workdir: Path) -> None:
    from switchyard.app import create_app
    from switchyard.settings import load_settings

    cfg = workdir / "switchyard.yaml"
    cfg.write_text(
        "providers:\n  fake:\n    type: openai\n"
        f"    base_url: http://127.0.0.1:{port}/v1\n"
        f"models:\n  - alias: {MODEL}\n    provider: fake\n    model: {MODEL}\n"
    )
    data_dir = workdir / "data"
    data_dir.mkdir()
    quiet: dict[str, Any] = {"key_refresh_interval": 3600.0} if args.quiet else {}  # no key, team or catalog polls
    if args.time_scale != 1.0:  # the server's timers, as requests that run time_scale times slower see them
        # at full speed a run takes less than one usage batch interval: one batch, written at shutdown
        quiet["usage_flush_interval"] = 3600.0
        import importlib

        try:
            watch = importlib.import_module("switchyard.http.disconnect")
        except ImportError:  # a tree from before the watch
            watch = None
        for name in ("TICK", "GRACE"):  # the watch's timer (GRACE: its name in earlier trees)
            if hasattr(watch, name):
                setattr(watch, name, getattr(watch, name) * args.time_scale)
    settings = load_settings(cfg, data_dir=data_dir, api_keys=[API_KEY], host="127.0.0.1", port=8000, workers=1,
                             **quiet)
    app = create_app(settings)
    state: dict[str, Any] = {}
    task, inbox = await _lifespan(app, state)
    bench = _Bench(app, state, port, PATHS[args.api])
    bodies = _bodies(args.api)
    try:
        if args.only:
            bodies = {args.only: bodies[args.only]}
        for body in bodies.values():  # warm-up: connections, caches
            await bench.many(body, args.warmup)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            await bench.many(bodies[args.profile], args.requests)
            prof.disable()
            if args.dump:
                prof.dump_stats(args.dump)
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
            print(out.getvalue())
            return
        if args.worker:  # rounds on demand, for --compare: "<kind> <requests>" in, CPU ms per request out
            loop = asyncio.get_running_loop()
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                kind, n = line.split()
                gc.collect()
                started = time.process_time()
                got = await bench.many(bodies[kind], int(n))
                print(f"{(time.process_time() - started) / int(n) * 1e3:.5f} {got / int(n):.2f}", flush=True)
            return
        best = {name: float("inf") for name in bodies}
        chunks = {name: 0 for name in bodies}
        for _ in range(args.rounds):
            for name, body in bodies.items():
                gc.collect()
                started = time.process_time()
                chunks[name] = await bench.many(body, args.requests)
                best[name] = min(best[name], (time.process_time() - started) / args.requests * 1e3)
        src = sys.modules["switchyard"].__file__
        print(f"tree: {Path(src or '').parent.parent}; API: {PATHS[args.api]}")
        if "nonstream" in best:
            print(f"non-stream: {best['nonstream']:.4f} ms CPU per request")
        if "stream" in best:
            per_request = chunks["stream"] / args.requests
            print(f"stream 20 chunks: {best['stream']:.4f} ms CPU per request, "
                  f"{best['stream'] / per_request:.5f} ms per chunk ({per_request:.0f} chunks a request)")
        print(f"(best of {args.rounds} rounds of {args.requests} requests each)")
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await task


def compare(args: argparse.Namespace) -> None:
    """Two trees side by side, their rounds interleaved, so that both see the same machine."""
    import statistics

    trees = args.compare
    workers = [
        subprocess.Popen([sys.executable, __file__, "--worker", "--api", args.api,
                          *(["--quiet"] if args.quiet else [])],
                         env={**os.environ, "PYTHONPATH": tree},
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for tree in trees
    ]
    results: dict[tuple[int, str], list[float]] = {}
    chunks = 21.0
    try:
        for _ in range(args.rounds):
            for kind in ("nonstream", "stream"):
                for i, worker in enumerate(workers):
                    assert worker.stdin is not None and worker.stdout is not None
                    worker.stdin.write(f"{kind} {args.requests}\n")
                    worker.stdin.flush()
                    ms, got = worker.stdout.readline().split()
                    results.setdefault((i, kind), []).append(float(ms))
                    if kind == "stream":
                        chunks = float(got)
    finally:
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.close()
            worker.wait(30)
    print(f"{args.rounds} interleaved rounds of {args.requests} requests; CPU ms per request (min / median)")
    for kind in ("nonstream", "stream"):
        for i, tree in enumerate(trees):
            vals = results[(i, kind)]
            line = f"  {kind:9} {tree}: {min(vals):.4f} / {statistics.median(vals):.4f}"
            if kind == "stream":
                line += f"  (per chunk {min(vals) / chunks:.5f} / {statistics.median(vals) / chunks:.5f})"
            print(line)
        a, b = results[(0, kind)], results[(1, kind)]
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        print(f"  {kind:9} second / first: min {min(b) / min(a):.3f}, median of round ratios "
              f"{statistics.median(ratios):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000, help="requests per round")
    ap.add_argument("--api", choices=tuple(PATHS), default="chat",
                    help="chat completions, or the same request as the Responses API (translated onto chat)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", choices=("nonstream", "stream"), default=None)
    ap.add_argument("--quiet", action="store_true",
                    help="no periodic refreshes (keys, teams, catalog) while measuring: for instruction counts "
                         "under valgrind, where they would add what depends on the wall time")
    ap.add_argument("--time-scale", type=float, default=1.0, metavar="F",
                    help="run the server's timers F times slower (the disconnect watch's timer; the usage rows "
                         "are written in one batch at shutdown, as a run this short does at full speed): under "
                         "valgrind, where a request runs about 50 times slower, --time-scale 50 makes them fire "
                         "as often per request as at full speed, so that instruction counts do not depend on how "
                         "slow valgrind happened to run")
    ap.add_argument("--only", choices=("nonstream", "stream"), default=None, help="measure one kind only")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured requests of each kind first")
    ap.add_argument("--top", type=int, default=45, help="functions to print with --profile")
    ap.add_argument("--dump", default=None, help="with --profile: also write the pstats file here")
    ap.add_argument("--compare", nargs=2, metavar="SRC", default=None,
                    help="two src directories (PYTHONPATH) to measure side by side, rounds interleaved")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compare:
        compare(args)
        return
    port = _free_port()
    upstream = subprocess.Popen([sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with tempfile.TemporaryDirectory(prefix="sy-hotpath-") as tmp:
            import uvloop

            uvloop.run(run(args, port, Path(tmp)))
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
