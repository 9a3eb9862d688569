"""The ``transformers`` engine: a Hugging Face causal LM run in-process, with continuous batching
(``hf_batch``) and grammar-constrained decoding (``xgrammar_constraint``).

``load(spec)`` is the entry point (the model manager calls it in a worker thread). torch,
transformers and xgrammar are imported only there and below, never when this module is imported.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from switchyard.errors import BadRequestError
from switchyard.local.engine import Constraint, Detokenizer, Job, OnDone, OnToken, SamplingParams
from switchyard.local.engines.content import text_content
from switchyard.local.engines.hf_batch import BatchJob, BatchScheduler, ModelSlot, cache_argument
from switchyard.local.engines.hf_detok import IncrementalDetokenizer
from switchyard.local.engines.threads import usable_cpus
from switchyard.local.engines.xgrammar_constraint import CompiledConstraint, GrammarCompilerCache

if TYPE_CHECKING:
    import torch

    from switchyard.local.spec import LocalModelSpec

__all__ = ["TransformersEngine", "generate_blocking", "load"]


def load(spec: LocalModelSpec) -> TransformersEngine:
    """Load ``spec.source`` (a directory, else a hub id resolved by transformers' cache/hub logic)."""
    import torch
    import xgrammar  # noqa: F401  (decoding needs it: without the extra, fail here, not on the first request)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = _pick_device(spec.device)
    # half the CPUs (about the physical cores) unless the model says: torch's default takes them
    # all, and its threads then wait on whatever else runs (measured: 14 vs 12 tok/s on 2 cores)
    torch.set_num_threads(spec.threads or max(1, usable_cpus() // 2))
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        torch.cuda.synchronize(device)
        allocated_before = torch.cuda.memory_allocated(device)
    else:
        dtype, allocated_before = torch.float32, 0
    tokenizer = AutoTokenizer.from_pretrained(spec.source)
    model: Any = AutoModelForCausalLM.from_pretrained(spec.source, dtype=dtype)
    model = model.to(device).eval()
    footprint = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        footprint = max(footprint, torch.cuda.memory_allocated(device) - allocated_before)
    if spec.chat_template is not None:
        tokenizer.chat_template = spec.chat_template
    config = model.config.get_text_config()
    context_length = spec.context_length or getattr(config, "max_position_embeddings", None) or 2048
    output_embeddings = model.get_output_embeddings()
    vocab_size = int(output_embeddings.weight.shape[0]) if output_embeddings is not None else int(config.vocab_size)
    slot = ModelSlot(
        model=model,
        device=device,
        eos_ids=frozenset(_eos_ids(tokenizer, model)),
        token_limit=min(len(tokenizer), vocab_size),
        context_length=int(context_length),
        max_batch=max(1, spec.max_batch),
        name=spec.name,
        cache_arg=cache_argument(model),
    )
    return TransformersEngine(slot, tokenizer, vocab_size, footprint)


def _pick_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _eos_ids(tokenizer: Any, model: Any) -> set[int]:
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


class TransformersEngine:
    """A loaded causal LM; implements ``switchyard.local.engine.ChatEngine``. It takes no tools:
    its grammars (xgrammar) have no ``tool_calls`` constraint yet, and its routes say so."""

    native_tools = False

    def __init__(self, slot: ModelSlot, tokenizer: Any, vocab_size: int, footprint_bytes: int) -> None:
        self.context_length = slot.context_length
        self.footprint_bytes = footprint_bytes
        self._slot: ModelSlot | None = slot
        self._tokenizer = tokenizer
        self._scheduler = BatchScheduler(slot)
        self._grammars = GrammarCompilerCache(tokenizer, vocab_size, slot.eos_ids)
        self._adds_bos = _adds_bos(tokenizer)
        self._close_lock = threading.Lock()

    def render_chat(self, messages: Sequence[Mapping[str, Any]],
                    tools: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
        from jinja2 import TemplateError

        conversation = [{**message, "content": text_content(message.get("content"))} for message in messages]
        try:
            ids = self._tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        except TemplateError as exc:
            raise BadRequestError(f"the model's chat template rejected the messages: {exc}", param="messages") from exc
        except ValueError as exc:  # no chat template at all
            raise BadRequestError(str(exc), param="messages") from exc
        return [int(i) for i in ids]

    def encode(self, text: str) -> list[int]:
        ids = [int(i) for i in self._tokenizer.encode(text, add_special_tokens=False)]
        return [self._tokenizer.bos_token_id, *ids] if self._adds_bos else ids

    def compile(self, constraint: Constraint) -> object:
        return self._grammars.compile(constraint)

    def detokenizer(self) -> Detokenizer:
        return IncrementalDetokenizer(self._tokenizer)

    def submit(self, prompt: Sequence[int], params: SamplingParams, grammar: object | None,
               on_token: OnToken, on_done: OnDone, owner: str | None = None) -> Job:
        """Queue a generation. Raises ``BadRequestError`` for a request no model could serve (empty
        prompt, prompt as long as the context, max_tokens < 1, a grammar from another engine)."""
        ids = [int(t) for t in prompt]
        if not ids:
            raise BadRequestError("the prompt is empty", param="messages")
        if len(ids) >= self.context_length:
            raise BadRequestError(
                f"the prompt has {len(ids)} tokens, and this model's context is {self.context_length} tokens",
                param="messages", code="context_length_exceeded",
            )
        if params.max_tokens < 1:
            raise BadRequestError("max_tokens must be at least 1", param="max_tokens")
        if grammar is not None and not isinstance(grammar, CompiledConstraint):
            raise BadRequestError("the grammar was not compiled by this engine", param="response_format")
        job = BatchJob(self._scheduler, ids, params, grammar, on_token, on_done)
        self._scheduler.submit(job)
        return job

    def close(self) -> None:
        with self._close_lock:
            slot, self._slot = self._slot, None
        if slot is None:
            return
        self._scheduler.close()  # later submits raise ServiceUnavailableError
        slot.model = None  # the scheduler shares this slot: nothing keeps the weights alive now
        gc.collect()
        if slot.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    probe = tokenizer.encode("a", add_special_tokens=True)
    return bool(probe) and probe[0] == bos


def generate_blocking(engine: Any, prompt_ids: Sequence[int], params: SamplingParams,
                      grammar: object | None = None) -> tuple[list[int], str]:
    """Submit one generation and wait for it: (tokens, finish reason). Raises what the engine failed with."""
    tokens: list[int] = []
    outcome: list[str | BaseException] = []
    done = threading.Event()

    def on_done(reason: str | BaseException) -> None:
        outcome.append(reason)
        done.set()

    engine.submit(prompt_ids, params, grammar, tokens.append, on_done)
    done.wait()
    reason = outcome[0]
    if isinstance(reason, BaseException):
        raise reason
    return tokens, reason
