"""One full benchmark run: direct vs. Switchyard vs. LiteLLM, on this machine.

Starts the fake upstream, measures it directly, then each gateway in turn
(never two at once), and writes ``bench/RESULTS.md`` with the target figures as
ratios from this one run.

  .venv/bin/python bench/run.py                       # full run (~4 min + LiteLLM install once)
  .venv/bin/python bench/run.py --quick               # smoke run, ~2 s per workload
  .venv/bin/python bench/run.py --only direct,litellm --out /tmp/RESULTS.md

LiteLLM is installed on first use into ``bench/.venvs/litellm`` (gitignored).
Logs, configs and the raw JSON of each run go to ``bench/out/`` (gitignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
LITELLM_VENV = BENCH_DIR / ".venvs" / "litellm"

sys.path.insert(0, str(BENCH_DIR))
import loadgen  # noqa: E402

MODEL = "bench-model"
API_KEY = "sk-bench-key"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# Targets (Switchyard): see the brief in bench/README.md.
TARGET_THROUGHPUT_X = 15.0
TARGET_ADDED_P50_MS = 0.5
TARGET_CPU_CHUNK_X = 15.0
TARGET_IDLE_RSS_MB = 80.0
TARGET_COLD_START_S = 1.5

ALL_TARGETS = ("direct", "floor", "switchyard", "litellm")


@dataclass(frozen=True)
class Workload:
    name: str
    stream: bool
    concurrency: int
    chunks: int

    @property
    def label(self) -> str:
        kind = f"stream {self.chunks} chunks" if self.stream else "non-stream"
        return f"{kind}, c={self.concurrency}"


WORKLOADS = (
    Workload("nonstream_c1", False, 1, 20),
    Workload("nonstream_c64", False, 64, 20),
    Workload("stream20_c1", True, 1, 20),
    Workload("stream20_c64", True, 64, 20),
    Workload("stream200_c1", True, 1, 200),
)


@dataclass
class WorkloadResult:
    workload: str
    label: str
    load: dict[str, Any]
    cpu_s: float | None = None
    steal_pct: float | None = None  # of the host's CPU time over the window, taken by its hypervisor

    @property
    def chunks(self) -> int:
        return int(self.load.get("chunks_total") or 0)

    @property
    def ok(self) -> int:
        return int(self.load.get("ok") or 0)

    @property
    def responses(self) -> int:
        """200s completed in the CPU-sampling span (window start through drain)."""
        return int(self.load.get("responses_total") or 0)


@dataclass
class TargetResult:
    name: str
    ok: bool = False
    error: str | None = None
    log_tail: str | None = None
    command: str | None = None
    cold_start_s: float | None = None
    idle_rss_mb: float | None = None
    idle_pss_mb: float | None = None
    processes: int | None = None
    workloads: dict[str, WorkloadResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def wl(self, name: str) -> WorkloadResult | None:
        return self.workloads.get(name)

    def rps(self, name: str) -> float | None:
        w = self.wl(name)
        return float(w.load["rps"]) if w and w.ok else None

    def p50(self, name: str) -> float | None:
        w = self.wl(name)
        return float(w.load["latency_ms"]["p50"]) if w and w.ok else None

    def cpu_per_chunk_ms(self) -> float | None:
        """Gateway CPU over the stream workloads / SSE chunks relayed in them.

        A stream workload with errors is left out (its CPU went partly into failures)."""
        cpu = 0.0
        chunks = 0
        for w in self.workloads.values():
            if w.load.get("stream") and w.cpu_s is not None and not w.load.get("errors"):
                cpu += w.cpu_s
                chunks += w.chunks
        return cpu / chunks * 1000.0 if chunks else None

    def stream_workloads_with_errors(self) -> list[str]:
        return [w.workload for w in self.workloads.values() if w.load.get("stream") and w.load.get("errors")]


# --------------------------------------------------------------------- /proc


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, own+reaped-children CPU seconds) from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw.rsplit(")", 1)[1].split()
    ppid = int(rest[1])
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return ppid, (utime + stime + cutime + cstime) / CLK_TCK


def host_cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks of the whole machine, from the ``cpu`` line of /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return fields[7], sum(fields)


def machine_speed_ms(rounds: int = 5) -> float:
    """Milliseconds for a fixed pure-Python workload (dicts, strings, ints), the best of ``rounds``.

    The machine is a shared VM whose speed drifts by 2x over hours with no steal time to show for
    it; this figure, taken at the start and end of a run, says how fast it was, so that runs taken
    at different times can be compared (lower is faster)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        d: dict[str, int] = {}
        for i in range(200_000):
            k = f"k{i % 1000}"
            d[k] = d.get(k, 0) + i
        best = min(best, time.perf_counter() - started)
    return best * 1000


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _proc_stat(int(entry.name))
        if st is not None:
            children.setdefault(st[0], []).append(int(entry.name))
    out = [root]
    i = 0
    while i < len(out):
        out.extend(children.get(out[i], ()))
        i += 1
    return out


def tree_cpu_s(root: int) -> float:
    """user+sys seconds of the process tree (live processes plus reaped children)."""
    total = 0.0
    for pid in tree_pids(root):
        st = _proc_stat(pid)
        if st is not None:
            total += st[1]
    return total


def tree_pss_mb(root: int) -> float:
    """The memory a process tree takes: the sum of its processes' PSS, which splits a page shared
    by several of them (a forked worker and its supervisor) between them, where RSS counts it in
    each."""
    total = 0
    for pid in tree_pids(root):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
                break
    return total / (1024 * 1024)


def tree_rss_mb(root: int) -> float:
    total = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            continue
        total += int(fields[1]) * PAGE
    return total / (1024 * 1024)


# ----------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return None
    finally:
        conn.close()


def tail(path: Path, lines: int = 40, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    out = "\n".join(text.splitlines()[-lines:])
    return out[-limit:]


class Service:
    """A spawned server process (own session/process group) with its log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, health: str, log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.health = health
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float) -> float:
        """Spawn and wait for a 200 on the health path; return seconds from spawn."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as logf:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO_DIR,
                start_new_session=True,
            )
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode} before becoming healthy")
            if http_get_status(self.port, self.health, timeout=1.0) == 200:
                return time.perf_counter() - t0
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.name} not healthy on :{self.port}{self.health} after {timeout:.0f} s")
            time.sleep(0.01)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        else:
            # The leader is gone; make sure nothing it started lingers in its group.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc = None


# ---------------------------------------------------------------- LiteLLM venv


class LiteLLMInstaller:
    """Creates bench/.venvs/litellm with ``pip install 'litellm[proxy]'`` in a background thread."""

    def __init__(self, venv: Path, log: Path) -> None:
        self.venv = venv
        self.log = log
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    @property
    def binary(self) -> Path:
        return self.venv / "bin" / "litellm"

    def installed(self) -> bool:
        return self.binary.exists() and (self.venv / "bin" / "python").exists()

    def start(self) -> None:
        if self.installed():
            return
        self._thread = threading.Thread(target=self._install, name="litellm-install", daemon=True)
        self._thread.start()

    def _install(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        python3 = shutil.which("python3") or sys.executable
        steps = [
            [python3, "-m", "venv", str(self.venv)],
            [str(self.venv / "bin" / "python"), "-m", "pip", "install", "--upgrade", "pip"],
            [str(self.venv / "bin" / "python"), "-m", "pip", "install", "litellm[proxy]"],
        ]
        with self.log.open("ab") as logf:
            for argv in steps:
                logf.write(f"$ {shlex.join(argv)}\n".encode())
                logf.flush()
                rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT).returncode
                if rc != 0:
                    self.error = f"`{shlex.join(argv)}` failed with exit code {rc} (log: {self.log})"
                    return

    def wait(self) -> None:
        if self._thread is not None:
            if self._thread.is_alive():
                print("  waiting for the LiteLLM install to finish (it must not overlap a measurement) ...")
            self._thread.join()
        if self.error is None and not self.installed():
            self.error = f"LiteLLM is not installed in {self.venv} (log: {self.log})"

    def version(self) -> str | None:
        py = self.venv / "bin" / "python"
        if not py.exists():
            return None
        r = subprocess.run(
            [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
        )
        return r.stdout.strip() or None


# ------------------------------------------------------------------ measuring


@dataclass
class Settings:
    duration: float
    warmup: float
    settle: float
    timeout: float


def run_workloads(url: str, api_key: str | None, pid: int | None, s: Settings, res: TargetResult) -> None:
    for w in WORKLOADS:
        cfg = loadgen.LoadConfig(
            url=url,
            concurrency=w.concurrency,
            duration=s.duration,
            stream=w.stream,
            chunks=w.chunks,
            api_key=api_key,
            model=MODEL,
            include_usage=True,
            timeout=s.timeout,
            warmup=s.warmup,
        )
        cpu0: list[float] = []
        host0: list[tuple[int, int] | None] = []

        def on_start(cpu0: list[float] = cpu0, host0: list[tuple[int, int] | None] = host0) -> None:
            host0.append(host_cpu_ticks())
            if pid is not None:
                cpu0.append(tree_cpu_s(pid))

        load = loadgen.run_load_sync(cfg, on_start).to_dict()
        cpu: float | None = None
        if pid is not None and cpu0:
            time.sleep(0.25)  # let deferred work for the last requests (usage writes) land in the window
            cpu = tree_cpu_s(pid) - cpu0[0]
        host1 = host_cpu_ticks()
        steal = None
        if host0 and host0[0] is not None and host1 is not None and host1[1] > host0[0][1]:
            steal = (host1[0] - host0[0][0]) / (host1[1] - host0[0][1]) * 100
        wr = WorkloadResult(w.name, w.label, load, cpu, steal)
        res.workloads[w.name] = wr
        extra = (
            f", TTFC p50 {load['ttfc_ms']['p50']:.2f} ms, {load['chunks_per_response']} chunks/resp" if w.stream else ""
        )
        cpu_txt = f", CPU {cpu:.2f} s" if cpu is not None else ""
        cpu_txt += f", steal {steal:.1f}%" if steal is not None else ""
        print(
            f"  {w.name:<14} {load['rps']:>10.1f} rps  p50 {load['latency_ms']['p50']:.3f} ms"
            f"  p99 {load['latency_ms']['p99']:.3f} ms  errors {load['errors']}{extra}{cpu_txt}",
            flush=True,
        )
        if load["errors"]:
            res.notes.append(f"{w.name}: {load['errors']} errors, e.g. {load['error_samples'][:2]}")


def validate(url: str, api_key: str | None, timeout: float, stream: bool) -> str | None:
    """One request like the load sends; returns an error message or None."""
    cfg = loadgen.LoadConfig(url=url, stream=stream, chunks=20, api_key=api_key, model=MODEL, timeout=timeout)
    try:
        status, body = loadgen.request_once(cfg)
    except (OSError, TimeoutError) as e:
        return f"{'stream' if stream else 'non-stream'} request failed: {e!r}"
    if status != 200:
        return f"{'stream' if stream else 'non-stream'} request: HTTP {status}: {body[:500]!r}"
    if not stream:
        try:
            doc = json.loads(body)
            content = doc["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return f"non-stream response is not a chat.completion: {body[:500]!r}"
        if not content or "usage" not in doc:
            return f"non-stream response lacks content or usage: {body[:500]!r}"
        return None
    events = [ln[5:].strip() for ln in body.decode(errors="replace").splitlines() if ln.startswith("data:")]
    if not events or events[-1] != "[DONE]":
        return f"stream did not end with data: [DONE]: {body[-500:]!r}"
    content = 0
    for ev in events[:-1]:
        try:
            doc = json.loads(ev)
        except ValueError:
            return f"stream event is not JSON: {ev[:300]!r}"
        for ch in doc.get("choices") or []:
            if (ch.get("delta") or {}).get("content"):
                content += 1
    if content != 20:
        return f"stream relayed {content} content chunks, expected 20"
    return None


def measure_gateway(
    name: str,
    argv: list[str],
    env: dict[str, str],
    port: int,
    health: str,
    start_timeout: float,
    s: Settings,
    log: Path,
    api_key: str = API_KEY,
) -> TargetResult:
    res = TargetResult(name, command=shlex.join(argv))
    svc = Service(name, argv, env, port, health, log)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        try:
            res.cold_start_s = svc.start(start_timeout)
        except (RuntimeError, OSError) as e:
            res.error = f"failed to start: {e}"
            return res
        print(f"  cold start {res.cold_start_s:.3f} s (GET {health})", flush=True)
        err = validate(url, api_key, s.timeout, stream=False)  # the one warm-up request
        if err:
            res.error = f"warm-up request failed: {err}"
            return res
        time.sleep(s.settle)
        res.idle_rss_mb = tree_rss_mb(svc.pid)
        res.idle_pss_mb = tree_pss_mb(svc.pid)
        res.processes = len(tree_pids(svc.pid))
        print(f"  idle RSS {res.idle_rss_mb:.1f} MB, PSS {res.idle_pss_mb:.1f} MB over {res.processes} process(es)",
              flush=True)
        err = validate(url, api_key, s.timeout, stream=True)
        if err:
            res.error = f"stream check failed: {err}"
            return res
        run_workloads(url, api_key, svc.pid, s, res)
        res.ok = True
        if svc.proc is not None and svc.proc.poll() is not None:
            res.ok = False
            res.error = f"exited during the run with code {svc.proc.returncode}"
        return res
    finally:
        if not res.ok:
            res.log_tail = tail(log)
        svc.stop()


def switchyard_binary(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    venv_bin = REPO_DIR / ".venv" / "bin" / "switchyard"
    if venv_bin.exists():
        return str(venv_bin)
    return shutil.which("switchyard")


def governed_key(binary: str, data_dir: Path, store: Sequence[str] = ()) -> str:
    """A key with rate limits and a budget that the run never reaches, so that every request goes
    through the limiter and the budget ledger (reserve, settle) without being refused. ``store``:
    more options naming the store (``--database-url URL``)."""
    out = subprocess.run(
        [binary, "keys", "create", "bench-governed", "--data-dir", str(data_dir), *store, "--rpm", "1000000000",
         "--tpm", "1000000000000", "--max-parallel", "100000", "--budget", "1000000000", "--budget-period", "total"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    found = re.search(r"sk-sy-[A-Za-z0-9_-]+", out)
    if found is None:
        raise RuntimeError(f"no key in the output of `switchyard keys create`: {out!r}")
    return found.group(0)


def measure_switchyard(
    upstream_port: int, s: Settings, workdir: Path, binary: str | None, governance: bool = False
) -> TargetResult:
    if binary is None:
        return TargetResult("switchyard", error="no `switchyard` binary found (project venv or PATH)")
    cfg_path = workdir / "switchyard.yaml"
    governed = (
        "    input_cost_per_1m: 0.15\n"
        "    output_cost_per_1m: 0.60\n"
        "    rate_limits: {rpm: 1000000000, tpm: 1000000000000}\n"
    ) if governance else ""
    cfg_path.write_text(
        "providers:\n"
        "  fake:\n"
        "    type: openai\n"
        f"    base_url: http://127.0.0.1:{upstream_port}/v1\n"
        "models:\n"
        f"  - alias: {MODEL}\n"
        "    provider: fake\n"
        f"    model: {MODEL}\n" + governed
    )
    data_dir = workdir / "switchyard-data"
    data_dir.mkdir()
    api_key = governed_key(binary, data_dir) if governance else API_KEY
    port = free_port()
    argv = [
        binary,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(cfg_path),
        "--data-dir",
        str(data_dir),
        "--workers",
        "1",
        "--api-key",
        API_KEY,
    ]
    return measure_gateway(
        "switchyard", argv, dict(os.environ), port, "/health", 30.0, s, OUT_DIR / "logs" / "switchyard.log",
        api_key=api_key,
    )


def measure_litellm(upstream_port: int, s: Settings, workdir: Path, installer: LiteLLMInstaller) -> TargetResult:
    installer.wait()
    if installer.error:
        return TargetResult("litellm", error=installer.error, log_tail=tail(installer.log))
    cfg_path = workdir / "litellm.yaml"
    cfg_path.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: dummy\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  callbacks: []\n"
        "  success_callback: []\n"
        "  failure_callback: []\n"
        "general_settings:\n"
        f"  master_key: {API_KEY}\n"
    )
    port = free_port()
    argv = [
        str(installer.binary),
        "--config",
        str(cfg_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{installer.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # don't fetch the cost map from the network at start
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
        }
    )
    return measure_gateway("litellm", argv, env, port, "/health/liveliness", 180.0, s, OUT_DIR / "logs" / "litellm.log")


def measure_floor(upstream_port: int, s: Settings) -> TargetResult:
    """The stack's floor (``bench/floor_app.py``): uvicorn + the upstream pool forwarding, nothing else."""
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH_DIR), "floor_app:app", "--host", "127.0.0.1",
        "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]
    env = dict(os.environ, FLOOR_UPSTREAM=f"http://127.0.0.1:{upstream_port}")
    return measure_gateway("floor", argv, env, port, "/health", 30.0, s, OUT_DIR / "logs" / "floor.log")


def measure_direct(upstream: Service, cold_start: float, s: Settings) -> TargetResult:
    res = TargetResult("direct", command=shlex.join(upstream.argv), cold_start_s=cold_start)
    url = f"http://127.0.0.1:{upstream.port}/v1/chat/completions"
    for stream in (False, True):
        err = validate(url, None, s.timeout, stream=stream)
        if err:
            res.error = f"fake upstream check failed: {err}"
            return res
    time.sleep(min(s.settle, 1.0))
    res.idle_rss_mb = tree_rss_mb(upstream.pid)
    res.idle_pss_mb = tree_pss_mb(upstream.pid)
    # CPU here is the fake upstream's own, for reference.
    run_workloads(url, None, upstream.pid, s, res)
    res.ok = True
    return res


# -------------------------------------------------------------------- report


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if v is None else fmt.format(v)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**PASS**" if ok else "**FAIL**")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0.0) else None


def _excluded(*targets: TargetResult | None) -> str:
    parts = [
        f"{t.name}: {', '.join(bad)}" for t in targets if t is not None and (bad := t.stream_workloads_with_errors())
    ]
    return f" (left out for errors: {'; '.join(parts)})" if parts else ""


def summarize(results: dict[str, TargetResult]) -> list[dict[str, str]]:
    d, sy, ll = results.get("direct"), results.get("switchyard"), results.get("litellm")
    fl = results.get("floor")

    def val(r: TargetResult | None, f: Callable[[TargetResult], float | None]) -> float | None:
        return f(r) if r is not None and r.ok else None

    rows: list[dict[str, str]] = []

    rps = {k: val(r, lambda t: t.rps("nonstream_c64")) for k, r in (("d", d), ("sy", sy), ("ll", ll))}
    x = _ratio(rps["sy"], rps["ll"])
    rows.append(
        {
            "figure": "Throughput, non-stream, c=64 (req/s)",
            "direct": _f(rps["d"], "{:,.0f}"),
            "switchyard": _f(rps["sy"], "{:,.0f}"),
            "litellm": _f(rps["ll"], "{:,.0f}"),
            "value": f"Switchyard / LiteLLM = {_f(x, '{:.1f}x')}",
            "target": f"≥ {TARGET_THROUGHPUT_X:.0f}x",
            "result": _verdict(None if x is None else x >= TARGET_THROUGHPUT_X),
        }
    )

    p50 = {k: val(r, lambda t: t.p50("nonstream_c1")) for k, r in (("d", d), ("sy", sy), ("ll", ll))}
    add_sy = None if p50["sy"] is None or p50["d"] is None else p50["sy"] - p50["d"]
    add_ll = None if p50["ll"] is None or p50["d"] is None else p50["ll"] - p50["d"]
    rows.append(
        {
            "figure": "Added p50 latency over direct, non-stream, c=1 (ms)",
            "direct": f"p50 {_f(p50['d'], '{:.3f}')}",
            "switchyard": _f(add_sy, "{:+.3f}"),
            "litellm": _f(add_ll, "{:+.3f}"),
            "value": f"Switchyard {_f(add_sy, '{:+.3f} ms')}; LiteLLM / Switchyard = "
            f"{_f(_ratio(add_ll, add_sy), '{:.1f}x')}",
            "target": f"≤ {TARGET_ADDED_P50_MS} ms",
            "result": _verdict(None if add_sy is None else add_sy <= TARGET_ADDED_P50_MS),
        }
    )

    p50_fl = val(fl, lambda t: t.p50("nonstream_c1"))
    add_fl = None if p50_fl is None or p50["d"] is None else p50_fl - p50["d"]
    own = None if add_sy is None or add_fl is None else add_sy - add_fl
    rows.append(
        {
            "figure": "Of which the stack's floor (bare uvicorn + upstream pool pass-through, `floor_app.py`)",
            "direct": f"floor {_f(add_fl, '{:+.3f}')}",
            "switchyard": _f(own, "{:+.3f}"),
            "litellm": "—",
            "value": f"floor {_f(add_fl, '{:+.3f} ms')}; Switchyard's own work {_f(own, '{:+.3f} ms')}",
            "target": "reference, no target",
            "result": "n/a",
        }
    )

    cpc = {k: val(r, lambda t: t.cpu_per_chunk_ms()) for k, r in (("d", d), ("sy", sy), ("ll", ll))}
    xc = _ratio(cpc["ll"], cpc["sy"])
    rows.append(
        {
            "figure": "Relay CPU per SSE chunk, stream workloads (ms CPU / chunk)",
            "direct": f"upstream {_f(cpc['d'], '{:.4f}')}",
            "switchyard": _f(cpc["sy"], "{:.4f}"),
            "litellm": _f(cpc["ll"], "{:.4f}"),
            "value": f"LiteLLM / Switchyard = {_f(xc, '{:.1f}x')}" + _excluded(sy, ll),
            "target": f"Switchyard ≤ 1/{TARGET_CPU_CHUNK_X:.0f} of LiteLLM",
            "result": _verdict(None if xc is None else xc >= TARGET_CPU_CHUNK_X),
        }
    )

    rss = {k: val(r, lambda t: t.idle_rss_mb) for k, r in (("d", d), ("sy", sy), ("ll", ll))}
    pss = {k: val(r, lambda t: t.idle_pss_mb) for k, r in (("d", d), ("sy", sy), ("ll", ll))}
    rows.append(
        {
            "figure": "Idle memory after start + 1 request, process tree: PSS (RSS) (MB)",
            "direct": f"upstream {_f(pss['d'], '{:.1f}')} ({_f(rss['d'], '{:.1f}')})",
            "switchyard": f"{_f(pss['sy'], '{:.1f}')} ({_f(rss['sy'], '{:.1f}')})",
            "litellm": f"{_f(pss['ll'], '{:.1f}')} ({_f(rss['ll'], '{:.1f}')})",
            "value": f"Switchyard {_f(pss['sy'], '{:.1f} MB')} PSS; LiteLLM / Switchyard = "
            f"{_f(_ratio(pss['ll'], pss['sy']), '{:.1f}x')}",
            "target": f"≤ {TARGET_IDLE_RSS_MB:.0f} MB",
            "result": _verdict(None if pss["sy"] is None else pss["sy"] <= TARGET_IDLE_RSS_MB),
        }
    )

    cs = {k: val(r, lambda t: t.cold_start_s) for k, r in (("d", d), ("sy", sy), ("ll", ll))}
    rows.append(
        {
            "figure": "Cold start: spawn → first 200 on health (s)",
            "direct": f"upstream {_f(cs['d'], '{:.3f}')}",
            "switchyard": _f(cs["sy"], "{:.3f}"),
            "litellm": _f(cs["ll"], "{:.3f}"),
            "value": f"Switchyard {_f(cs['sy'], '{:.3f} s')}; LiteLLM / Switchyard = "
            f"{_f(_ratio(cs['ll'], cs['sy']), '{:.1f}x')}",
            "target": f"≤ {TARGET_COLD_START_S} s",
            "result": _verdict(None if cs["sy"] is None else cs["sy"] <= TARGET_COLD_START_S),
        }
    )
    return rows


def git_describe() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        if rev.returncode != 0:
            return "no git commit"
        dirty = subprocess.run(
            ["git", "-C", str(REPO_DIR), "status", "--porcelain", "--", "src"], capture_output=True, text=True
        )
        return rev.stdout.strip() + (" + uncommitted changes in src/" if dirty.stdout.strip() else "")
    except OSError:
        return "git unavailable"


def switchyard_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        v = version("switchyard")
    except PackageNotFoundError:
        v = "not installed"
    return f"{v} ({git_describe()})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_report(
    path: Path,
    results: dict[str, TargetResult],
    meta: dict[str, str],
    quick: bool,
    s: Settings,
) -> None:
    rows = summarize(results)
    order = [n for n in ALL_TARGETS if n in results]
    L: list[str] = ["# Benchmark results: direct vs. Switchyard vs. LiteLLM", ""]
    if quick:
        L += [
            "> **Quick smoke run** (`--quick`): a few seconds per workload. It checks that the harness",
            "> works; the numbers are noisy and are not the reference result. Run without `--quick` for that.",
            "",
        ]
    L += [
        f"- Date: {meta['date']}",
        f"- Command: `{meta['command']}`",
        f"- Machine: `nproc` = {meta['nproc']}, {meta['cpu']}, Linux {meta['kernel']}",
        f"- Machine speed (`machine_speed_ms`, a fixed pure-Python loop; lower is faster): {meta.get('speed', '—')}",
        f"- Python: {meta['python']}",
        f"- Switchyard: {meta['switchyard']}",
        f"- LiteLLM: {meta['litellm']}",
        f"- Per workload: {s.warmup:g} s warm-up (unmeasured), then {s.duration:g} s measured; "
        f"idle RSS read {s.settle:g} s after the warm-up request",
        "",
        "## Targets",
        "",
        "All figures come from this one run, gateways measured one after the other against the same fake upstream.",
        "",
        "| Figure | Direct | Switchyard | LiteLLM | Value / ratio | Target | Result |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for row in rows:
        L.append(
            f"| {row['figure']} | {row['direct']} | {row['switchyard']} | {row['litellm']} | {row['value']} "
            f"| {row['target']} | {row['result']} |"
        )
    L += ["", "## Status", ""]
    for n in order:
        r = results[n]
        L.append(f"- **{n}**: {'ok' if r.ok else 'FAILED — ' + (r.error or 'unknown error')}")
        if r.command:
            L.append(f"  - command: `{r.command}`")
        if r.processes is not None:
            L.append(f"  - process tree at idle: {r.processes} process(es)")
        for note in r.notes:
            L.append(f"  - note: {note}")
    L += ["", "## Workloads", ""]
    L += [
        "| Target | Workload | req/s | p50 ms | p90 ms | p99 ms | TTFC p50 ms | chunks/resp | errors "
        "| process CPU s | CPU ms / req | CPU ms / chunk | host steal % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in order:
        r = results[n]
        for w in r.workloads.values():
            ld = w.load
            ttfc = ld["ttfc_ms"]["p50"] if ld.get("ttfc_ms") else None
            per_req = w.cpu_s / w.responses * 1000 if w.cpu_s is not None and w.responses else None
            per_chunk = w.cpu_s / w.chunks * 1000 if w.cpu_s is not None and w.chunks else None
            L.append(
                f"| {n} | {w.label} | {ld['rps']:,.1f} | {ld['latency_ms']['p50']:.3f} | "
                f"{ld['latency_ms']['p90']:.3f} | {ld['latency_ms']['p99']:.3f} | {_f(ttfc, '{:.3f}')} | "
                f"{_f(ld.get('chunks_per_response'), '{:g}')} | {ld['errors']} | {_f(w.cpu_s, '{:.2f}')} | "
                f"{_f(per_req, '{:.3f}')} | {_f(per_chunk, '{:.4f}')} | {_f(w.steal_pct, '{:.1f}')} |"
            )
    failed = [results[n] for n in order if not results[n].ok and results[n].log_tail]
    if failed:
        L += ["", "## Failure logs", ""]
        for r in failed:
            L += [f"### {r.name}", "", f"{r.error}", "", "```", (r.log_tail or "").rstrip(), "```", ""]
    L += [
        "",
        "## Method",
        "",
        "- Fake upstream: `bench/fake_upstream.py` (uvloop + httptools, keep-alive). Stream responses send one",
        "  SSE event per write, yielding to the event loop between events; 20 or 200 content chunks, then a",
        "  usage chunk, then `data: [DONE]`, with chunked transfer encoding.",
        "- Load: `bench/loadgen.py`, in the orchestrator process: one keep-alive HTTP/1.1 connection per",
        "  concurrency slot, closed loop. Streams ask for `stream_options.include_usage`. The measured window",
        "  opens after the warm-up while the load keeps running; req/s and latencies cover the responses",
        "  completed inside it. After it no request starts and the in-flight ones drain.",
        "- Gateways run 1 worker with auth on (Bearer key); Switchyard also records usage (its data dir is a",
        "  fresh temp dir). LiteLLM runs with its master key, no database, callbacks off, local cost map, and",
        "  `LITELLM_LOG=ERROR`; its health path is `/health/liveliness` (its `/health` calls the models).",
        "- Added latency: gateway p50 - direct p50, both non-stream at c=1.",
        "- Floor: `bench/floor_app.py`, a bare ASGI app on Switchyard's own server and client (uvicorn with",
        "  httptools and uvloop, the keep-alive pool of `providers/_http1.py`) that checks a Bearer key is",
        "  present and forwards. Its added latency is what any gateway on this stack pays before doing any work.",
        "- CPU: user+sys of the gateway's process tree from `/proc/<pid>/stat` (utime+stime of each live process",
        "  plus cutime+cstime of reaped children), sampled when the window opens and 0.25 s after the drain.",
        "  CPU per chunk = CPU over all three stream workloads / SSE `data:` events the client received over",
        "  the same span (`[DONE]` excluded, the usage chunk included); CPU per request likewise.",
        "- Host steal %: the share of the machine's CPU time its hypervisor gave to other guests during the",
        "  window (`steal` of the `cpu` line in /proc/stat). This machine is a shared VM: a run with steal",
        "  well above 0 was measured on a contended host, and its latencies are slower for every target.",
        "- Idle memory: sum of PSS over the process tree (RSS in brackets), read after start + one non-stream "
        "request + settle. PSS splits a page shared by several processes (`serve`'s forked worker and its "
        "supervisor) between them; RSS counts it in each, so a tree's RSS sum overstates what it takes.",
        "- Cold start: from `Popen` of the gateway command to the first 200 on its health path (polled every 10 ms).",
        "- The machine has 2 cores shared by the load generator, the fake upstream and the gateway, so",
        "  gateway throughput is a lower bound; direct numbers show the harness ceiling.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    # the sections bench/responses.py and bench/engines.py write (in that order) are theirs: keep them
    marks = ("<!-- responses: written by bench/responses.py -->", "<!-- local engines: written by bench/engines.py -->",
             "<!-- chaos soak: written by bench/chaos.py -->")
    old = path.read_text() if path.exists() else ""
    found = [old.index(mark) for mark in marks if mark in old]
    tail = "\n" + old[min(found):] if found else ""
    path.write_text("\n".join(L) + tail)


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short smoke run (~2 s per workload)")
    ap.add_argument("--only", default=",".join(ALL_TARGETS), help="comma list of direct,floor,switchyard,litellm")
    ap.add_argument("--out", default=str(BENCH_DIR / "RESULTS.md"), help="report path")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per workload (default 10)")
    ap.add_argument("--warmup", type=float, default=None, help="unmeasured seconds before each workload")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds before reading idle RSS")
    ap.add_argument("--switchyard-bin", default=None, help="switchyard executable (default: project venv)")
    ap.add_argument("--litellm-venv", default=str(LITELLM_VENV), help="venv for LiteLLM (created if missing)")
    ap.add_argument("--governance", action="store_true",
                    help="Switchyard serves through a key with rate limits and a budget, and a model with "
                         "prices and its own limits: every request is limited, reserved and settled")
    args = ap.parse_args(argv)

    only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = [t for t in only if t not in ALL_TARGETS]
    if unknown or not only:
        ap.error(f"--only takes a comma list of {','.join(ALL_TARGETS)}; got {args.only!r}")
    s = Settings(
        duration=args.duration if args.duration is not None else (2.0 if args.quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0),
        settle=args.settle,
        timeout=60.0,
    )
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    command = shlex.join(
        [os.path.relpath(sys.executable, REPO_DIR) if sys.executable.startswith(str(REPO_DIR)) else sys.executable]
        + [os.path.relpath(__file__, REPO_DIR)]
        + (argv if argv is not None else sys.argv[1:])
    )

    # The LiteLLM install takes minutes: start it first, in the background. It is joined
    # before any measurement so that pip never competes with a workload for the 2 cores.
    installer = LiteLLMInstaller(Path(args.litellm_venv), OUT_DIR / "logs" / "litellm-install.log")
    if "litellm" in only:
        installer.start()

    results: dict[str, TargetResult] = {}
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    up_port = free_port()
    upstream = Service(
        "fake-upstream",
        [sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--host", "127.0.0.1", "--port", str(up_port)],
        dict(os.environ),
        up_port,
        "/health",
        OUT_DIR / "logs" / "fake_upstream.log",
    )
    speed = [machine_speed_ms()]
    try:
        print(f"fake upstream on :{up_port}", flush=True)
        up_start = upstream.start(30.0)
        if "litellm" in only:
            installer.wait()
        for name in ALL_TARGETS:
            if name not in only:
                continue
            print(f"[{name}]", flush=True)
            if name == "direct":
                r = measure_direct(upstream, up_start, s)
            elif name == "floor":
                r = measure_floor(up_port, s)
            elif name == "switchyard":
                r = measure_switchyard(up_port, s, workdir, switchyard_binary(args.switchyard_bin), args.governance)
            else:
                r = measure_litellm(up_port, s, workdir, installer)
            if not r.ok:
                print(f"  FAILED: {r.error}", flush=True)
            results[name] = r
            if upstream.proc is None or upstream.proc.poll() is not None:
                print("fake upstream died; stopping", flush=True)
                break
    finally:
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    speed.append(machine_speed_ms())

    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "speed": f"{speed[0]:.1f} ms at the start, {speed[1]:.1f} ms at the end",
        "python": f"{platform.python_version()} ({sys.executable})",
        "switchyard": switchyard_version() + (
            " — with rate limits and a budget on every request (`--governance`)" if args.governance else ""),
        "litellm": (installer.version() or "not installed") if "litellm" in only else "not run",
    }
    try:
        meta["nproc"] = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or meta["nproc"]
    except OSError:
        pass
    out = Path(args.out)
    write_report(out, results, meta, args.quick, s)
    raw = OUT_DIR / f"results-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    raw.write_text(
        json.dumps(
            {
                "meta": meta,
                "settings": asdict(s),
                "quick": args.quick,
                "results": {k: asdict(v) for k, v in results.items()},
            },
            indent=2,
        )
    )
    print(f"\nwrote {out} (raw: {raw})")
    for row in summarize(results):
        print(f"  {row['result']:>10}  {row['figure']}: {row['value']} (target {row['target']})")
    return 0 if results and all(r.ok for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
