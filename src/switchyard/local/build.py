"""Settings -> the model manager (called by the composition root)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from switchyard.core.time import parse_duration
from switchyard.local.context import declared_context_length, gguf_metadata
from switchyard.local.kvcache import auto_parallel, kv_bytes_per_token
from switchyard.local.manager import ManagedModel, ModelManager
from switchyard.local.memory import default_budget
from switchyard.local.spec import LocalModelSpec
from switchyard.settings import LocalModelConfig, Settings

__all__ = ["budget_of", "build_manager", "managed", "parallel_slots"]


def budget_of(settings: Settings) -> int:
    return int(settings.memory_budget) if settings.memory_budget is not None else default_budget()


def _spec(model: LocalModelConfig, parallel: int = 1) -> LocalModelSpec:
    return LocalModelSpec(
        name=model.alias, engine=model.engine, source=model.model, context_length=model.context_length,
        threads=model.threads, device=model.device, max_batch=model.max_batch, chat_template=model.chat_template,
        parallel=parallel, batch_tokens=max(model.batch_tokens, parallel),
        prefix_cache_scope=model.prefix_cache_scope,
    )


def parallel_slots(model: LocalModelConfig, budget: int) -> int:
    """A llama.cpp model's slots: ``parallel`` as configured, or for ``auto`` as many as fit the
    budget beside its weights (the KV cache sized from the GGUF header), at most 4."""
    if model.engine != "llamacpp":
        return 1
    if isinstance(model.parallel, int):
        return model.parallel
    path = Path(model.model)
    try:
        stat = path.stat()
        per_token = _kv_per_token(str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return auto_parallel(0, 0, budget)
    context = declared_context_length(_spec(model)) or 0
    return auto_parallel(stat.st_size, per_token * context, budget)


@lru_cache(maxsize=64)
def _kv_per_token(path: str, mtime_ns: int, size: int) -> int:
    """KV bytes per token of a GGUF file (0: unknown); cached, as routing tables are rebuilt."""
    try:
        return kv_bytes_per_token(gguf_metadata(Path(path))) or 0
    except (OSError, ValueError, struct.error):
        return 0


def managed(model: LocalModelConfig, budget: int | None = None) -> ManagedModel:
    spec = _spec(model, parallel_slots(model, default_budget() if budget is None else budget))
    return ManagedModel(spec=spec, pinned=model.pinned, preload=model.preload,
                        keep_alive=parse_duration(model.keep_alive), max_tokens=model.max_tokens,
                        max_tool_calls=model.max_tool_calls)


def build_manager(settings: Settings, models: Sequence[LocalModelConfig]) -> ModelManager:
    budget = budget_of(settings)
    return ModelManager([managed(m, budget) for m in models], budget, max_loaded=settings.max_loaded_models)
