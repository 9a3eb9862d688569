"""Local engines: Switchyard's engine and provider path against the raw libraries, in one run.

- llama.cpp: SmolLM2-135M-Instruct (the bundled GGUF). Raw llama-cpp-python (``Llama.generate``,
  greedy, the same prompt tokens and threads) against Switchyard's llama.cpp engine (``submit``,
  callbacks from its scheduler thread) and the whole provider path (``LocalProvider.chat``: the
  model manager, chat template, the event-loop driver, detokenising, OpenAI JSON); aggregate
  tokens/s at 1, 4 and 8 streams through its continuous batching; and an agent replay (8 turns
  resending a growing history) with prompt-prefix reuse on and off.
- transformers: a model of SmolLM2-135M's shape (576 hidden, 30 layers, 9 heads, 3 KV heads;
  random weights, as no weights can be downloaded here). Raw ``model.generate`` (greedy, KV cache)
  against Switchyard's engine for one stream; then aggregate tokens/s at 1, 4 and 8 concurrent
  streams through the engine's continuous batching.

Runs alternate (raw, engine, raw, engine, ...) and the medians are compared, so the machine's
noise hits both sides alike. Writes its section of bench/RESULTS.md (or --out PATH).

    .venv/bin/python bench/engines.py [--tokens 128] [--repeats 5] [--threads 2] [--skip-transformers] [--out PATH]
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
def _streams(engine: Any, prompts: list[list[int]], params: list[Any]) -> float:
    """Aggregate tokens/s of len(prompts) generations submitted at once."""
    from switchyard.local.engines.transformers import generate_blocking

    counts: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        n = len(generate_blocking(engine, prompts[i], params[i])[0])
        with lock:
            counts.append(n)

    start = time.perf_counter()
    workers = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)


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
    spec = LocalModelSpec(name="smol", engine="llamacpp", source=gguf, context_length=2048, threads=threads,
                          parallel=8)
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
    loop.run_until_complete(provider.aclose())
    loop.close()
    raw.close()

    # continuous batching: 1, 4 and 8 streams at once (sampled, a seed each, so they differ), interleaved
    prompts = [engine.render_chat([{"role": "user", "content": f"{PROMPT[0]['content']} Story number {i}."}])
               for i in range(8)]
    sampled = [SamplingParams(max_tokens=tokens, temperature=0.8, seed=i) for i in range(8)]
    batching: dict[int, list[float]] = {1: [], 4: [], 8: []}
    for _ in range(max(1, repeats // 2)):
        for streams in batching:
            batching[streams].append(_streams(engine, prompts[:streams], sampled[:streams]))
    engine.close()
    return {"rates": {k: _median_rate(v) for k, v in samples.items()}, "tokens": samples["raw"][0][0],
            "batching": {k: statistics.median(v) for k, v in batching.items()}, "threads": threads,
            "ceiling": raw_batch_ceiling(threads), "replay": bench_agent_replay(threads, repeats=max(1, repeats // 2))}


def raw_batch_ceiling(threads: int, steps: int = 24) -> dict[int, float]:
    """What llama.cpp itself gives at 1, 4 and 8 sequences, without us: tokens/s of bare
    ``llama_decode`` calls of one token per sequence (the same context settings as the engine's),
    the ceiling for the engine's aggregate figures on this machine."""
    import llama_cpp as lib
    from tests.local.bundled import smollm2_gguf

    from switchyard.local.engines.llamacpp import _backend

    _backend()
    mparams = lib.llama_model_default_params()
    mparams.use_mmap = False
    model = lib.llama_model_load_from_file(str(smollm2_gguf()).encode(), mparams)
    cparams = lib.llama_context_default_params()
    cparams.n_ctx, cparams.n_seq_max, cparams.kv_unified = 8 * 512, 8, True
    cparams.n_batch = cparams.n_ubatch = 512
    cparams.n_threads = cparams.n_threads_batch = threads
    ctx = lib.llama_init_from_model(model, cparams)
    batch = lib.llama_batch_init(512, 0, 1)
    rates: dict[int, list[float]] = {1: [], 4: [], 8: []}
    for _ in range(2):
        for n in rates:
            lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
            start = time.perf_counter()
            for pos in range(steps):
                batch.n_tokens = n
                for i in range(n):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = 100 + i, pos, 1, 1
                    batch.seq_id[i][0] = i
                if lib.llama_decode(ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed")
            rates[n].append(n * steps / (time.perf_counter() - start))
    lib.llama_batch_free(batch)
    lib.llama_free(ctx)
    lib.llama_model_free(model)
    return {n: statistics.median(v) for n, v in rates.items()}


SYSTEM = ("You are a careful coding assistant working in a repository. Follow the project's style, explain each "
          "change briefly, and never invent files. ")
REPO_MAP = "".join(f"src/pkg/module_{i}.py: class Handler{i}, def run_{i}(request, context), def close_{i}()\n"
                   for i in range(60))
QUESTIONS = ["Where is the request handler defined?", "Add logging to run_3.", "Why does close_7 leak a file?",
             "Write a test for Handler12.", "Rename module_20 to routes.", "Explain the context argument.",
             "Make run_5 async.", "Summarise the changes so far."]


def bench_agent_replay(threads: int, repeats: int) -> dict[str, Any]:
    """An agent's 8 turns: each resends a fixed ~1,000-token system prompt (instructions and a
    repository map) and the whole conversation so far. Prompt tokens evaluated / sent with prefix
    reuse, and turn 8's time to first token with reuse on against off (the same prompt)."""
    from tests.local.bundled import smollm2_gguf

    from switchyard.local.engine import SamplingParams
    from switchyard.local.engines.llamacpp import load
    from switchyard.local.spec import LocalModelSpec

    gguf = str(smollm2_gguf())
    on = load(LocalModelSpec(name="on", engine="llamacpp", source=gguf, context_length=4096, threads=threads,
                             parallel=1))
    off = load(LocalModelSpec(name="off", engine="llamacpp", source=gguf, context_length=4096, threads=threads,
                              parallel=1, prefix_cache_scope="off"))
    answer_params = SamplingParams(max_tokens=110, temperature=0.0)

    def ttft(engine: Any, prompt: list[int], owner: str) -> tuple[float, list[int]]:
        first = threading.Event()
        done = threading.Event()
        out: list[int] = []
        start = time.perf_counter()
        stamp: list[float] = []

        def on_token(token: int) -> None:
            if not out:
                stamp.append(time.perf_counter())
                first.set()
            out.append(token)

        engine.submit(prompt, answer_params, None, on_token, lambda _r: done.set(), owner)
        done.wait()
        return (stamp[0] if stamp else time.perf_counter()) - start, out

    results: list[dict[str, Any]] = []
    for r in range(repeats):
        owner = f"agent-{r}"  # a new owner: nothing cached from the last repeat is reused
        before = on.stats()
        messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM + REPO_MAP}]
        sizes: list[int] = []
        turn8_on = 0.0
        prompt: list[int] = []
        for turn, question in enumerate(QUESTIONS, 1):
            messages.append({"role": "user", "content": question + " Please be thorough, and show the code."})
            prompt = on.render_chat(messages)
            sizes.append(len(prompt))
            seconds, answer = ttft(on, prompt, owner)
            if turn == 8:
                turn8_on = seconds
            detok = on.detokenizer()
            messages.append({"role": "assistant", "content": "".join(detok.push(t) for t in answer) + detok.flush()})
        after = on.stats()
        turn8_off, _ = ttft(off, prompt, owner)
        sent = after["prompt_tokens"] - before["prompt_tokens"]
        evaluated = after["prompt_tokens_evaluated"] - before["prompt_tokens_evaluated"]
        results.append({"sizes": sizes, "sent": sent, "evaluated": evaluated, "on": turn8_on, "off": turn8_off})
    on.close()
    off.close()
    return {"system_tokens": results[0]["sizes"][0], "turn8_tokens": results[0]["sizes"][-1],
            "sent": results[0]["sent"], "evaluated": results[0]["evaluated"],
            "ttft_on": statistics.median(x["on"] for x in results),
            "ttft_off": statistics.median(x["off"] for x in results), "repeats": repeats}


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


def report(llama: dict[str, Any], tf: dict[str, Any] | None, tokens: int, repeats: int) -> str:
    r = llama["rates"]
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
    if tf is not None:
        lines.append(row("transformers engine (SmolLM2-135M shape, fp32)", tf["rates"]["raw"], tf["rates"]["engine"]))
    lines += ["", "The llama.cpp engine here has 8 slots (`parallel: 8`): one stream still goes through the "
              "batching scheduler.", "", "### Concurrency (target: 8 streams ≥ 3x one stream)", ""]

    def table(title: str, rates: dict[int, float]) -> None:
        nonlocal lines
        lines += [title, "", "| streams | aggregate tok/s | x one stream |", "|---|---|---|"]
        for streams, rate in rates.items():
            lines.append(f"| {streams} | {rate:.1f} | {rate / rates[1]:.2f}x |")
        verdict = "PASS" if rates[8] >= 3 * rates[1] else "FAIL"
        lines.extend(["", f"8 streams = {rates[8] / rates[1]:.2f}x one stream: **{verdict}**.", ""])

    table("llama.cpp, continuous batching (8 slots, sampled at temperature 0.8, a seed per stream):",
          llama["batching"])
    table("llama.cpp itself, bare `llama_decode` of one token per sequence (no sampling, no scheduler): "
          "the ceiling on this machine:", llama["ceiling"])
    if tf is not None:
        table("transformers, continuous batching:", tf["batching"])
    rp = llama["replay"]
    share = rp["evaluated"] / rp["sent"]
    speedup = rp["ttft_off"] / rp["ttft_on"]
    lines += [
        "### Agent replay: prompt-prefix reuse",
        "",
        f"8 turns, each resending a fixed system prompt ({rp['system_tokens']} tokens with the first question) and "
        f"the whole conversation (greedy answers of up to 110 tokens); turn 8 sends {rp['turn8_tokens']} tokens. "
        f"Medians of {rp['repeats']} replays, each under a new owner (nothing reused across replays); the "
        "reuse-off figure is the same turn-8 prompt on a model with `prefix_cache_scope: off`, measured right "
        "after the reuse-on turn.",
        "",
        "| figure | value | target | verdict |",
        "|---|---|---|---|",
        f"| prompt tokens evaluated / sent over 8 turns | {rp['evaluated']} / {rp['sent']} = {share:.1%} | ≤ 25% | "
        f"{'PASS' if share <= 0.25 else 'FAIL'} |",
        f"| turn 8 time to first token, reuse off / on | {rp['ttft_off'] * 1000:.0f} ms / {rp['ttft_on'] * 1000:.0f} ms"
        f" = {speedup:.1f}x | ≥ 5x | {'PASS' if speedup >= 5 else 'FAIL'} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-transformers", action="store_true", help="the llama.cpp figures only")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the report to this file (default: its section of bench/RESULTS.md)")
    args = parser.parse_args(argv)
    llama = bench_llamacpp(args.tokens, args.repeats, args.threads)
    print("llama.cpp:", llama, flush=True)
    tf = None if args.skip_transformers else bench_transformers(args.tokens, args.repeats, args.threads)
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
