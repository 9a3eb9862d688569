"""Idle RSS and cold start of `switchyard serve` with the web console never opened: two source
trees (the one before the console, and this one), run alternately on the same machine.

    git archive <base-commit> src | tar -x -C /tmp/base
    .venv/bin/python bench/console_idle.py --base /tmp/base/src --head src --runs 5

Each run: spawn the server (one worker, auth on, no models), time spawn → first 200 on /health
(wall, and the CPU the process spent until then: on a busy machine the CPU is the steadier figure),
make one request (GET /v1/models with the key), wait 2 s, read the RSS of the process tree. The
medians and the head/base ratios are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import free_port, tree_cpu_s, tree_rss_mb

KEY = "sk-bench-console-idle-0123456789"


def _status(port: int, path: str, key: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def one_run(src: Path) -> tuple[float, float, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "PYTHONPATH": str(src.resolve()), "SWITCHYARD_BUNDLED_MODELS": "off"}
        argv = [sys.executable, "-m", "switchyard", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--data-dir", data, "--workers", "1", "--api-key", KEY]
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while _status(port, "/health") != 200:
                if proc.poll() is not None or time.perf_counter() - started > 30:
                    raise RuntimeError(f"server from {src} did not start")
                time.sleep(0.005)
            cold = time.perf_counter() - started
            cpu = tree_cpu_s(proc.pid)  # CPU spent starting: far less sensitive to a busy machine than wall time
            assert _status(port, "/v1/models", KEY) == 200
            time.sleep(2.0)
            return cold, cpu, tree_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(15)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--head", type=Path, default=Path("src"))
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {"base": [], "head": []}
    for i in range(args.runs):
        for name in ("base", "head") if i % 2 == 0 else ("head", "base"):
            results[name].append(one_run(getattr(args, name)))
            cold, cpu, rss = results[name][-1]
            print(f"run {i} {name}: cold {cold:.3f} s ({cpu:.3f} s CPU), RSS {rss:.1f} MB", flush=True)
    med = {n: [statistics.median(x[j] for x in r) for j in range(3)] for n, r in results.items()}
    print(f"\n| Figure (median of {args.runs}, alternated) | before the console | with the console, never opened "
          "| ratio |")
    print("|---|---:|---:|---:|")
    print(f"| Cold start: spawn → first 200 on /health (s) | {med['base'][0]:.3f} | {med['head'][0]:.3f} | "
          f"{med['head'][0] / med['base'][0]:.3f} |")
    print(f"| Cold start: CPU (user+sys) spent until then (s) | {med['base'][1]:.3f} | {med['head'][1]:.3f} | "
          f"{med['head'][1] / med['base'][1]:.3f} |")
    print(f"| Idle RSS after start + 1 request (MB) | {med['base'][2]:.1f} | {med['head'][2]:.1f} | "
          f"{med['head'][2] / med['base'][2]:.3f} |")


if __name__ == "__main__":
    main()
