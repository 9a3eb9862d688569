"""The ``llamacpp`` engine: GGUF models run in-process with llama-cpp-python.

One llama.cpp context per loaded model, driven by one worker thread (a context is not
thread-safe): jobs are served first in, first out, one at a time, each from a clean context
(no prompt-prefix reuse, so the same seed, prompt and parameters always give the same tokens).
Tokenizing and rendering use only the vocabulary, which is read-only after load, so they run on
the caller's thread.

``load`` is blocking; the model manager calls it in a worker thread.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import logging
import os
import queue
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from switchyard.errors import BadRequestError, ServiceUnavailableError
from switchyard.local.engine import ChatEngine, Constraint, OnDone, OnToken, SamplingParams
from switchyard.local.engines.content import text_content
from switchyard.local.engines.threads import usable_cpus
from switchyard.local.spec import LocalModelSpec

__all__ = ["CompiledGrammar", "LlamaCppEngine", "default_threads", "load"]

log = logging.getLogger(__name__)

DEFAULT_MAX_CONTEXT = 8192  # the model's own context is used up to this, unless the spec asks for more
_KV_BYTES = 2  # llama.cpp keeps the KV cache in f16 by default
_SEED_SPACE = 0xFFFFFFFF  # llama.cpp seeds are uint32, and 0xFFFFFFFF itself means "pick one at random"


def default_threads() -> int:
    """Threads for one generation when the spec does not say: half the CPUs this process may run
    on (about the physical cores), at most 4. Token generation is memory-bound, so more threads
    barely help a small model, and ggml's threads meet at a barrier after every operation: when
    they outnumber the free cores (other work, other models), each barrier waits for a descheduled
    thread and the speed collapses."""
    return max(1, min(4, usable_cpus() // 2))


def load(spec: LocalModelSpec) -> ChatEngine:
    """Load the GGUF file ``spec.source`` with its weights fully in memory (no mmap)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep instead of spinning
    import llama_cpp
    from llama_cpp._logger import set_verbose

    if not os.path.isfile(spec.source):
        raise FileNotFoundError(f"{spec.source}: no such GGUF file (the llamacpp engine loads local files only)")
    set_verbose(False)  # what Llama(verbose=False) does too, before our metadata probe
    n_ctx = spec.context_length or min(_trained_context(spec.source), DEFAULT_MAX_CONTEXT)
    threads = spec.threads or default_threads()
    gpu_layers = 0
    if spec.device != "cpu":
        if llama_cpp.llama_supports_gpu_offload():
            gpu_layers = -1
        elif spec.device == "cuda":
            log.warning("%s: this llama-cpp-python build cannot offload to a GPU; running on the CPU", spec.name)
    before = _rss_bytes()
    llm = llama_cpp.Llama(
        spec.source, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_gpu_layers=gpu_layers,
        use_mmap=False, verbose=False,
    )
    rss_growth = _rss_bytes() - before
    # The RSS growth is the real cost on a CPU (weights read in, KV cache zeroed, compute buffers);
    # it cannot see GPU memory and is blurred by other threads allocating meanwhile, so it is never
    # taken below the weights plus the full KV cache.
    footprint = max(rss_growth, llama_cpp.llama_model_size(llm.model) + _kv_cache_bytes(llm))
    return LlamaCppEngine(llm, name=spec.name, footprint_bytes=footprint, chat_template=spec.chat_template)


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

    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", "replace") if n >= 0 else None


def _kv_cache_bytes(llm: Any) -> int:
    import llama_cpp

    model = llm.model
    n_embd, n_head = llama_cpp.llama_model_n_embd(model), llama_cpp.llama_model_n_head(model)
    arch = _meta(model, "general.architecture") or ""
    head_k = int(_meta(model, f"{arch}.attention.key_length") or n_embd // max(n_head, 1))
    head_v = int(_meta(model, f"{arch}.attention.value_length") or n_embd // max(n_head, 1))
    per_token = int(llama_cpp.llama_model_n_layer(model)) * int(llama_cpp.llama_model_n_head_kv(model))
    return int(llm.n_ctx()) * per_token * (head_k + head_v) * _KV_BYTES


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class CompiledGrammar:
    """A GBNF grammar checked by llama.cpp; each job gets a fresh sampler made from it."""

    gbnf: str


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


@dataclass(eq=False, slots=True)
class _Job:
    prompt: list[int]
    params: SamplingParams
    grammar: CompiledGrammar | None
    on_token: OnToken
    on_done: OnDone
    _cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


_STOP = object()  # tells the worker to exit


class LlamaCppEngine:
    """A loaded GGUF model (see ``switchyard.local.engine.ChatEngine``)."""

    def __init__(self, llm: Any, *, name: str, footprint_bytes: int, chat_template: str | None = None) -> None:
        import llama_cpp

        self._llm = llm
        self._lib = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._pieces: dict[int, bytes] = {}
        self.name = name
        # llama.cpp may round its context up (to 256), but llama-cpp-python sizes its token
        # buffer for the context it was asked for: the smaller is what fits
        self.context_length: int = min(int(llm.n_ctx()), len(llm.input_ids))
        self.footprint_bytes = footprint_bytes
        self._template = chat_template or llm.metadata.get("tokenizer.chat_template")
        self._formatter: Any = None
        if self._template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=self._template, bos_token=self._token_text(llm.token_bos()),
                eos_token=self._token_text(llm.token_eos()), add_generation_prompt=True,
            )
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name=f"llamacpp-{name}", daemon=True)
        self._worker.start()

    # -- prompts --------------------------------------------------------------------------------

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        import jinja2

        if self._formatter is None:
            raise BadRequestError(f"The model '{self.name}' has no chat template; use completions, or configure "
                                  "a chat_template for it.", param="messages")
        plain = [{**m, "content": text_content(m.get("content"))} for m in messages]
        try:
            prompt: str = self._formatter(messages=plain).prompt
        except (jinja2.TemplateError, ValueError, TypeError) as exc:
            raise BadRequestError(f"The model's chat template rejected the messages: {exc}",
                                  param="messages") from exc
        tokens = self._tokenize(prompt, special=True)
        bos = self._llm.token_bos()
        if len(tokens) >= 2 and tokens[0] == tokens[1] == bos:  # the template wrote the BOS itself
            del tokens[0]
        return tokens

    def encode(self, text: str) -> list[int]:
        # special=True, as llama.cpp's server and llama-cpp-python read completion prompts
        return self._tokenize(text, special=True)

    def _tokenize(self, text: str, *, special: bool) -> list[int]:
        self._require_open()
        tokens: list[int] = self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=special)
        return tokens

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
            raise _schema_error("The JSON schema was converted to a grammar that llama.cpp could not parse.")
        self._lib.llama_sampler_free(sampler)
        return CompiledGrammar(gbnf)

    # -- generation -------------------------------------------------------------------------------

    def submit(self, prompt: Sequence[int], params: SamplingParams, grammar: object | None,
               on_token: OnToken, on_done: OnDone) -> _Job:
        if grammar is not None and not isinstance(grammar, CompiledGrammar):
            raise TypeError(f"grammar must come from this engine's compile(), not {type(grammar).__name__}")
        if self._closed:
            raise ServiceUnavailableError(f"The model '{self.name}' was unloaded.")
        job = _Job(list(prompt), params, grammar, on_token, on_done)
        self._jobs.put(job)
        return job

    def _serve(self) -> None:
        """The worker: one job at a time, in the order they came."""
        while True:
            job = self._jobs.get()
            if not isinstance(job, _Job):
                return
            try:
                outcome: str | BaseException = self._run(job)
            except Exception as exc:  # a failed decode, or a callback that raised
                log.exception("%s: generation failed", self.name)
                outcome = exc
            try:
                job.on_done(outcome)
            except Exception:
                log.exception("%s: on_done raised", self.name)

    def _run(self, job: _Job) -> str:
        if job.cancelled:
            return "cancelled"
        if not job.prompt:
            raise BadRequestError("The prompt is empty.", param="messages")
        if len(job.prompt) + 1 > self.context_length:
            raise BadRequestError(
                f"This model's maximum context length is {self.context_length} tokens; "
                f"the prompt has {len(job.prompt)}.", param="messages", code="context_length_exceeded")
        sampler = self._sampler(job.params, job.grammar)
        try:
            self._llm.reset()  # no prefix reuse: a clean context makes the tokens reproducible
            return self._generate(job, sampler)
        finally:
            self._lib.llama_sampler_free(sampler)

    def _sampler(self, params: SamplingParams, grammar: CompiledGrammar | None) -> Any:
        """A llama.cpp sampler chain: grammar mask, then temperature, nucleus (top-p) and a seeded draw,
        in the order the transformers engine (and the OpenAI API) apply them; greedy at temperature 0."""
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if grammar is not None:
            rule = lib.llama_sampler_init_grammar(self._vocab, grammar.gbnf.encode("utf-8"), b"root")
            if not rule:  # compile() checked it; this would be a llama.cpp regression
                lib.llama_sampler_free(chain)
                raise RuntimeError("llama.cpp could not parse a grammar it accepted before")
            lib.llama_sampler_chain_add(chain, rule)
        if params.temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        seed = secrets.randbelow(_SEED_SPACE) if params.seed is None else params.seed % _SEED_SPACE
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(float(params.temperature)))
        if params.top_p < 1:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(max(float(params.top_p), 0.0), 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        return chain

    def _generate(self, job: _Job, sampler: Any) -> str:
        llm, ctx, vocab, n_ctx = self._llm, self._llm.ctx, self._vocab, self.context_length
        sample, is_eog, on_token = self._lib.llama_sampler_sample, self._lib.llama_vocab_is_eog, job.on_token
        token = -1
        for n in range(job.params.max_tokens):
            if job.cancelled:
                return "cancelled"
            if n == 0:
                llm.eval(job.prompt)
            elif llm.n_tokens >= n_ctx:  # no room to evaluate the last token: the context is full
                return "length"
            else:
                llm.eval([token])
            token = sample(sampler, ctx, -1)  # also advances the grammar
            if is_eog(vocab, token):
                return "stop"
            on_token(token)
        return "length"

    def _require_open(self) -> None:
        # the vocabulary is freed with the model: using it afterwards would crash the process
        if self._closed:
            raise ServiceUnavailableError(f"The model '{self.name}' was unloaded.")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.put(_STOP)
        self._worker.join()
        while True:  # jobs submitted after the stop marker (a race with close) are cancelled
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, _Job):
                job.on_done("cancelled")
        self._llm.close()


def _schema_error(message: str) -> BadRequestError:
    return BadRequestError(message, param="response_format", code="invalid_json_schema")
