"""Continuous batching for a Hugging Face causal LM: one scheduler thread per loaded model.

The running batch is one ``DynamicCache`` whose rows are left-padded to a common length, with a
2-D attention mask marking the padding; every row's position ids come from its own length. At
each step boundary the scheduler

1. drops cancelled jobs (waiting or running),
2. admits waiting jobs, FIFO, up to ``max_batch`` rows: each newcomer's prompt is prefilled alone,
   its first token sampled, and its KV cache merged into the batch (the shorter side left-padded),
3. decodes one token for every row in a single forward pass, samples per row (each row's own
   temperature, top-p, generator and grammar mask), reports the tokens, and removes finished rows
   from the cache (and the padding columns no remaining row needs).

Why not transformers' own ``ContinuousBatchingManager``: it samples with one global
``do_sample``/torch seed for all requests and has no per-request logits mask, so it can give
neither per-request seeds nor grammar-constrained rows.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from switchyard.errors import ServiceUnavailableError
from switchyard.local.engine import OnDone, OnToken, SamplingParams
from switchyard.local.engines.hf_sampling import RowSampler, make_sampler, sample_tokens
from switchyard.local.engines.xgrammar_constraint import CompiledConstraint, RowGrammar

if TYPE_CHECKING:
    import torch

__all__ = ["BatchJob", "BatchScheduler", "ModelSlot", "cache_argument"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ModelSlot:
    """What the scheduler needs to know about the loaded model (shared with the engine)."""

    model: Any  # a transformers PreTrainedModel, in eval mode, on ``device``; None once closed
    device: torch.device
    eos_ids: frozenset[int]
    token_limit: int  # ids at or above this are not in the tokenizer: never sampled
    context_length: int
    max_batch: int
    name: str
    cache_arg: str  # the forward argument that takes the Cache (``cache_argument``)


def cache_argument(model: Any) -> str:
    """The name under which ``model.forward`` takes its ``Cache``: ``cache`` in transformers 5's
    cache API, ``past_key_values`` before it (5.x warns for that name, and drops it in 5.40)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class BatchJob:
    """One generation request; ``cancel`` may be called from any thread, any number of times."""

    def __init__(self, scheduler: BatchScheduler, prompt: list[int], params: SamplingParams,
                 grammar: CompiledConstraint | None, on_token: OnToken, on_done: OnDone) -> None:
        self._scheduler = scheduler
        self.prompt = prompt
        self.params = params
        self.grammar = grammar
        self.on_token = on_token
        self.on_done = on_done
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._scheduler.wake()


@dataclass(slots=True)
class _Row:
    job: BatchJob
    sampler: RowSampler
    grammar: RowGrammar | None
    generated: int = 0
    last_token: int = -1
    cache: Any = None  # the row's own cache between prefill and merge

    @property
    def length(self) -> int:
        return len(self.job.prompt) + self.generated


class BatchScheduler:
    def __init__(self, slot: ModelSlot) -> None:
        self._slot = slot
        self._cond = threading.Condition()
        self._waiting: collections.deque[BatchJob] = collections.deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        # Batch state, touched only by the scheduler thread.
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None

    # ---- any thread ----

    def submit(self, job: BatchJob) -> None:
        with self._cond:
            if self._stopping:
                raise ServiceUnavailableError(f"model {self._slot.name!r} is unloading")
            self._waiting.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"hf-batch-{self._slot.name}", daemon=True)
                self._thread.start()
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # ---- scheduler thread ----

    def _run(self) -> None:
        import torch

        try:
            with torch.inference_mode():
                while True:
                    admitted, dropped = self._take_waiting()
                    for job in dropped:
                        _finish_job(job, "cancelled")
                    if admitted is None:
                        break
                    if admitted:
                        self._admit(admitted)
                    if self._rows:
                        self._step()
        except BaseException as exc:  # a bug in the scheduler itself: fail everything, never hang a client
            log.exception("scheduler of %s crashed", self._slot.name)
            self._fail_all(exc)
        else:
            self._fail_all(None)

    def _take_waiting(self) -> tuple[list[BatchJob] | None, list[BatchJob]]:
        """Jobs to admit (None: stop), and cancelled waiting jobs; blocks while there is nothing to do."""
        with self._cond:
            while True:
                dropped = [job for job in self._waiting if job.cancelled]
                if dropped:
                    self._waiting = collections.deque(job for job in self._waiting if not job.cancelled)
                if self._stopping:
                    return None, dropped
                if dropped or self._rows or self._waiting:
                    break
                self._cond.wait()
            free = self._slot.max_batch - len(self._rows)
            admitted = [self._waiting.popleft() for _ in range(min(free, len(self._waiting)))]
            return admitted, dropped

    def _fail_all(self, exc: BaseException | None) -> None:
        with self._cond:
            self._stopping = True
            waiting = list(self._waiting)
            self._waiting.clear()
        for row in self._rows:
            _finish_job(row.job, exc if exc is not None else "cancelled")
        for job in waiting:
            _finish_job(job, exc if exc is not None else "cancelled")
        self._rows, self._cache, self._mask = [], None, None

    def _admit(self, jobs: list[BatchJob]) -> None:
        """Prefill each newcomer alone, sample its first token, and merge the survivors into the batch."""
        import torch
        from transformers import DynamicCache

        joining: list[_Row] = []
        for job in jobs:
            if job.cancelled:
                _finish_job(job, "cancelled")
                continue
            reason: str | BaseException | None
            try:
                row = _Row(job, make_sampler(job.params.temperature, job.params.top_p, job.params.seed),
                           RowGrammar(job.grammar) if job.grammar is not None else None)
                ids = torch.tensor([job.prompt], dtype=torch.long, device=self._slot.device)
                row.cache = DynamicCache()
                out = self._slot.model(input_ids=ids, use_cache=True, logits_to_keep=1,
                                       **{self._slot.cache_arg: row.cache})
                token = self._sample(out.logits[:, -1, :], [row])[0]
                reason = self._advance(row, token)
            except Exception as exc:
                reason = exc
            if reason is None:
                joining.append(row)
            else:
                _finish_job(job, reason)
        if joining:
            try:
                self._merge(joining)
            except Exception as exc:  # out of memory, most likely: the batch's cache may be half merged
                for row in joining:
                    _finish_job(row.job, exc)
                self._finish_rows(dict.fromkeys(range(len(self._rows)), exc))

    def _merge(self, joining: list[_Row]) -> None:
        import torch
        import torch.nn.functional as F

        parts: list[tuple[Any, torch.Tensor]] = []
        if self._rows:
            assert self._mask is not None
            parts.append((self._cache, self._mask))
        parts += [(row.cache, torch.ones((1, len(row.job.prompt)), dtype=torch.long, device=self._slot.device))
                  for row in joining]
        width = max(mask.shape[1] for _, mask in parts)
        target = parts[0][0]
        for layer_index, layer in enumerate(target.layers):
            keys, values = [], []
            for cache, mask in parts:
                pad = width - mask.shape[1]
                source = cache.layers[layer_index]
                keys.append(F.pad(source.keys, (0, 0, pad, 0)) if pad else source.keys)
                values.append(F.pad(source.values, (0, 0, pad, 0)) if pad else source.values)
            layer.keys = torch.cat(keys, dim=0)
            layer.values = torch.cat(values, dim=0)
        self._mask = torch.cat([F.pad(mask, (width - mask.shape[1], 0)) for _, mask in parts], dim=0)
        self._cache = target
        for row in joining:
            row.cache = None
        self._rows.extend(joining)

    def _step(self) -> None:
        """One decoding step for the whole batch."""
        import torch

        cancelled = {i: "cancelled" for i, row in enumerate(self._rows) if row.job.cancelled}
        if cancelled:
            self._finish_rows(dict(cancelled))
            if not self._rows:
                return
        assert self._mask is not None
        device = self._slot.device
        ids = torch.tensor([[row.last_token] for row in self._rows], dtype=torch.long, device=device)
        positions = torch.tensor([[row.length - 1] for row in self._rows], dtype=torch.long, device=device)
        mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        try:
            out = self._slot.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                   **{self._slot.cache_arg: self._cache})
            self._mask = mask
            tokens = self._sample(out.logits[:, -1, :], self._rows)
        except Exception as exc:
            self._finish_rows(dict.fromkeys(range(len(self._rows)), exc))
            return
        finished: dict[int, str | BaseException] = {}
        for index, (row, token) in enumerate(zip(self._rows, tokens, strict=True)):
            reason: str | BaseException | None
            try:
                reason = self._advance(row, token)
            except Exception as exc:
                reason = exc
            if reason is not None:
                finished[index] = reason
        if finished:
            self._finish_rows(finished)

    def _sample(self, logits: torch.Tensor, rows: Sequence[_Row]) -> list[int]:
        import torch
        import xgrammar

        logits = logits.float()
        if logits.shape[-1] > self._slot.token_limit:
            logits[:, self._slot.token_limit:] = float("-inf")
        grammars = [(i, row.grammar) for i, row in enumerate(rows) if row.grammar is not None]
        if grammars:
            bitmask = torch.full((len(rows), grammars[0][1].bitmask.shape[1]), -1, dtype=torch.int32)
            for i, grammar in grammars:
                bitmask[i] = grammar.bitmask[0]
            indices = [i for i, _ in grammars]
            xgrammar.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=indices)
        return sample_tokens(logits, [row.sampler for row in rows])

    def _advance(self, row: _Row, token: int) -> str | None:
        """Take a sampled token for a row: report it, or say why the row is finished."""
        job = row.job
        if job.cancelled:
            return "cancelled"
        if row.grammar is not None:
            row.grammar.accept(token)
            if row.grammar.terminated():
                return "stop"
        if token in self._slot.eos_ids:
            return "stop"
        row.generated += 1
        row.last_token = token
        job.on_token(token)
        if row.generated >= job.params.max_tokens or row.length >= self._slot.context_length:
            return "length"
        if row.grammar is not None and row.grammar.only_stop_allowed():
            return "stop"
        return None

    def _finish_rows(self, finished: dict[int, str | BaseException]) -> None:
        """Report finished rows and drop them from the batch, and the padding columns nobody needs."""
        import torch

        for index, reason in finished.items():
            _finish_job(self._rows[index].job, reason)
        keep = [i for i in range(len(self._rows)) if i not in finished]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        assert self._mask is not None
        index_tensor = torch.tensor(keep, dtype=torch.long, device=self._slot.device)
        mask = self._mask.index_select(0, index_tensor)
        lead = int(mask.any(dim=0).to(torch.int8).argmax())  # leading columns that are padding in every row
        self._mask = mask[:, lead:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index_tensor)[:, :, lead:, :]
            layer.values = layer.values.index_select(0, index_tensor)[:, :, lead:, :]


def _finish_job(job: BatchJob, reason: str | BaseException) -> None:
    try:
        job.on_done(reason)
    except Exception:
        log.exception("on_done callback failed")
