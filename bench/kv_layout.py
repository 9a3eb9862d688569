"""The llama.cpp engine's KV cache layout, measured: CPU per generated token with 6 concurrent
greedy streams of staggered lengths (128, 40, 128, 72, 128, 96 tokens) beside 2 idle slots that
keep long cached prefixes, on the bundled SmolLM2 GGUF, 8 slots, 1 thread, in process.

    PYTHONPATH=TREE/src .venv/bin/python bench/kv_layout.py LABEL [--repeats 2] [--long]

Run it once per tree (alternate them: this machine is shared) to compare two versions of the
engine, e.g. one with ``kv_unified = True`` against one with a KV stream per slot. ``--long``:
1,800-token idle prefixes and prompts of about 700 tokens (an agent's context), instead of
1,000-token prefixes and short prompts. Repeat 0 evaluates the prompts; repeat 1 reuses most of
them (prefix reuse), so it is mostly decoding. Prints process CPU ms per token (all threads) and
wall tok/s per repeat.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.local.bundled import smollm2_gguf

from switchyard.local.engine import SamplingParams
from switchyard.local.engines.llamacpp import load
from switchyard.local.spec import LocalModelSpec

LIMITS = [128, 40, 128, 72, 128, 96]


def run(engine: Any, prompts: list[list[int]], limits: list[int]) -> tuple[float, float, int]:
    """Submit all at once; (CPU s, wall s, tokens) until the last one ends."""
    done, lock = threading.Event(), threading.Lock()
    left, counts = [len(prompts)], [0] * len(prompts)

    def callbacks(i: int) -> tuple[Any, Any]:
        def on_token(_: int) -> None:
            counts[i] += 1

        def on_done(*_: Any) -> None:
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()
        return on_token, on_done

    cpu, wall = time.process_time(), time.perf_counter()
    for i, (prompt, n) in enumerate(zip(prompts, limits, strict=True)):
        on_token, on_done = callbacks(i)
        engine.submit(prompt, SamplingParams(max_tokens=n, temperature=0), None, on_token, on_done)
    done.wait()
    return time.process_time() - cpu, time.perf_counter() - wall, sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("label")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--long", action="store_true", help="agent-length contexts")
    args = parser.parse_args()
    engine = load(LocalModelSpec(name="kv", engine="llamacpp", source=str(smollm2_gguf()), context_length=2048,
                                 threads=1, parallel=8, batch_tokens=64, device="cpu"))
    facts = " ".join(f"Fact {i}: the river {i} flows into the sea number {i % 7}."
                     for i in range(150 if args.long else 80))
    prefix = 1800 if args.long else 1000
    run(engine, [engine.encode(f"Agent {k}. {facts}")[:prefix] for k in range(2)], [1, 1])  # the idle prefixes
    try:
        for r in range(args.repeats):
            context = f"Context: {facts[:2500]} Now w" if args.long else "W"
            prompts = [engine.render_chat([{"role": "user", "content": f"{context}rite a long story about a dragon "
                                            f"named Number {i}-{r} who learns to cook. Use many details."}])
                       for i in range(len(LIMITS))]
            cpu, wall, tokens = run(engine, prompts, LIMITS)
            print(f"{args.label} repeat {r}: {tokens} tokens, CPU {cpu / tokens * 1e3:.2f} ms/token, "
                  f"{tokens / wall:.1f} tok/s wall", flush=True)
    finally:
        engine.close()


if __name__ == "__main__":
    main()
