"""The Responses API over chat completions, beside chat, through one Switchyard, in one run.

Starts the fast fake upstream (``fake_upstream.py``) and one ``switchyard serve`` in front of it,
then measures, alternating in rounds so that drift in the machine's speed hits both alike:

- ``POST /v1/chat/completions`` and ``POST /v1/responses`` (``store: false``, as Codex sends),
  non-stream at c=1: the p50 added over the upstream measured directly;
- the same two as streams of 200 chunks at c=1: gateway CPU per upstream chunk relayed (the
  upstream sends the same chunks for both; the Responses stream carries a few more events);
- ``/v1/responses`` with ``store: true`` (the API's default: sealed and written before the
  answer), non-stream at c=1, for reference.

Writes a section of ``bench/RESULTS.md`` (between its own marker and the local-engines one) with
the ratios of this run. Target: Responses' overhead within 1.5x of chat's, in added p50 and in
relay CPU per chunk.

  .venv/bin/python bench/responses.py                 # ~3 min
  .venv/bin/python bench/responses.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import loadgen  # noqa: E402
import run  # noqa: E402

MARK = "<!-- responses: written by bench/responses.py -->"
ENGINES_MARK = "<!-- local engines: written by bench/engines.py -->"
TARGET_X = 1.5
STREAM_CHUNKS = 200


def _load(url: str, key: str | None, api: str, stream: bool, duration: float, warmup: float, *,
          store: bool = False, pid: int | None = None) -> dict[str, Any]:
    cfg = loadgen.LoadConfig(url=url, concurrency=1, duration=duration, stream=stream,
                             chunks=STREAM_CHUNKS if stream else 20, api_key=key, model=run.MODEL,
                             timeout=30.0, warmup=warmup, api=api, store=store)
    cpu0: list[float] = []
    out = loadgen.run_load_sync(cfg, (lambda: cpu0.append(run.tree_cpu_s(pid))) if pid else None).to_dict()
    if pid and cpu0:
        time.sleep(0.25)
        out["cpu_s"] = run.tree_cpu_s(pid) - cpu0[0]
    if out["errors"]:
        raise RuntimeError(f"{api} {'stream' if stream else 'non-stream'}: {out['errors']} errors, "
                           f"e.g. {out['error_samples'][:2]}")
    return out


def _check(url: str, key: str) -> None:
    for api in ("chat", "responses"):
        for stream in (False, True):
            cfg = loadgen.LoadConfig(url=url, stream=stream, chunks=20, api_key=key, model=run.MODEL, api=api)
            status, body = loadgen.request_once(cfg)
            if status != 200:
                raise RuntimeError(f"{api} stream={stream}: HTTP {status}: {body[:300]!r}")
            if api == "responses" and stream and b"event: response.completed" not in body \
                    and b"event: response.incomplete" not in body:
                raise RuntimeError(f"the Responses stream did not complete: {body[-300:]!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 1 s workloads")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds measured per workload and round")
    ap.add_argument("--switchyard-bin", default=None)
    ap.add_argument("--out", default=str(BENCH_DIR / "RESULTS.md"))
    args = ap.parse_args(argv)
    rounds, duration, warmup = (1, 1.0, 0.3) if args.quick else (args.rounds, args.duration, 1.0)
    command = shlex.join(["bench/responses.py", *(argv if argv is not None else sys.argv[1:])])
    binary = run.switchyard_binary(args.switchyard_bin)
    if binary is None:
        print("no switchyard binary", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.UTC)
    speed = [run.machine_speed_ms()]
    work = Path(tempfile.mkdtemp(prefix="switchyard-bench-responses-"))
    up_port = run.free_port()
    upstream = run.Service("upstream", [sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--host", "127.0.0.1",
                                        "--port", str(up_port)], dict(os.environ), up_port, "/health",
                           run.OUT_DIR / "logs" / "responses-upstream.log")
    cfg = work / "switchyard.yaml"
    cfg.write_text(f"providers:\n  fake:\n    type: openai\n    base_url: http://127.0.0.1:{up_port}/v1\n"
                   f"models:\n  - alias: {run.MODEL}\n    provider: fake\n    model: {run.MODEL}\n")
    port = run.free_port()
    gateway = run.Service("switchyard", [binary, "serve", "--host", "127.0.0.1", "--port", str(port), "--config",
                                         str(cfg), "--data-dir", str(work / "data"), "--workers", "1",
                                         "--api-key", run.API_KEY], dict(os.environ), port, "/health",
                          run.OUT_DIR / "logs" / "responses-switchyard.log")
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        upstream.start(15.0)
        gateway.start(30.0)
        url, direct = f"http://127.0.0.1:{port}/v1/chat/completions", f"http://127.0.0.1:{up_port}/v1/chat/completions"
        _check(url, run.API_KEY)
        plan = [("direct", direct, None, "chat", False, False), ("chat", url, run.API_KEY, "chat", False, False),
                ("responses", url, run.API_KEY, "responses", False, False),
                ("responses_store", url, run.API_KEY, "responses", False, True),
                ("chat_stream", url, run.API_KEY, "chat", True, False),
                ("responses_stream", url, run.API_KEY, "responses", True, False)]
        for r in range(rounds):
            for name, target, key, api, stream, store in plan:
                pid = gateway.pid if target == url else None
                result = _load(target, key, api, stream, duration, warmup, store=store, pid=pid)
                runs.setdefault(name, []).append(result)
                cpu = f", CPU {result['cpu_s']:.2f} s" if "cpu_s" in result else ""
                print(f"round {r + 1} {name:<17} p50 {result['latency_ms']['p50']:.3f} ms  "
                      f"{result['rps']:.0f} rps{cpu}", flush=True)
    finally:
        gateway.stop()
        upstream.stop()
    speed.append(run.machine_speed_ms())

    p50 = {name: statistics.median(x["latency_ms"]["p50"] for x in got) for name, got in runs.items()}
    added = {name: p50[name] - p50["direct"] for name in ("chat", "responses", "responses_store")}

    def per_chunk(name: str) -> float:  # ms of gateway CPU per upstream content chunk relayed
        got = runs[name]
        return sum(x["cpu_s"] for x in got) / sum(x["responses_total"] * STREAM_CHUNKS for x in got) * 1000

    def events(name: str) -> float:
        return statistics.median(x["chunks_per_response"] for x in runs[name])

    def per_request(name: str) -> float:  # ms of gateway CPU per request
        got = runs[name]
        return sum(x["cpu_s"] for x in got) / sum(x["responses_total"] for x in got) * 1000

    cpu = {name: per_chunk(name) for name in ("chat_stream", "responses_stream")}
    req = {name: per_request(name) for name in ("chat", "responses", "responses_store")}
    x_p50 = added["responses"] / added["chat"]
    x_cpu = cpu["responses_stream"] / cpu["chat_stream"]
    verdict = {True: "**PASS**", False: "**FAIL**"}
    lines = [
        MARK, "", "## Responses API over chat (`bench/responses.py`)", "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}; command: `.venv/bin/python {command}`",
        f"- Switchyard {run.git_describe()}; one `switchyard serve` against `fake_upstream.py`; {rounds} rounds of "
        f"{duration:g} s per workload (after {warmup:g} s warm-up), alternating; medians over the rounds",
        f"- Machine speed (`machine_speed_ms`): {speed[0]:.1f} ms at the start, {speed[1]:.1f} ms at the end",
        "",
        "| Figure | chat | Responses | Responses / chat | Target | Result |",
        "|---|---:|---:|---:|---|---|",
        f"| Added p50 over direct, non-stream, c=1 (ms; direct p50 {p50['direct']:.3f}) | +{added['chat']:.3f} | "
        f"+{added['responses']:.3f} | {x_p50:.2f}x | ≤ {TARGET_X}x | {verdict[x_p50 <= TARGET_X]} |",
        f"| Gateway CPU per request, non-stream, c=1 (ms; steadier than latency on a busy machine) | "
        f"{req['chat']:.3f} | {req['responses']:.3f} | {req['responses'] / req['chat']:.2f}x | reference | n/a |",
        f"| Relay CPU per upstream chunk, stream of {STREAM_CHUNKS} chunks, c=1 (ms CPU / chunk) | "
        f"{cpu['chat_stream']:.4f} | {cpu['responses_stream']:.4f} | {x_cpu:.2f}x | ≤ {TARGET_X}x | "
        f"{verdict[x_cpu <= TARGET_X]} |",
        f"| Events per response sent to the client (same upstream stream) | {events('chat_stream'):.0f} | "
        f"{events('responses_stream'):.0f} | | reference | n/a |",
        f"| `store: true` (sealed and written before the answer): added p50; CPU per request | | "
        f"+{added['responses_store']:.3f}; {req['responses_store']:.3f} | "
        f"{added['responses_store'] / added['chat']:.2f}x; {req['responses_store'] / req['chat']:.2f}x | "
        "reference | n/a |",
        "",
        "Responses requests send `store: false` (as Codex does): the figures are the translation's cost. On a",
        "busy machine (a machine speed well above the main run's) the absolute figures are inflated, latency most;",
        "the ratios, taken in one run with the workloads alternating, are what this measures.",
        "",
    ]
    out = Path(args.out)
    old = out.read_text() if out.exists() else ""
    head = old.split(MARK)[0] if MARK in old else (old.split(ENGINES_MARK)[0] if ENGINES_MARK in old else old)
    rest = old[old.index(ENGINES_MARK):] if ENGINES_MARK in old else ""
    out.write_text(head.rstrip() + "\n\n" + "\n".join(lines) + ("\n" + rest if rest else ""))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
