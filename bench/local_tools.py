"""The cost of tool grammars on a local model: decode tokens/s of the bundled SmolLM2-135M (llama.cpp
engine, greedy) on one prompt that describes two tools, decoded

- freely (what ``tool_choice: none`` does),
- under the ``auto`` grammar (calls, or text that cannot start with ``<``; the model answers in
  text here, so the tokens are the same as freely, and the difference is the grammar's cost),
- under the ``required`` grammar (calls whose arguments follow the tools' schemas).

Runs alternate (free, auto, required, free, ...) and the medians are compared, so the machine's
noise hits all three alike.

    .venv/bin/python bench/local_tools.py [--tokens 128] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

TOOLS = [
    {"name": "get_weather", "description": "The weather in a city.", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                         "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"]}},
    {"name": "get_time", "description": "The time in a timezone.", "parameters": {
        "type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}},
]
ASK = [{"role": "user", "content": "Write a long story about a dragon who learns to cook. Use many details."}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from tests.local.bundled import smollm2_gguf

    from switchyard.local.engine import SamplingParams
    from switchyard.local.engines import llamacpp
    from switchyard.local.engines.transformers import generate_blocking
    from switchyard.local.spec import LocalModelSpec
    from switchyard.local.tools import ToolPlan, render_messages

    engine = llamacpp.load(LocalModelSpec(name="smol", engine="llamacpp", source=str(smollm2_gguf()),
                                          device="cpu", context_length=2048, threads=args.threads))
    try:
        auto = ToolPlan(functions=tuple(TOOLS), choice="auto", named=None, parallel=True)
        required = ToolPlan(functions=tuple(TOOLS), choice="required", named=None, parallel=True)
        prompt = engine.render_chat(render_messages(ASK, auto, engine.native_tools))
        grammars = {"free": None}
        for name, plan in (("auto", auto), ("required", required)):
            constraint = plan.constraint()
            assert constraint is not None
            grammars[name] = engine.compile(constraint)
        params = SamplingParams(max_tokens=args.tokens, temperature=0.0)
        rates: dict[str, list[float]] = {name: [] for name in grammars}
        counts: dict[str, int] = {}
        for grammar in grammars.values():  # warm-up (and the same prompt prefix cached for all)
            generate_blocking(engine, prompt, params, grammar)
        for _ in range(args.repeats):
            for name, grammar in grammars.items():
                start = time.perf_counter()
                tokens, _ = generate_blocking(engine, prompt, params, grammar)
                rates[name].append(len(tokens) / (time.perf_counter() - start))
                counts[name] = len(tokens)
    finally:
        engine.close()
    free = statistics.median(rates["free"])
    print(f"prompt {len(prompt)} tokens, {args.repeats} alternating runs, {args.threads} threads, medians:")
    for name, samples in rates.items():
        rate = statistics.median(samples)
        print(f"  {name:9s} {rate:7.1f} tok/s  ({counts[name]} tokens)  x{rate / free:.2f} of free")


if __name__ == "__main__":
    main()
