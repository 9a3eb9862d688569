"""Workloads for any OpenAI-compatible chat server: aggregate tokens/s and an agent replay.

The same code measures Switchyard and the llama-server anchor (bench/anchor.py), over HTTP,
streaming ``/v1/chat/completions``:

- ``aggregate_tps(base_url, model, n_streams)``: ``n_streams`` streams at once, each with its own
  fixed prompt, greedy (temperature 0) and ``max_tokens``. Aggregate tok/s = completion tokens of
  all streams ÷ wall time from the first request to the last stream's end.
- ``agent_replay(base_url, model)``: a scripted 8-turn conversation, as a coding agent sends it:
  a fixed ~1,000-token system prompt, and each turn resends the whole history (the model's own
  replies included) plus a new ~170-token user message, growing to ~2,000 tokens of history.
  Per turn: time to first token (the first non-empty content delta), the prompt tokens sent, and
  the prompt tokens the server evaluated (or reused from its cache), when it says so.

Prompt tokens evaluated come from llama-server's ``timings`` (``prompt_n`` evaluated,
``cache_n`` reused) or from OpenAI's ``usage.prompt_tokens_details.cached_tokens`` (evaluated =
prompt_tokens - cached_tokens); a server that reports neither is counted as evaluating all it was
sent, and the result says ``reuse_reported: false``.

Server-specific request fields (llama-server's ``ignore_eos``, ``cache_prompt``) go in
``extra_body``; Switchyard rejects fields a model cannot honour, so send none to it.

Each function has an ``async`` twin (``*_async``) for callers that already run an event loop.

    .venv/bin/python bench/agent_workload.py http://127.0.0.1:8080/v1 smollm2-135m-instruct [--streams 1,4,8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

__all__ = [
    "PROMPTS",
    "SYSTEM_PROMPT",
    "USER_TURNS",
    "StreamResult",
    "agent_replay",
    "agent_replay_async",
    "aggregate_tps",
    "aggregate_tps_async",
    "stream_chat",
]

PROMPTS = [
    "Write a long story about a dragon who learns to cook. Use many details.",
    "Write a long story about a lighthouse keeper and a lost ship. Use many details.",
    "Write a long story about a robot who wants to become a gardener. Use many details.",
    "Write a long story about two friends crossing a desert on camels. Use many details.",
    "Write a long story about a baker who opens a shop on the moon. Use many details.",
    "Write a long story about a cat who runs a small library. Use many details.",
    "Write a long story about a young wizard who fails every exam. Use many details.",
    "Write a long story about a village that wakes up under the sea. Use many details.",
]

_MODULES = ["auth", "billing", "catalog", "checkout", "inventory", "notifications", "search", "shipping",
            "users", "reports"]
_FUNCS = ["load", "save", "validate", "render", "handle", "parse", "refresh", "close"]


def _repo_map() -> str:
    lines = []
    for m in _MODULES:
        lines.append(f"src/shop/{m}.py:")
        for f in _FUNCS[:4]:
            lines.append(f"  def {f}_{m}(request, session, *, timeout=30) -> {m.title()}Result")
    return "\n".join(lines)


# About 1,000 tokens with SmolLM2's tokenizer: instructions plus a repository map, as aider sends.
SYSTEM_PROMPT = (
    "You are an expert software engineer working in the user's repository. Answer with short, "
    "precise explanations and propose code changes as unified diffs. Never invent files that are "
    "not in the repository map. Keep the existing style: type hints everywhere, small functions, "
    "no global state. When a change touches a public function, say which callers must change.\n\n"
    "Repository map (files and their public functions):\n" + _repo_map()
)

_TASKS = [
    ("auth", "The login handler returns 500 when the session cookie is missing."),
    ("billing", "Invoices are rounded twice, so totals are sometimes off by one cent."),
    ("catalog", "Product pages load every variant, even the hidden ones."),
    ("checkout", "A double click on 'pay' creates two orders."),
    ("inventory", "Stock goes negative when two orders take the last item at once."),
    ("notifications", "Emails are sent before the order transaction commits."),
    ("search", "Queries with accents find nothing."),
    ("shipping", "Rates are computed in pounds but the carrier expects kilograms."),
]


def _user_turn(i: int) -> str:
    module, problem = _TASKS[i % len(_TASKS)]
    code = "\n".join(
        f"    {'if' if j % 2 else 'return'} {module}_{_FUNCS[j % len(_FUNCS)]}(request, session)  # step {j}"
        for j in range(8)
    )
    return (f"Turn {i + 1}. {problem} Here is the relevant part of src/shop/{module}.py:\n\n"
            f"def handle_{module}(request, session):\n{code}\n\n"
            f"What is wrong, and what is the smallest fix? Answer briefly.")


USER_TURNS = [_user_turn(i) for i in range(8)]


@dataclass
class StreamResult:
    ttft_s: float | None  # request sent -> first non-empty content delta
    total_s: float
    completion_tokens: int
    prompt_tokens: int | None  # sent, as the server counted them
    prompt_evaluated: int | None  # evaluated now (None: the server does not say)
    prompt_cached: int | None  # reused from the server's cache
    finish_reason: str | None
    text: str


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def stream_chat(client: httpx.AsyncClient, base_url: str, model: str, messages: list[dict[str, str]],
                      max_tokens: int, *, extra_body: dict[str, Any] | None = None,
                      api_key: str | None = None) -> StreamResult:
    """One greedy streamed chat completion; times it and reads the usage and cache figures."""
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                            "stream": True, "stream_options": {"include_usage": True}}
    body.update(extra_body or {})
    start = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    deltas = 0
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    finish: str | None = None
    async with client.stream("POST", base_url.rstrip("/") + "/chat/completions", json=body,
                             headers=_headers(api_key)) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{base_url}: HTTP {resp.status_code}: {(await resp.aread())[:500]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("timings"):
                timings = chunk["timings"]
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if ttft is None:
                        ttft = time.perf_counter() - start
                    parts.append(content)
                    deltas += 1
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
    total = time.perf_counter() - start
    prompt_tokens = usage.get("prompt_tokens")
    evaluated: int | None = None
    cached: int | None = None
    if "prompt_n" in timings:
        evaluated = int(timings["prompt_n"])
        cached = int(timings.get("cache_n", 0))
    elif isinstance(usage.get("prompt_tokens_details"), dict) and prompt_tokens is not None:
        cached = int(usage["prompt_tokens_details"].get("cached_tokens") or 0)
        evaluated = int(prompt_tokens) - cached
    return StreamResult(ttft_s=ttft, total_s=total, completion_tokens=int(usage.get("completion_tokens", deltas)),
                        prompt_tokens=prompt_tokens, prompt_evaluated=evaluated, prompt_cached=cached,
                        finish_reason=finish, text="".join(parts))


def _client(timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=httpx.Limits(max_connections=64))


async def aggregate_tps_async(base_url: str, model: str, n_streams: int, *, max_tokens: int = 128,
                              prompts: list[str] | None = None, extra_body: dict[str, Any] | None = None,
                              api_key: str | None = None, timeout: float = 600.0) -> dict[str, Any]:
    """``n_streams`` concurrent greedy streams; aggregate completion tokens per second."""
    prompts = prompts or PROMPTS
    async with _client(timeout) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(
            stream_chat(client, base_url, model, [{"role": "user", "content": prompts[i % len(prompts)]}],
                        max_tokens, extra_body=extra_body, api_key=api_key)
            for i in range(n_streams)))
        wall = time.perf_counter() - start
    tokens = sum(r.completion_tokens for r in results)
    ttfts = [r.ttft_s for r in results if r.ttft_s is not None]
    return {"streams": n_streams, "max_tokens": max_tokens, "completion_tokens": tokens, "wall_s": wall,
            "tok_s": tokens / wall, "ttft_median_s": statistics.median(ttfts) if ttfts else None,
            "ttft_max_s": max(ttfts) if ttfts else None,
            "finish_reasons": sorted({r.finish_reason or "none" for r in results})}


async def agent_replay_async(base_url: str, model: str, *, turns: int = 8, reply_tokens: int = 96,
                             system_prompt: str = SYSTEM_PROMPT, user_turns: list[str] | None = None,
                             extra_body: dict[str, Any] | None = None, api_key: str | None = None,
                             replies: list[str] | None = None, skip_turns: int = 0,
                             evaluated: Callable[[], int] | None = None,
                             timeout: float = 600.0) -> dict[str, Any]:
    """The scripted agent conversation: each turn resends the system prompt and the whole history.

    ``replies``: the assistant turns to put in the history (e.g. another server's ``replies`` from
    the result), instead of the model's own, so two servers get byte-identical prompts.
    ``skip_turns``: with ``replies``, the first turns are not sent, only put in the history (for a
    server without prefix reuse, where earlier turns cannot change a later turn's TTFT).
    ``evaluated``: for a server that says neither in its answer, a counter of the prompt tokens it
    has evaluated (e.g. read from a status endpoint), read before and after each turn.
    """
    user_turns = user_turns or USER_TURNS
    if skip_turns and (replies is None or len(replies) < skip_turns):
        raise ValueError("skip_turns needs the replies of the skipped turns")
    messages: list[dict[str, str]] = [{"role": "system", "content": system_prompt}]
    rows: list[dict[str, Any]] = []
    texts: list[str] = []
    async with _client(timeout) as client:
        for i in range(turns):
            messages.append({"role": "user", "content": user_turns[i % len(user_turns)]})
            if i < skip_turns:
                assert replies is not None
                texts.append(replies[i])
                messages.append({"role": "assistant", "content": replies[i]})
                continue
            before = await asyncio.to_thread(evaluated) if evaluated is not None else None
            r = await stream_chat(client, base_url, model, messages, reply_tokens, extra_body=extra_body,
                                  api_key=api_key)
            if before is not None and evaluated is not None and r.prompt_evaluated is None:
                r.prompt_evaluated = await asyncio.to_thread(evaluated) - before
                r.prompt_cached = (r.prompt_tokens or 0) - r.prompt_evaluated
            text = replies[i] if replies is not None and i < len(replies) else r.text
            texts.append(r.text)
            messages.append({"role": "assistant", "content": text})
            row = asdict(r)
            row.pop("text")
            row["turn"] = i + 1
            rows.append(row)
    reported = all(r["prompt_evaluated"] is not None for r in rows)
    sent = sum(r["prompt_tokens"] or 0 for r in rows)
    evaluated = sum((r["prompt_evaluated"] if reported else r["prompt_tokens"]) or 0 for r in rows)
    return {"turns": rows, "replies": texts, "skipped_turns": skip_turns, "reuse_reported": reported,
            "prompt_tokens_sent": sent,
            "prompt_tokens_evaluated": evaluated, "evaluated_share": evaluated / sent if sent else None,
            "last_turn_ttft_s": rows[-1]["ttft_s"], "last_turn_prompt_tokens": rows[-1]["prompt_tokens"]}


def aggregate_tps(base_url: str, model: str, n_streams: int, **kwargs: Any) -> dict[str, Any]:
    """Blocking ``aggregate_tps_async`` (its own event loop)."""
    return asyncio.run(aggregate_tps_async(base_url, model, n_streams, **kwargs))


def agent_replay(base_url: str, model: str, **kwargs: Any) -> dict[str, Any]:
    """Blocking ``agent_replay_async`` (its own event loop)."""
    return asyncio.run(agent_replay_async(base_url, model, **kwargs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8080/v1")
    parser.add_argument("model")
    parser.add_argument("--streams", default="1,4,8")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--extra-body", default=None, help="JSON object merged into every request")
    parser.add_argument("--no-replay", action="store_true")
    args = parser.parse_args(argv)
    extra = json.loads(args.extra_body) if args.extra_body else None
    out: dict[str, Any] = {"aggregate": [aggregate_tps(args.base_url, args.model, int(n), max_tokens=args.max_tokens,
                                                       extra_body=extra, api_key=args.api_key)
                                         for n in args.streams.split(",")]}
    if not args.no_replay:
        out["agent_replay"] = agent_replay(args.base_url, args.model, extra_body=extra, api_key=args.api_key)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
