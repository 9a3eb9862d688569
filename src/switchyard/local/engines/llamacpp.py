"""The ``llamacpp`` engine: GGUF models run in-process on llama-cpp-python's low-level API.

One llama.cpp context per loaded model, shared by ``parallel`` slots (sequence ids, each with
``context_length`` tokens of KV cache) and driven by one scheduler thread that batches them
(continuous batching, chunked prompts, prompt-prefix reuse: ``llama_sched.py``). Tokenizing and
rendering use only the vocabulary, which is read-only after load, so they run on the caller's
thread.

``load`` is blocking; the model manager calls it in a worker thread.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from switchyard.errors import BadRequestError, ServiceUnavailableError
from switchyard.local.engine import ChatEngine, Constraint, OnDone, OnToken, SamplingParams
from switchyard.local.engines.content import text_content
from switchyard.local.engines.llama_sampling import CompiledGrammar
from switchyard.local.engines.llama_sched import LlamaJob, Scheduler, occupancy
from switchyard.local.engines.llama_tools import tool_calls_gbnf
from switchyard.local.engines.threads import usable_cpus
from switchyard.local.kvcache import KV_TYPE_BYTES
from switchyard.local.spec import LocalModelSpec
from switchyard.local.tools import takes_tools

__all__ = ["CompiledGrammar", "LlamaCppEngine", "default_threads", "load"]

log = logging.getLogger(__name__)

DEFAULT_MAX_CONTEXT = 8192  # the model's own context is used up to this, unless the spec asks for more
_backend_lock = threading.Lock()
_backend_ready = False


def default_threads() -> int:
    """Threads for one generation when the spec does not say: half the CPUs this process may run
    on (about the physical cores), at most 4. Token generation is memory-bound, so more threads
    barely help a small model, and ggml's threads meet at a barrier after every operation: when
    they outnumber the free cores (other work, other models), each barrier waits for a descheduled
    thread and the speed collapses."""
    return max(1, min(4, usable_cpus() // 2))


def _backend() -> Any:
    global _backend_ready
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep instead of spinning
    import llama_cpp
    from llama_cpp._logger import set_verbose

    with _backend_lock:
        if not _backend_ready:
            set_verbose(False)  # llama.cpp's own logging goes quiet, as with Llama(verbose=False)
            llama_cpp.llama_backend_init()
            _backend_ready = True
    return llama_cpp


def load(spec: LocalModelSpec) -> ChatEngine:
    """Load the GGUF file ``spec.source`` with its weights fully in memory (no mmap), and a context
    of ``spec.parallel`` slots of ``context_length`` tokens each."""
    lib = _backend()
    if not os.path.isfile(spec.source):
        raise FileNotFoundError(f"{spec.source}: no such GGUF file (the llamacpp engine loads local files only)")
    slot_context = spec.context_length or min(_trained_context(spec.source), DEFAULT_MAX_CONTEXT)
    slots = max(1, spec.parallel)
    threads = spec.threads or default_threads()
    mparams = lib.llama_model_default_params()
    mparams.use_mmap = False
    if spec.device != "cpu":
        if lib.llama_supports_gpu_offload():
            mparams.n_gpu_layers = -1
        elif spec.device == "cuda":
            log.warning("%s: this llama-cpp-python build cannot offload to a GPU; running on the CPU", spec.name)
    else:
        mparams.n_gpu_layers = 0
    before = _rss_bytes()
    model = lib.llama_model_load_from_file(spec.source.encode(), mparams)
    if not model:
        raise ValueError(f"{spec.source}: llama.cpp could not load this GGUF file")
    batch_tokens = max(spec.batch_tokens, slots)
    cparams = lib.llama_context_default_params()
    cparams.n_ctx = slot_context * slots
    cparams.n_seq_max = slots
    cparams.n_batch = cparams.n_ubatch = batch_tokens
    cparams.n_threads = cparams.n_threads_batch = threads
    # A KV cache stream per slot: each token attends over its own sequence's cells only. With one
    # unified pool it attends over every cell up to the highest in use, so the prefixes that idle
    # slots keep were paid for by every running stream (20-25% more CPU per token with long
    # agent contexts; bench/RESULTS-anchor.md). llama.cpp evaluates such a batch in ubatches of
    # consecutive sequence ids: the scheduler lays the batch out in id order and gives a new
    # request the lowest free slot, so that the running sequences stay one run.
    cparams.kv_unified = False
    cparams.no_perf = True
    ctx = lib.llama_init_from_model(model, cparams)
    if not ctx:
        lib.llama_model_free(model)
        raise ValueError(f"{spec.name}: llama.cpp could not make a context of {slots} x {slot_context} tokens")
    rss_growth = _rss_bytes() - before
    kv = _kv_cache_bytes(lib, model, slot_context * slots)
    # The RSS growth is the real cost on a CPU (weights read in, KV cache zeroed, compute buffers);
    # it cannot see GPU memory and is blurred by other threads allocating meanwhile, so it is never
    # taken below the weights plus the KV cache of all slots.
    footprint = max(rss_growth, int(lib.llama_model_size(model)) + kv)
    return LlamaCppEngine(lib, model, ctx, name=spec.name, footprint_bytes=footprint, kv_cache_bytes=kv,
                          slots=slots, slot_context=slot_context, batch_tokens=batch_tokens,
                          scope=spec.prefix_cache_scope, chat_template=spec.chat_template)


def _trained_context(path: str) -> int:
    """The context length the model was trained with, read from the GGUF metadata (vocab only)."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(path.encode(), params)
    if not model:
        raise ValueError(f"{path}: llama.cpp could not read this GGUF file")
    try:
        arch = _meta(model, "general.architecture")
        value = _meta(model, f"{arch}.context_length") if arch else None
    finally:
        llama_cpp.llama_model_free(model)
    return int(value) if value and value.isdigit() else DEFAULT_MAX_CONTEXT


def _meta(model: Any, key: str) -> str | None:
    import llama_cpp

    size = 256
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n < size:
            return buf.value.decode("utf-8", "replace")
        size = n + 1  # a chat template is longer than the buffer: n is the length it needs


def _kv_cache_bytes(lib: Any, model: Any, cells: int) -> int:
    n_embd, n_head = lib.llama_model_n_embd(model), lib.llama_model_n_head(model)
    arch = _meta(model, "general.architecture") or ""
    head_k = int(_meta(model, f"{arch}.attention.key_length") or n_embd // max(n_head, 1))
    head_v = int(_meta(model, f"{arch}.attention.value_length") or n_embd // max(n_head, 1))
    per_token = int(lib.llama_model_n_layer(model)) * int(lib.llama_model_n_head_kv(model))
    return cells * per_token * (head_k + head_v) * KV_TYPE_BYTES


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Detokenizer:
    def __init__(self, piece: Any) -> None:
        self._piece = piece
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        text: str = self._decoder.decode(self._piece(token))
        return text

    def flush(self) -> str:
        text: str = self._decoder.decode(b"", final=True)
        return text


class LlamaCppEngine:
    """A loaded GGUF model (see ``switchyard.local.engine.ChatEngine``)."""

    def __init__(self, lib: Any, model: Any, ctx: Any, *, name: str, footprint_bytes: int, kv_cache_bytes: int,
                 slots: int, slot_context: int, batch_tokens: int, scope: Any = "owner",
                 chat_template: str | None = None) -> None:
        self._lib, self._model, self._ctx = lib, model, ctx
        self._vocab = lib.llama_model_get_vocab(model)
        self._pieces: dict[int, bytes] = {}
        self.name = name
        self.context_length: int = slot_context  # per request: each slot holds this many tokens
        self.footprint_bytes = footprint_bytes
        self.kv_cache_bytes = kv_cache_bytes
        self._template = chat_template or _meta(model, "tokenizer.chat_template")
        self.native_tools = takes_tools(self._template)
        self._formatter: Any = None
        if self._template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=self._template, bos_token=self._token_text(lib.llama_vocab_bos(self._vocab)),
                eos_token=self._token_text(lib.llama_vocab_eos(self._vocab)), add_generation_prompt=True,
            )
        self._closed = False
        self._scheduler = Scheduler(lib, ctx, self._vocab, name=name, slots=slots, slot_context=slot_context,
                                    batch_tokens=batch_tokens, scope=scope)

    # -- prompts --------------------------------------------------------------------------------

    def render_chat(self, messages: Sequence[Mapping[str, Any]],
                    tools: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
        import jinja2

        if self._formatter is None:
            raise BadRequestError(f"The model '{self.name}' has no chat template; use completions, or configure "
                                  "a chat_template for it.", param="messages")
        plain = [{**m, "content": text_content(m.get("content"))} for m in messages]
        try:
            prompt: str = self._formatter(messages=plain, tools=list(tools) if tools else None).prompt
        except (jinja2.TemplateError, ValueError, TypeError) as exc:
            raise BadRequestError(f"The model's chat template rejected the messages: {exc}",
                                  param="messages") from exc
        tokens = self._tokenize(prompt, special=True)
        bos = self._lib.llama_vocab_bos(self._vocab)
        if len(tokens) >= 2 and tokens[0] == tokens[1] == bos:  # the template wrote the BOS itself
            del tokens[0]
        return tokens

    def encode(self, text: str) -> list[int]:
        # special=True, as llama.cpp's server and llama-cpp-python read completion prompts
        return self._tokenize(text, special=True)

    def _tokenize(self, text: str, *, special: bool) -> list[int]:
        self._require_open()
        raw = text.encode("utf-8")
        size = len(raw) + 2
        while True:
            buf = (self._lib.llama_token * size)()
            n = self._lib.llama_tokenize(self._vocab, raw, len(raw), buf, size, True, special)
            if n >= 0:
                return list(buf[:n])
            size = -n  # too small: -n is the count needed

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text: bytes = self._lib.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", "replace")

    # -- output -----------------------------------------------------------------------------------

    def detokenizer(self) -> _Detokenizer:
        return _Detokenizer(self._piece)

    def _piece(self, token: int) -> bytes:
        """The token's bytes as generated text (control tokens are empty), cached."""
        piece = self._pieces.get(token)
        if piece is None:
            self._require_open()
            buf = ctypes.create_string_buffer(64)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            if n < 0:  # longer than the buffer: -n is the size needed
                buf = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            piece = self._pieces[token] = buf.raw[: max(n, 0)]
        return piece

    # -- constrained decoding ------------------------------------------------------------------

    def compile(self, constraint: Constraint) -> CompiledGrammar:
        from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

        if constraint.kind == "json_object":
            gbnf = JSON_GBNF
        elif constraint.kind == "tool_calls":
            try:
                gbnf = tool_calls_gbnf(constraint.schema or {})
            except Exception as exc:  # the converter raises AssertionError, KeyError, AttributeError, ...
                raise _schema_error(f"A tool's parameters cannot be used for constrained decoding: "
                                    f"{type(exc).__name__}: {exc}", param="tools") from exc
        else:
            if not isinstance(constraint.schema, Mapping):
                raise _schema_error("response_format.json_schema.schema must be a JSON object")
            try:
                gbnf = json_schema_to_gbnf(json.dumps(constraint.schema))
            except Exception as exc:  # the converter raises AssertionError, KeyError, AttributeError, ...
                raise _schema_error(f"The JSON schema cannot be used for structured output: "
                                    f"{type(exc).__name__}: {exc}") from exc
        self._require_open()
        # llama.cpp parses the grammar only when a sampler is made, and answers NULL (after logging
        # the reason to stderr) when it cannot: try it here, once, so that submit never meets it.
        sampler = self._lib.llama_sampler_init_grammar(self._vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            raise _schema_error("The JSON schema was converted to a grammar that llama.cpp could not parse.",
                                param="tools" if constraint.kind == "tool_calls" else "response_format")
        self._lib.llama_sampler_free(sampler)
        return CompiledGrammar(gbnf, free_after_text=constraint.kind == "tool_calls" and bool(
            (constraint.schema or {}).get("text")))

    # -- generation -------------------------------------------------------------------------------

    def submit(self, prompt: Sequence[int], params: SamplingParams, grammar: object | None,
               on_token: OnToken, on_done: OnDone, owner: str | None = None) -> LlamaJob:
        if grammar is not None and not isinstance(grammar, CompiledGrammar):
            raise TypeError(f"grammar must come from this engine's compile(), not {type(grammar).__name__}")
        self._require_open()
        if not prompt:
            raise BadRequestError("The prompt is empty.", param="messages")
        if len(prompt) + 1 > self.context_length:
            raise BadRequestError(
                f"This model's maximum context length is {self.context_length} tokens; "
                f"the prompt has {len(prompt)}.", param="messages", code="context_length_exceeded")
        job = LlamaJob(self._scheduler, list(prompt), params, grammar, owner, on_token, on_done)
        self._scheduler.submit(job)
        return job

    @property
    def failed(self) -> BaseException | None:
        """Why the engine stopped serving (its scheduler crashed); the manager then reloads it."""
        return self._scheduler.crashed

    def stats(self) -> dict[str, Any]:
        """Slots, the prefix cache and throughput, for status and metrics."""
        sched = self._scheduler
        st = sched.stats
        recent = list(st.recent)
        seconds = sum(r[2] for r in recent)
        return {
            "slots": len(sched.slots), "slots_busy": sched.busy, "slot_context": self.context_length,
            "batch_tokens": sched.batch_tokens, "prefix_cache_scope": sched.scope,
            "kv_cache_bytes": self.kv_cache_bytes, "requests": st.requests, "prefix_hits": st.prefix_hits,
            "prefix_hit_ratio": round(st.prefix_hits / st.requests, 4) if st.requests else 0.0,
            "prompt_tokens": st.prompt_tokens, "prompt_tokens_evaluated": st.prompt_evaluated,
            "prompt_tokens_reused": st.prompt_reused, "completion_tokens": st.generated, "steps": st.steps,
            "prefill_chunks": st.prefill_chunks, "max_decode_gap_steps": st.max_decode_gap_steps,
            "batch_occupancy": round(occupancy(st, len(sched.slots)), 4),
            "tokens_per_second": round(sum(r[1] for r in recent) / seconds, 2) if seconds > 0 else 0.0,
            "time_to_first_token_seconds_sum": round(st.ttft_seconds, 6), "time_to_first_token_count": st.ttft_count,
            "decode_seconds": round(st.decode_seconds, 6),
        }

    def _require_open(self) -> None:
        # the vocabulary is freed with the model: using it afterwards would crash the process
        if self._closed:
            raise ServiceUnavailableError(f"The model '{self.name}' was unloaded.")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._scheduler.close()
        self._lib.llama_free(self._ctx)
        self._lib.llama_model_free(self._model)


def _schema_error(message: str, param: str = "response_format") -> BadRequestError:
    return BadRequestError(message, param=param, code="invalid_json_schema")
