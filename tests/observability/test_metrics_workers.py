"""Metrics of several workers (``serve --workers N``): one scrape adds up every worker's files.
Counters stay after a worker goes; its gauges go with it, whether it stopped (``close``) or was
killed (forgotten at the next scrape). Real processes in Prometheus' multiprocess mode, which
its client chooses from the environment when it is imported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

_WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from switchyard.observability.metrics import Metrics

    metrics = Metrics(Path(sys.argv[1]))
    metrics.observe("chat", "fake", "chat", 200, 0.01, 3, 5)
    metrics.in_flight_for("chat").inc()
    metrics.cooling_down_changed("fake", sys.argv[2] == "cooling")
    print("ready", flush=True)
    sys.stdin.read()
    metrics.close()
""")

_SCRAPE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from switchyard.observability.metrics import Metrics

    sys.stdout.write(Metrics(Path(sys.argv[1])).render().decode())
""")


def _env(directory: Path) -> dict[str, str]:
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}


def _scrape(directory: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _SCRAPE, str(directory)], env=_env(directory), capture_output=True,
                         text=True, timeout=60, check=True).stdout
    samples = {}
    for line in out.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_one_scrape_adds_up_the_workers_and_forgets_the_gauges_of_those_gone(tmp_path: Path) -> None:
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), state], env=_env(tmp_path),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for state in ("cooling", "fine")]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
        requests = 'switchyard_requests_total{endpoint="chat",model="chat",provider="fake",status="200"}'
        in_flight = 'switchyard_requests_in_flight{model="chat"}'
        cooling = 'switchyard_upstream_cooling_down{provider="fake"}'
        tokens = 'switchyard_tokens_total{model="chat",provider="fake",type="completion"}'

        both = _scrape(tmp_path)
        assert both[requests] == 2.0 and both[tokens] == 10.0
        assert both[in_flight] == 2.0  # the workers alive, added up
        assert both[cooling] == 1.0  # one of them sees it cooling down

        workers[0].send_signal(signal.SIGKILL)  # no close: its gauges linger until a scrape sees it gone
        workers[0].wait(10)
        one = _scrape(tmp_path)
        assert one[requests] == 2.0  # what it counted stays counted
        assert one[in_flight] == 1.0
        assert one[cooling] == 0.0

        workers[1].communicate("", timeout=30)  # a clean stop: close() takes its gauges
        assert workers[1].returncode == 0
        none = _scrape(tmp_path)
        assert none[requests] == 2.0
        assert in_flight not in none and cooling not in none
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(10)
            for stream in (worker.stdin, worker.stdout):
                if stream is not None:
                    stream.close()
