"""Settings -> the model manager (called by the composition root)."""

from __future__ import annotations

from collections.abc import Sequence

from switchyard.core.time import parse_duration
from switchyard.local.manager import ManagedModel, ModelManager
from switchyard.local.memory import default_budget
from switchyard.local.spec import LocalModelSpec
from switchyard.settings import LocalModelConfig, Settings

__all__ = ["build_manager", "managed"]


def managed(model: LocalModelConfig) -> ManagedModel:
    spec = LocalModelSpec(
        name=model.alias, engine=model.engine, source=model.model, context_length=model.context_length,
        threads=model.threads, device=model.device, max_batch=model.max_batch, chat_template=model.chat_template,
    )
    return ManagedModel(spec=spec, pinned=model.pinned, preload=model.preload,
                        keep_alive=parse_duration(model.keep_alive), max_tokens=model.max_tokens)


def build_manager(settings: Settings, models: Sequence[LocalModelConfig]) -> ModelManager:
    budget = int(settings.memory_budget) if settings.memory_budget is not None else default_budget()
    return ModelManager([managed(m) for m in models], budget, max_loaded=settings.max_loaded_models)
