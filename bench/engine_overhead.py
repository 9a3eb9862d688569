"""Single-stream overhead of Switchyard's llama.cpp engine against raw llama-cpp-python, paired.

On a shared machine one run of each side says little (the other load moves by more than the
overhead), so this takes many short rounds. Each round runs, in one process and one after the
other, with the same prompt tokens, ``max_tokens`` and thread count, greedy:

- ``raw``: llama-cpp-python's ``Llama.generate`` (``reset()`` first: the whole prompt evaluated);
- ``engine``: Switchyard's llama.cpp engine (``submit``, tokens by callback from its scheduler
  thread), served as a model is: 8 slots, one stream through the batching scheduler; its prefix
  reuse is off, so it too evaluates the whole prompt every time;
- ``provider``: the whole provider path (``LocalProvider.chat``: the model manager, the chat
  template, the event-loop driver, detokenising, OpenAI JSON) on the same engine settings.

The order rotates every round (raw-engine-provider, engine-provider-raw, ...). Per round and
side: tokens/s (wall) and the process's CPU time (user + sys, all threads) per generated token.
Reported: the median over rounds of each round's ratio raw ÷ ours (so both sides of a ratio met
the same moment's load), its quartiles and range, and the medians of CPU ms per token.

    PYTHONPATH=src .venv/bin/python bench/engine_overhead.py [--rounds 20] [--tokens 128] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to cook. Use many details."}]
Run = Callable[[], int]  # one generation; returns the tokens generated


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 4:
        return min(xs), max(xs)
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def measure(tokens: int, rounds: int, threads: int) -> dict[str, Any]:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from llama_cpp import Llama
    from tests.local.bundled import smollm2_gguf

    from switchyard.core.chat import ChatRequest, GenerationKind
    from switchyard.core.models import Target
    from switchyard.local.engine import SamplingParams
    from switchyard.local.engines.llamacpp import load
    from switchyard.local.engines.transformers import generate_blocking
    from switchyard.local.manager import ManagedModel, ModelManager
    from switchyard.local.provider import LocalProvider
    from switchyard.local.spec import LocalModelSpec

    gguf = str(smollm2_gguf())
    spec = LocalModelSpec(name="smol", engine="llamacpp", source=gguf, context_length=2048, threads=threads,
                          parallel=8, prefix_cache_scope="off")
    engine = load(spec)
    prompt = engine.render_chat(PROMPT)
    raw: Any = Llama(model_path=gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    eos = raw.token_eos()

    def run_raw() -> int:
        raw.reset()
        n = 0
        for tok in raw.generate(prompt, temp=0.0, top_k=1, reset=True):
            if tok == eos:
                break
            n += 1
            if n >= tokens:
                break
        return n

    params = SamplingParams(max_tokens=tokens, temperature=0.0)

    def run_engine() -> int:
        return len(generate_blocking(engine, prompt, params)[0])

    manager = ModelManager([ManagedModel(spec=spec)], 4 << 30)
    provider = LocalProvider(manager)
    target = Target(alias="smol", provider="local", provider_type="local", upstream_model="smol", timeout=600)
    request = ChatRequest(kind=GenerationKind.CHAT, model="smol",
                          body={"model": "smol", "messages": PROMPT, "temperature": 0, "max_tokens": tokens})
    loop = asyncio.new_event_loop()

    def run_provider() -> int:
        result = loop.run_until_complete(provider.chat(request, target))
        return int(result.usage.completion_tokens)

    sides: dict[str, Run] = {"raw": run_raw, "engine": run_engine, "provider": run_provider}
    for fn in sides.values():  # warm-up: load, caches
        fn()
    names = list(sides)
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            n = sides[name]()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            samples[name].append({"tokens": n, "wall_s": wall, "cpu_s": cpu, "tok_s": n / wall,
                                  "cpu_ms_per_token": cpu / n * 1000, "load_1m": os.getloadavg()[0]})
        print(r, {k: round(v[-1]["tok_s"], 1) for k, v in samples.items()}, flush=True)
    loop.run_until_complete(provider.aclose())
    loop.close()
    raw.close()
    engine.close()

    out: dict[str, Any] = {"tokens": tokens, "rounds": rounds, "threads": threads, "prompt_tokens": len(prompt),
                           "samples": samples, "sides": {}}
    for name in names:
        rates = [s["tok_s"] for s in samples[name]]
        cpu = [s["cpu_ms_per_token"] for s in samples[name]]
        out["sides"][name] = {"tok_s_median": statistics.median(rates), "tok_s_min": min(rates),
                              "tok_s_max": max(rates), "cpu_ms_per_token_median": statistics.median(cpu),
                              "cpu_ms_per_token_min": min(cpu), "cpu_ms_per_token_max": max(cpu)}
        if name == "raw":
            continue
        # overhead of one round: raw tokens/s ÷ ours - 1, i.e. ours took that much longer
        over = [a["tok_s"] / b["tok_s"] - 1 for a, b in zip(samples["raw"], samples[name], strict=True)]
        cpu_over = [b["cpu_ms_per_token"] / a["cpu_ms_per_token"] - 1
                    for a, b in zip(samples["raw"], samples[name], strict=True)]
        q1, q3 = _quartiles(over)
        c1, c3 = _quartiles(cpu_over)
        out["sides"][name].update({
            "overhead_median": statistics.median(over), "overhead_q1": q1, "overhead_q3": q3,
            "overhead_min": min(over), "overhead_max": max(over),
            "cpu_overhead_median": statistics.median(cpu_over), "cpu_overhead_q1": c1, "cpu_overhead_q3": c3,
            "cpu_overhead_min": min(cpu_over), "cpu_overhead_max": max(cpu_over)})
    return out


def report(res: dict[str, Any], argv: list[str]) -> str:
    s = res["sides"]
    lines = [
        f"`bench/engine_overhead.py {' '.join(argv)}`: {res['rounds']} rounds, each running raw llama-cpp-python, "
        f"the engine and the provider path once, in a rotating order ({res['prompt_tokens']} prompt tokens, "
        f"{res['tokens']} generated, greedy, {res['threads']} thread(s)).",
        "",
        "| side | tok/s, median (min-max) | CPU ms per token, median (min-max) "
        "| overhead (wall), median [quartiles] (range) | overhead (CPU), median [quartiles] (range) |",
        "|---|---|---|---|---|",
    ]
    for name, label in (("raw", "raw `Llama.generate`"), ("engine", "Switchyard's engine"),
                        ("provider", "the whole provider path")):
        x = s[name]
        cpu = (x["cpu_ms_per_token_median"], x["cpu_ms_per_token_min"], x["cpu_ms_per_token_max"])
        row = (f"| {label} | {x['tok_s_median']:.1f} ({x['tok_s_min']:.1f}-{x['tok_s_max']:.1f}) | "
               f"{cpu[0]:.2f} ({cpu[1]:.2f}-{cpu[2]:.2f}) |")
        if name == "raw":
            row += " - | - |"
        else:
            row += (f" {x['overhead_median']:+.1%} [{x['overhead_q1']:+.1%}, {x['overhead_q3']:+.1%}] "
                    f"({x['overhead_min']:+.1%} to {x['overhead_max']:+.1%}) |"
                    f" {x['cpu_overhead_median']:+.1%} [{x['cpu_overhead_q1']:+.1%}, {x['cpu_overhead_q3']:+.1%}] "
                    f"({x['cpu_overhead_min']:+.1%} to {x['cpu_overhead_max']:+.1%}) |")
        lines.append(row)
    lines += ["", "Overhead of a round: raw tok/s ÷ ours - 1 (wall), ours ÷ raw CPU time per token - 1 (CPU); "
              "negative: ours was faster in that round."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    args = parser.parse_args(argv)
    res = measure(args.tokens, args.rounds, args.threads)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    print(report(res, argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
