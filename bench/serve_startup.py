"""What ``switchyard serve`` costs before its first request: the time from starting the command to
the first ``GET /health`` that answers 200, and the memory of each of its processes then (the
supervisor and its worker): RSS, and PSS, which splits a page that the forked worker shares with
its supervisor between the two, so that the PSS of the whole tree is the memory it takes.

    python bench/serve_startup.py [--runs 5] [--src src --src ../other-checkout/src]

With no config file it serves the bundled models, as the README's one command does (neither is
loaded before its first request). Each run has a fresh port and the same data dir (made by a first
run that is not counted, so that no run pays the migrations). With several ``--src`` (each
checkout's ``src``, put first on PYTHONPATH) the runs alternate between them, so that a busy
machine slows each alike.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _memory_kib(pid: int) -> tuple[int, int]:
    """``pid``'s resident memory (RSS, which counts in full each page it shares with another
    process) and its proportional share (PSS, which counts a page shared by two processes half in
    each: the PSS of a process tree adds up to the memory it takes)."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def _family(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rfind(")") + 2:].split()[1])
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [c for c, p in parents.items() if p == parent]
        found += kids
        frontier += kids
    return found


def _role(pid: int, first: int) -> str:
    if pid == first:
        return "the process started"
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if any(b"resource_tracker" in part for part in argv):
        return "multiprocessing's resource tracker"
    return "its worker"  # spawned (multiprocessing's spawn_main) or forked


def one_run(src: str, home: Path, data: Path) -> tuple[float, dict[str, tuple[int, int]]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update({"HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": src})
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "switchyard", "serve", "--port", str(port), "--data-dir",
                             str(data)], cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"serve exited with {proc.returncode}")
            time.sleep(0.02)
        ready = time.perf_counter() - started
        rss = {_role(pid, proc.pid): _memory_kib(pid) for pid in _family(proc.pid)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return ready, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--src", action="append", help="a checkout's src directory (repeatable; default: src)")
    args = parser.parse_args()
    sources = [str(Path(s).resolve()) for s in args.src or ["src"]]
    results: dict[str, list[tuple[float, dict[str, tuple[int, int]]]]] = {src: [] for src in sources}
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources:
            home = Path(tmp) / str(sources.index(src))
            home.mkdir()
            one_run(src, home, home / "data")  # creates the database and the first admin key
        for _ in range(args.runs):
            for src in sources:
                home = Path(tmp) / str(sources.index(src))
                results[src].append(one_run(src, home, home / "data"))
    for src, runs in results.items():
        times = [t for t, _ in runs]
        print(f"{src}\n  serve to first /health 200: median {statistics.median(times):.2f} s "
              f"(min {min(times):.2f}, max {max(times):.2f}, {args.runs} runs)")
        for label in sorted({role for _, rss in runs for role in rss}):
            values = [rss[label] for _, rss in runs if label in rss]
            print(f"  {label}: RSS median {statistics.median(v[0] for v in values) / 1024:.0f} MiB, "
                  f"PSS median {statistics.median(v[1] for v in values) / 1024:.0f} MiB")
        for index, name in enumerate(("RSS", "PSS")):
            totals = [sum(v[index] for v in rss.values()) for _, rss in runs]
            print(f"  {name} of the whole tree: median {statistics.median(totals) / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
