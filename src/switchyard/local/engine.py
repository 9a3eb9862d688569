"""What the model manager and the local provider need from an engine (llama.cpp, transformers, bert,
sentence-transformers). Engines are loaded in a worker thread and generate on threads of their
own: nothing here ever blocks the event loop.

A generation is driven by callbacks made on the engine's thread::

    job = engine.submit(prompt_ids, params, grammar, on_token, on_done)
    on_token(token_id)        # for every sampled token, in order (EOS is not reported)
    on_done("stop")           # EOS sampled (or the grammar completed)
    on_done("length")         # params.max_tokens tokens were sampled
    on_done("cancelled")      # job.cancel() was called
    on_done(exc)              # the engine failed

``on_done`` is called exactly once, after the last ``on_token``. ``job.cancel()`` may be called
from any thread, any number of times, also after the job ended; the engine stops within one
token and frees the slot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ChatEngine",
    "Constraint",
    "Detokenizer",
    "EmbeddingEngine",
    "Engine",
    "Job",
    "OnDone",
    "OnToken",
    "SamplingParams",
]

OnToken = Callable[[int], None]
OnDone = Callable[[str | BaseException], None]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # same seed + prompt + params -> same tokens


@dataclass(frozen=True, slots=True)
class Constraint:
    """Structured output: ``json_object`` (any JSON object), ``json_schema`` (``schema``), or
    ``tool_calls``: function calls in the format of :mod:`switchyard.local.tools`, ``schema``
    being ``{"tools": [{"name", "parameters"}], "parallel": bool, "text": bool}`` (``text``: or
    plain text instead, which cannot start with ``<``), and optionally ``"max_calls": n`` (the
    calls a parallel answer may hold, default 8)."""

    kind: Literal["json_object", "json_schema", "tool_calls"]
    schema: Mapping[str, Any] | None = None


class Job(Protocol):
    def cancel(self) -> None: ...


class Detokenizer(Protocol):
    """Token ids -> text, incrementally. ``push`` returns only text that is final: a UTF-8
    character split over several tokens comes out whole, once its last byte arrived."""

    def push(self, token: int) -> str: ...

    def flush(self) -> str:
        """Whatever is held back at the end (an incomplete character becomes U+FFFD)."""
        ...


@runtime_checkable
class ChatEngine(Protocol):
    context_length: int
    footprint_bytes: int  # measured after load
    native_tools: bool  # the chat template renders ``tools`` (and calls) in the format of local/tools.py

    def render_chat(self, messages: Sequence[Mapping[str, Any]],
                    tools: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
        """The model's own chat template applied (with the assistant turn opened), tokenized;
        ``tools`` (chat-completions tools) are given to a template with ``native_tools``."""
        ...

    def encode(self, text: str) -> list[int]:
        """Plain text to token ids (legacy completions), with the model's BOS if it uses one."""
        ...

    def compile(self, constraint: Constraint) -> object:
        """A grammar for ``submit``; raises ``switchyard.errors.BadRequestError`` (param
        ``response_format``, or ``tools``) naming the problem when the schema cannot be compiled."""
        ...

    def detokenizer(self) -> Detokenizer: ...

    def submit(self, prompt: Sequence[int], params: SamplingParams, grammar: object | None,
               on_token: OnToken, on_done: OnDone, owner: str | None = None) -> Job:
        """Queue a generation. ``owner`` names whose prompt it is (an engine that caches prompt
        prefixes lets only the same owner reuse them, unless configured to share)."""
        ...

    def close(self) -> None:
        """Free the model's memory (called once; no job is running)."""
        ...


@runtime_checkable
class EmbeddingEngine(Protocol):
    dimensions: int
    context_length: int
    footprint_bytes: int

    def count_tokens(self, texts: Sequence[str]) -> int: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Blocking; the caller runs it in a thread. Vectors are L2-normalised when the model's
        own pipeline says so (sentence-transformers' Normalize module)."""
        ...

    def close(self) -> None: ...


Engine = ChatEngine | EmbeddingEngine
