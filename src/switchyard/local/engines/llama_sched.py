"""Continuous batching for the llama.cpp engine: one thread drives one context shared by N slots.

Each step builds one ``llama_batch``::

    one token for every slot that is decoding (its last sampled token)
    + chunks of the prompts still being evaluated, least left first, up to ``batch_tokens`` in all

then makes one ``llama_decode`` call and samples one token for every slot whose logits it asked
for (each slot has its own sampler chain, with its own grammar). A request joins at the next step;
a long prompt is evaluated a chunk per step, so the streams already decoding get a token every
step meanwhile. A cancelled request (its client left, a stop sequence matched) leaves its slot at
the next step, also in the middle of its prompt; what its slot evaluated stays cached for reuse.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from switchyard.errors import ServiceUnavailableError
from switchyard.local.engine import OnDone, OnToken, SamplingParams
from switchyard.local.engines.llama_sampling import CompiledGrammar, make_sampler
from switchyard.local.engines.llama_slots import Scope, Slot, pick_slot

__all__ = ["LlamaJob", "Scheduler", "Stats"]

log = logging.getLogger(__name__)


class LlamaJob:
    """One generation request; ``cancel`` may be called from any thread, any number of times."""

    def __init__(self, scheduler: Scheduler, prompt: list[int], params: SamplingParams,
                 grammar: CompiledGrammar | None, owner: str | None, on_token: OnToken, on_done: OnDone) -> None:
        self._scheduler = scheduler
        self.prompt = prompt
        self.params = params
        self.grammar = grammar
        self.owner = owner
        self.on_token = on_token
        self.on_done = on_done
        self.cancelled = False
        self.submitted = time.perf_counter()

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._scheduler.wake()


@dataclass(slots=True)
class Stats:
    """Running totals, read by status and metrics (written by the scheduler thread only)."""

    requests: int = 0
    prefix_hits: int = 0  # requests that reused some cached tokens
    prompt_tokens: int = 0  # sent
    prompt_evaluated: int = 0
    prompt_reused: int = 0
    generated: int = 0
    steps: int = 0
    step_sequences: int = 0  # Σ sequences in each step: / steps / slots = batch occupancy
    decode_seconds: float = 0.0
    ttft_count: int = 0
    ttft_seconds: float = 0.0
    max_decode_gap_steps: int = 0  # most steps a decoding sequence ever waited for its next token
    prefill_chunks: int = 0
    recent: collections.deque[tuple[int, int, float]] = field(
        default_factory=lambda: collections.deque(maxlen=64))  # (sequences, sampled tokens, seconds) per step


class Scheduler:
    def __init__(self, lib: Any, ctx: Any, vocab: Any, *, name: str, slots: int, slot_context: int,
                 batch_tokens: int, scope: Scope) -> None:
        self._lib, self._ctx, self._vocab = lib, ctx, vocab
        self._mem = lib.llama_get_memory(ctx)
        self.name = name
        self.slots = [Slot(seq=i) for i in range(slots)]
        self.slot_context = slot_context
        self.batch_tokens = max(batch_tokens, slots)
        self.scope = scope
        self.stats = Stats()
        self._batch = lib.llama_batch_init(self.batch_tokens, 0, 1)
        self._cond = threading.Condition()
        self._waiting: collections.deque[LlamaJob] = collections.deque()
        self._stopping = False
        self._order: list[Slot] = []  # busy slots, in the order their requests were admitted
        self.crashed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"llamacpp-{name}", daemon=True)
        self._thread.start()

    # ---- any thread ----

    @property
    def busy(self) -> int:
        return sum(1 for s in self.slots if s.busy)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, job: LlamaJob) -> None:
        with self._cond:
            if self._stopping:
                raise ServiceUnavailableError(f"The model '{self.name}' was unloaded.")
            self._waiting.append(job)
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread; requests still waiting or running end ``cancelled``."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._lib.llama_batch_free(self._batch)

    # ---- the scheduler thread ----

    def _run(self) -> None:
        try:
            while self._next():
                self._step()
        except BaseException as exc:  # a bug in the scheduler itself: fail everything, never hang a client
            log.exception("the scheduler of %s crashed", self.name)
            self.crashed = exc
            self._fail_all(exc)
        else:
            self._fail_all("cancelled")

    def _next(self) -> bool:
        """Drop cancelled requests and admit waiting ones into idle slots; block while there is
        nothing to do. False: stop."""
        with self._cond:
            while True:
                if self._stopping:
                    return False
                dropped = [job for job in self._waiting if job.cancelled]
                if dropped:
                    self._waiting = collections.deque(job for job in self._waiting if not job.cancelled)
                for job in dropped:
                    _report(job, "cancelled")
                for slot in [s for s in self._order if s.job.cancelled]:
                    self._finish(slot, "cancelled")
                while self._waiting and len(self._order) < len(self.slots):
                    self._admit(self._waiting.popleft())
                if self._order:
                    return True
                self._cond.wait()

    def _admit(self, job: LlamaJob) -> None:
        slot, reuse = pick_slot(self.slots, job.prompt, job.owner, self.scope)
        if reuse < len(slot.tokens) and not self._lib.llama_memory_seq_rm(self._mem, slot.seq, reuse, -1):
            reuse = 0  # this cache cannot drop a tail: start the sequence over
        if reuse == 0:
            self._lib.llama_memory_seq_rm(self._mem, slot.seq, -1, -1)
        try:
            sampler = make_sampler(self._lib, self._vocab, job.params, job.grammar)
        except Exception as exc:
            _report(job, exc)
            return
        del slot.tokens[reuse:]
        slot.owner, slot.job, slot.sampler = job.owner, job, sampler
        slot.fed, slot.generated, slot.last_token = reuse, 0, -1
        self._order.append(slot)
        stats = self.stats
        stats.requests += 1
        stats.prompt_tokens += len(job.prompt)
        stats.prompt_reused += reuse
        stats.prefix_hits += reuse > 0

    def _step(self) -> None:
        lib, batch = self._lib, self._batch
        n = 0
        wanted: list[tuple[Slot, int, list[int]]] = []  # (slot, batch index of its logits or -1, tokens added)
        # in sequence-id order: llama.cpp takes a ubatch from a run of consecutive ids (one KV stream each)
        decoding = sorted((s for s in self._order if not s.prefilling), key=_seq)
        for slot in decoding:
            _put(batch, n, slot.last_token, len(slot.tokens), slot.seq, True)
            wanted.append((slot, n, [slot.last_token]))
            n += 1
        # prompts: the least left to evaluate first, so that a huge prompt delays no short one's first
        # token either (it still gets what the short ones leave of the step, every step)
        for slot in sorted((s for s in self._order if s.prefilling), key=lambda s: len(s.job.prompt) - s.fed):
            if n >= self.batch_tokens:
                break
            prompt = slot.job.prompt
            chunk = prompt[slot.fed: slot.fed + self.batch_tokens - n]
            last = slot.fed + len(chunk) == len(prompt)
            start = len(slot.tokens)
            for i, token in enumerate(chunk):
                _put(batch, n + i, token, start + i, slot.seq, last and i == len(chunk) - 1)
            n += len(chunk)
            wanted.append((slot, n - 1 if last else -1, chunk))
            self.stats.prefill_chunks += 1
        batch.n_tokens = n
        began = time.perf_counter()
        # each slot has a KV stream of its own, never overfilled (a request ends at slot_context):
        # no other slot's cache could make room, so any failure fails the step's requests
        code = lib.llama_decode(self._ctx, batch)
        if code != 0:
            error = RuntimeError(f"llama_decode failed ({code})")
            for slot, _, _ in wanted:
                lib.llama_memory_seq_rm(self._mem, slot.seq, -1, -1)
                slot.tokens.clear()
                self._finish(slot, error)
            return
        stats = self.stats
        stats.steps += 1
        step = stats.steps
        sampled = 0
        for slot, index, added in wanted:
            slot.tokens.extend(added)
            if slot.prefilling:
                slot.fed += len(added)
                stats.prompt_evaluated += len(added)
            if index < 0:
                continue
            if slot.generated:
                stats.max_decode_gap_steps = max(stats.max_decode_gap_steps, step - slot.last_step)
            slot.last_step = step
            sampled += 1
            reason: str | BaseException | None
            try:
                reason = self._take(slot, lib.llama_sampler_sample(slot.sampler, self._ctx, index))
            except Exception as exc:  # a callback that raised
                reason = exc
            if reason is not None:
                self._finish(slot, reason)
        seconds = time.perf_counter() - began
        stats.decode_seconds += seconds
        stats.step_sequences += len(wanted)
        stats.recent.append((len(wanted), sampled, seconds))

    def _take(self, slot: Slot, token: int) -> str | None:
        """A sampled token: report it, or say why the request is finished."""
        job = slot.job
        if slot.generated == 0:
            self.stats.ttft_count += 1
            self.stats.ttft_seconds += time.perf_counter() - job.submitted
        if job.cancelled:
            return "cancelled"
        if job.params.max_tokens <= 0:
            return "length"
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            return "stop"
        slot.generated += 1
        self.stats.generated += 1
        slot.last_token = token
        if slot.generated == 1 and job.grammar is not None and job.grammar.free_after_text and not self._opens(token):
            self._lib.llama_sampler_free(slot.sampler)  # plain text from here on: no grammar to check
            slot.sampler = make_sampler(self._lib, self._vocab, job.params, None)
        job.on_token(token)
        if slot.generated >= job.params.max_tokens or len(slot.tokens) + 1 > self.slot_context:
            return "length"  # (the context is full when this token has no room to be evaluated)
        return None

    def _opens(self, token: int) -> bool:
        """Whether the token's text starts with ``<`` (a tool call's first token, under ``auto``)."""
        buf = ctypes.create_string_buffer(256)
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return n < 0 or buf.raw[:1] == b"<"  # (a piece longer than the buffer: keep the grammar, to be safe)

    def _finish(self, slot: Slot, reason: str | BaseException) -> None:
        job, slot.job = slot.job, None
        if slot.sampler is not None:
            self._lib.llama_sampler_free(slot.sampler)
            slot.sampler = None
        slot.last_used = self.stats.steps
        self._order.remove(slot)
        _report(job, reason)

    def _fail_all(self, reason: str | BaseException) -> None:
        with self._cond:
            self._stopping = True
            waiting = list(self._waiting)
            self._waiting.clear()
        for slot in list(self._order):
            self._finish(slot, reason)
        for job in waiting:
            _report(job, reason)


def _seq(slot: Slot) -> int:
    return slot.seq


def _put(batch: Any, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
    batch.token[i] = token
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq
    batch.logits[i] = logits


def _report(job: LlamaJob, reason: str | BaseException) -> None:
    try:
        job.on_done(reason)
    except Exception:
        log.exception("on_done callback failed")


def occupancy(stats: Stats, slots: int) -> float:
    """Sequences per step over the recent steps, as a share of the slots."""
    recent: Sequence[tuple[int, int, float]] = list(stats.recent)
    if not recent or slots <= 0:
        return 0.0
    return sum(r[0] for r in recent) / len(recent) / slots
