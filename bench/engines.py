"""Local engines: Switchyard's engine and provider path against the raw libraries, in one run.

- llama.cpp: SmolLM2-135M-Instruct (the bundled GGUF). Raw llama-cpp-python (``Llama.generate``,
  greedy, the same prompt tokens and threads) against Switchyard's llama.cpp engine (``submit``,
  callbacks from its worker thread) and the whole provider path (``LocalProvider.chat``: the
  model manager, chat template, the event-loop driver, detokenising, OpenAI JSON).
- transformers: a model of SmolLM2-135M's shape (576 hidden, 30 layers, 9 heads, 3 KV heads;
  random weights, as no weights can be downloaded here). Raw ``model.generate`` (greedy, KV cache)
  against Switchyard's engine for one stream; then aggregate tokens/s at 1, 4 and 8 concurrent
  streams through the engine's continuous batching.

Runs alternate (raw, engine, raw, engine, ...) and the medians are compared, so the machine's
noise hits both sides alike. Writes its section of bench/RESULTS.md (or --out PATH).

    .venv/bin/python bench/engines.py [--tokens 128] [--repeats 5] [--threads 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

MARK = "<!-- local engines: written by bench/engines.py -->"
PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to cook. Use many details."}]


def _median_rate(samples: list[tuple[int, float]]) -> float:
    return statistics.median(n / s for n, s in samples)


# ------------------------------------------------------------------------------ llama.cpp
def bench_llamacpp(tokens: int, repeats: int, threads: int) -> dict[str, Any]:
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
    spec = LocalModelSpec(name="smol", engine="llamacpp", source=gguf, context_length=2048, threads=threads)
    engine = load(spec)
    prompt = engine.render_chat(PROMPT)
    raw: Any = Llama(model_path=gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    eos = raw.token_eos()

    def run_raw() -> tuple[int, float]:
        raw.reset()
        start = time.perf_counter()
        n = 0
        for tok in raw.generate(prompt, temp=0.0, top_k=1, reset=True):
            if tok == eos:
                break
            n += 1
            if n >= tokens:
                break
        return n, time.perf_counter() - start

    params = SamplingParams(max_tokens=tokens, temperature=0.0)

    def run_engine() -> tuple[int, float]:
        start = time.perf_counter()
        out, _ = generate_blocking(engine, prompt, params)
        return len(out), time.perf_counter() - start

    manager = ModelManager([ManagedModel(spec=spec)], 4 << 30)
    provider = LocalProvider(manager)
    target = Target(alias="smol", provider="local", provider_type="local", upstream_model="smol", timeout=600)
    request = ChatRequest(kind=GenerationKind.CHAT, model="smol",
                          body={"model": "smol", "messages": PROMPT, "temperature": 0, "max_tokens": tokens})
    loop = asyncio.new_event_loop()

    def run_provider() -> tuple[int, float]:
        start = time.perf_counter()
        result = loop.run_until_complete(provider.chat(request, target))
        return result.usage.completion_tokens, time.perf_counter() - start

    for fn in (run_raw, run_engine, run_provider):  # warm-up: load, caches
        fn()
    samples: dict[str, list[tuple[int, float]]] = {"raw": [], "engine": [], "provider": []}
    for _ in range(repeats):
        samples["raw"].append(run_raw())
        samples["engine"].append(run_engine())
        samples["provider"].append(run_provider())

    # concurrency: the binding has one context per model, so jobs are served in turn
    concurrent: dict[int, float] = {}
    for streams in (1, 2, 4):
        start = time.perf_counter()
        counts: list[int] = []

        def one(out: list[int] = counts) -> None:
            out.append(len(generate_blocking(engine, prompt, params)[0]))

        workers = [threading.Thread(target=one) for _ in range(streams)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        concurrent[streams] = sum(counts) / (time.perf_counter() - start)
    loop.run_until_complete(provider.aclose())
    loop.close()
    engine.close()
    raw.close()
    return {"rates": {k: _median_rate(v) for k, v in samples.items()}, "tokens": samples["raw"][0][0],
            "concurrent": concurrent, "threads": threads}


# ---------------------------------------------------------------------------- transformers
def _smol_shaped(directory: Path) -> Path:
    import torch
    from tests.local.tiny_models import build_tiny_llama
    from transformers import LlamaConfig, LlamaForCausalLM

    build_tiny_llama(directory)  # the tokenizer (and chat template); the model is replaced below
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    return directory


def bench_transformers(tokens: int, repeats: int, threads: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from switchyard.local.engine import SamplingParams
    from switchyard.local.engines.transformers import generate_blocking, load
    from switchyard.local.spec import LocalModelSpec

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        directory = _smol_shaped(Path(tmp))
        engine = load(LocalModelSpec(name="tf", engine="transformers", source=str(directory), device="cpu",
                                     threads=threads, max_batch=8))
        prompt = engine.render_chat(PROMPT)
        model: Any = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        model.eval()
        ids = torch.tensor([prompt])
        params = SamplingParams(max_tokens=tokens, temperature=0.0)

        def run_raw() -> tuple[int, float]:
            start = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                     do_sample=False, pad_token_id=0)
            return int(out.shape[1] - ids.shape[1]), time.perf_counter() - start

        def run_engine() -> tuple[int, float]:
            start = time.perf_counter()
            out, _ = generate_blocking(engine, prompt, params)
            return len(out), time.perf_counter() - start

        run_raw()
        run_engine()
        samples: dict[str, list[tuple[int, float]]] = {"raw": [], "engine": []}
        for _ in range(repeats):
            samples["raw"].append(run_raw())
            samples["engine"].append(run_engine())

        def aggregate(streams: int) -> float:
            counts: list[int] = []
            lock = threading.Lock()

            def one(i: int) -> None:
                p = SamplingParams(max_tokens=tokens, temperature=0.8, seed=i)
                n = len(generate_blocking(engine, prompt, p)[0])
                with lock:
                    counts.append(n)

            start = time.perf_counter()
            workers = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return sum(counts) / (time.perf_counter() - start)

        batching: dict[int, list[float]] = {1: [], 4: [], 8: []}
        for _ in range(max(1, repeats // 2)):
            for streams in batching:
                batching[streams].append(aggregate(streams))
        engine.close()
    return {"rates": {k: _median_rate(v) for k, v in samples.items()},
            "batching": {k: statistics.median(v) for k, v in batching.items()}, "threads": threads}


# ---------------------------------------------------------------------------------- report
def _overhead(raw: float, ours: float) -> float:
    return (raw / ours - 1.0) * 100.0


def report(llama: dict[str, Any], tf: dict[str, Any], tokens: int, repeats: int) -> str:
    r = llama["rates"]
    t = tf["rates"]
    b = tf["batching"]
    lines = [
        "## Local engines: Switchyard against the raw libraries",
        "",
        f"One run of `bench/engines.py --tokens {tokens} --repeats {repeats} --threads {llama['threads']}` on this "
        f"machine ({os.cpu_count()} cores). Greedy decoding, the same prompt tokens on both sides; medians of "
        "alternating runs. Overhead = raw tokens/s ÷ ours - 1 (negative: ours was faster).",
        "",
        "### Engine overhead (target ≤ 10%)",
        "",
        "| engine | raw library tok/s | Switchyard tok/s | overhead | verdict |",
        "|---|---|---|---|---|",
    ]

    def row(name: str, raw: float, ours: float) -> str:
        over = _overhead(raw, ours)
        return f"| {name} | {raw:.1f} | {ours:.1f} | {over:+.1f}% | {'PASS' if over <= 10 else 'FAIL'} |"

    lines.append(row("llama.cpp engine (SmolLM2-135M Q4_1)", r["raw"], r["engine"]))
    lines.append(row("llama.cpp, whole provider path", r["raw"], r["provider"]))
    lines.append(row("transformers engine (SmolLM2-135M shape, fp32)", t["raw"], t["engine"]))
    lines += [
        "",
        "### Concurrency",
        "",
        "transformers, continuous batching (target: 8 streams ≥ 3x one stream):",
        "",
        "| streams | aggregate tok/s | x one stream |",
        "|---|---|---|",
    ]
    for streams, rate in b.items():
        lines.append(f"| {streams} | {rate:.1f} | {rate / b[1]:.2f}x |")
    verdict = "PASS" if b[8] >= 3 * b[1] else "FAIL"
    lines += [
        "",
        f"8 streams = {b[8] / b[1]:.2f}x one stream: **{verdict}**.",
        "",
        "llama.cpp: llama-cpp-python has one context per model, so concurrent jobs are served in turn "
        "(`max_concurrent: 1` by default; more requests wait in the model's queue):",
        "",
        "| streams | aggregate tok/s |",
        "|---|---|",
    ]
    for streams, rate in llama["concurrent"].items():
        lines.append(f"| {streams} | {rate:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None,
                        help="write the report to this file (default: its section of bench/RESULTS.md)")
    args = parser.parse_args(argv)
    llama = bench_llamacpp(args.tokens, args.repeats, args.threads)
    print("llama.cpp:", llama, flush=True)
    tf = bench_transformers(args.tokens, args.repeats, args.threads)
    print("transformers:", tf, flush=True)
    text = report(llama, tf, args.tokens, args.repeats)
    if args.out is not None:
        args.out.write_text(text)
    else:  # the section after MARK in RESULTS.md (bench/run.py keeps it when it rewrites the rest)
        results = ROOT / "bench" / "RESULTS.md"
        old = results.read_text() if results.exists() else ""
        chaos = "<!-- chaos soak: written by bench/chaos.py -->"  # bench/chaos.py's section comes last: keep it
        head = old.split(MARK)[0].split(chaos)[0].rstrip()
        tail = "\n\n" + old[old.index(chaos):] if chaos in old else ""
        results.write_text(f"{head}\n\n{MARK}\n\n{text.rstrip()}{tail}\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
