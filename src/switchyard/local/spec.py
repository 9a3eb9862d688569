"""A declared local model, as an engine loader sees it (built from settings by the manager)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["EngineKind", "LocalModelSpec"]

EngineKind = Literal["llamacpp", "transformers", "bert", "sentence_transformers"]


@dataclass(frozen=True, slots=True)
class LocalModelSpec:
    name: str  # the alias clients use
    engine: EngineKind
    source: str  # a file or directory path, or a Hugging Face hub id (loaded only when a hub is reachable)
    context_length: int | None = None  # None: the model's own
    threads: int | None = None  # CPU threads for one generation; None: the engine's safe default
    device: Literal["cpu", "cuda", "auto"] = "auto"
    max_batch: int = 8  # transformers: sequences decoded together in one forward pass
    chat_template: str | None = None  # a Jinja template overriding the model's own
    parallel: int = 1  # llamacpp: slots (sequences sharing one context); resolved from "auto" by local.build
    batch_tokens: int = 512  # llamacpp: tokens evaluated per step
    prefix_cache_scope: Literal["owner", "shared", "off"] = "owner"  # llamacpp: who may reuse a cached prefix
