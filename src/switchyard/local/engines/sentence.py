"""The ``sentence_transformers`` engine: embedding models run in-process with sentence-transformers.

``load`` is blocking (the manager calls it in a worker thread); so are ``embed`` and
``count_tokens``, which the caller runs in a thread. One lock serialises them: a Hugging Face
fast tokenizer raises "Already borrowed" when two threads tokenize with it at once, and two
forward passes at once on a CPU only contend for the same cores.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from switchyard.local.engine import EmbeddingEngine
from switchyard.local.spec import LocalModelSpec

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["SentenceEngine", "load"]

log = logging.getLogger(__name__)


def load(spec: LocalModelSpec) -> EmbeddingEngine:
    """Load ``spec.source`` (a model directory, or a hub id when a hub is reachable)."""
    from sentence_transformers import SentenceTransformer

    device = _device(spec.device)
    local = Path(spec.source).exists()
    # A directory on disk never touches the network; a hub id goes through huggingface_hub,
    # which honours HF_HUB_OFFLINE (then only its cache is used).
    model = SentenceTransformer(spec.source, device=device, local_files_only=local)
    model.eval()
    return SentenceEngine(model, context_length=spec.context_length)


def _device(wanted: str) -> str:
    if wanted == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if wanted == "cuda":
        log.warning("CUDA was asked for but is not available; running on the CPU")
    return "cpu"


class SentenceEngine:
    """A loaded sentence-transformers model (see ``switchyard.local.engine.EmbeddingEngine``)."""

    def __init__(self, model: SentenceTransformer, *, context_length: int | None = None) -> None:
        self._model: SentenceTransformer | None = model
        self._lock = threading.Lock()
        if context_length is not None:
            model.max_seq_length = context_length
        dimensions = model.get_embedding_dimension()
        if dimensions is None:
            raise ValueError("the model does not say how many dimensions its embeddings have")
        self.dimensions: int = dimensions
        self.context_length: int = _context_length(model)
        self.footprint_bytes: int = _footprint(model)

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            raise RuntimeError("the engine is closed")
        return self._model

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model sees: special tokens included, each text truncated as ``embed`` truncates it."""
        if not texts:
            return 0
        with self._lock:
            features: dict[str, Any] = self.model.preprocess(list(texts))
        mask = features.get("attention_mask")
        if mask is not None:  # padded batch: the mask marks the real tokens
            return int(mask.sum().item())
        return int(features["input_ids"].numel())  # unpadded (e.g. static embeddings: one flat row)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            # normalize_embeddings=False: a model that normalises has a Normalize module in its
            # own pipeline (all-MiniLM-L6-v2 does); one without it is returned as it was trained.
            vectors = self.model.encode(
                list(texts), convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=False
            )
        result: list[list[float]] = vectors.tolist()
        return result

    def close(self) -> None:
        model, self._model = self._model, None
        if model is None:
            return
        on_cuda = model.device.type == "cuda"
        del model
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()


def _context_length(model: SentenceTransformer) -> int:
    if model.max_seq_length:
        return int(model.max_seq_length)
    limit = getattr(model.tokenizer, "model_max_length", None)  # a huge sentinel when the tokenizer has none
    return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else 512


def _footprint(model: SentenceTransformer) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
