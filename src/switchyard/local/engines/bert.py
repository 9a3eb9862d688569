"""The ``bert`` engine: BERT sentence-embedding models (a sentence-transformers model directory)
run in numpy, with no torch. The bundled all-MiniLM-L6-v2 runs on it.

The directory is read as sentence-transformers reads it: ``modules.json`` lists the pipeline
(a Transformer, then Pooling, then optionally Normalize), ``sentence_bert_config.json`` gives
``max_seq_length`` and ``do_lower_case``, ``<pooling>/config.json`` the pooling modes (several
are concatenated, in the file's order). The weights come from ``model.safetensors``; the
tokenizer from ``tokenizer.json`` (the ``tokenizers`` library, the same Rust code that
sentence-transformers' fast tokenizer runs). A model this engine cannot run (another
architecture, a Dense module, weights only in ``pytorch_model.bin``) fails to load with a message
that points to the ``sentence_transformers`` engine.

``load``, ``embed`` and ``count_tokens`` are blocking; the caller runs them in a thread. One lock
serialises them: two forward passes at once on a CPU only contend for the same cores.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer
from tokenizers.normalizers import Lowercase
from tokenizers.normalizers import Sequence as NormalizerSequence

from switchyard.local.context import sentence_max_seq_length
from switchyard.local.engine import EmbeddingEngine
from switchyard.local.engines.bert_encoder import F32, BertEncoder, read_safetensors
from switchyard.local.spec import LocalModelSpec

__all__ = ["BertEmbeddingEngine", "load"]

log = logging.getLogger(__name__)

BATCH = 32  # texts per forward pass, sorted by length so that a batch pads little
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_POOLING_KEYS = {  # sentence-transformers' old boolean keys, in its order
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken",
}
_OTHER_ENGINE = "; the sentence_transformers engine runs it (pip install 'switchyard[sentence-transformers]')"


@dataclass(frozen=True, slots=True)
class Pipeline:
    """What a sentence-transformers directory asks for, read from its JSON files."""

    transformer: Path  # the directory with config.json, tokenizer.json and the weights
    pooling: tuple[str, ...]
    normalize: bool


def read_pipeline(directory: Path) -> Pipeline:
    """The modules of ``modules.json``; without one, a plain model with mean pooling (as
    sentence-transformers builds it)."""
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return Pipeline(directory, ("mean",), normalize=False)
    modules: list[dict[str, Any]] = json.loads(modules_file.read_text(encoding="utf-8"))
    transformer: Path | None = None
    pooling: tuple[str, ...] | None = None
    normalize = False
    for module in sorted(modules, key=lambda m: int(m.get("idx", 0))):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = directory / str(module.get("path", ""))
        if kind == "Transformer" and transformer is None and pooling is None:
            transformer = path
        elif kind == "Pooling" and transformer is not None and pooling is None and not normalize:
            pooling = _pooling_modes(path / "config.json")
        elif kind == "Normalize" and pooling is not None:
            normalize = True
        else:
            raise ValueError(f"the bert engine runs Transformer, Pooling and Normalize modules, in that order; "
                             f"this model has {module.get('type')!r}" + _OTHER_ENGINE)
    if transformer is None or pooling is None:
        raise ValueError("modules.json has no Transformer and Pooling modules" + _OTHER_ENGINE)
    return Pipeline(transformer, pooling, normalize)


def _pooling_modes(path: Path) -> tuple[str, ...]:
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(m for key, m in _LEGACY_POOLING_KEYS.items() if config.get(key)) or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown or not modes:
        raise ValueError(f"pooling mode {unknown} is not supported (supported: {', '.join(POOLING_MODES)})")
    return modes


def load(spec: LocalModelSpec) -> EmbeddingEngine:
    """Load ``spec.source``, a sentence-transformers (or plain BERT) model directory."""
    directory = Path(spec.source).expanduser()
    if not directory.is_dir():
        raise ValueError(f"{spec.source} is not a model directory: the bert engine reads one from disk"
                         + _OTHER_ENGINE.replace("runs it", "also takes a Hugging Face id"))
    if spec.device == "cuda":
        log.warning("the bert engine runs on the CPU; %s was asked for CUDA", spec.name)
    pipeline = read_pipeline(directory)
    root = pipeline.transformer
    config: dict[str, Any] = json.loads((root / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "bert":
        raise ValueError(f"the bert engine runs BERT models; this one is {config.get('model_type')!r}"
                         + _OTHER_ENGINE)
    if not (root / "model.safetensors").is_file():
        raise ValueError("the bert engine reads model.safetensors, which this model does not have" + _OTHER_ENGINE)
    if not (root / "tokenizer.json").is_file():
        raise ValueError("the bert engine needs tokenizer.json (a fast tokenizer)" + _OTHER_ENGINE)
    encoder = BertEncoder(config, read_safetensors(root / "model.safetensors"))
    limit = spec.context_length or sentence_max_seq_length(root) or encoder.max_positions
    if limit > encoder.max_positions:
        raise ValueError(f"context_length {limit} is more than the model's {encoder.max_positions} positions")
    tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    tokenizer.no_padding()  # tokenizer.json may ask for fixed padding; batches are padded here
    tokenizer.enable_truncation(limit)  # special tokens included, as sentence-transformers truncates
    if _lowercase(root):
        normalizer = tokenizer.normalizer
        tokenizer.normalizer = NormalizerSequence([Lowercase(), normalizer] if normalizer else [Lowercase()])
    pad = config.get("pad_token_id")
    return BertEmbeddingEngine(encoder, tokenizer, pipeline, context_length=limit,
                               pad_id=pad if isinstance(pad, int) and 0 <= pad < config["vocab_size"] else 0)


def _lowercase(root: Path) -> bool:
    try:
        return bool(json.loads((root / "sentence_bert_config.json").read_text(encoding="utf-8")).get("do_lower_case"))
    except (OSError, ValueError, AttributeError):
        return False


class BertEmbeddingEngine:
    """A loaded BERT sentence-embedding model (see ``switchyard.local.engine.EmbeddingEngine``)."""

    def __init__(self, encoder: BertEncoder, tokenizer: Tokenizer, pipeline: Pipeline, *, context_length: int,
                 pad_id: int = 0) -> None:
        self._encoder: BertEncoder | None = encoder
        self._tokenizer = tokenizer
        self._pooling = pipeline.pooling
        self._normalize = pipeline.normalize
        self._pad = pad_id
        self._lock = threading.Lock()
        self.dimensions: int = encoder.hidden * len(pipeline.pooling)
        self.context_length: int = context_length
        self.footprint_bytes: int = encoder.nbytes

    @property
    def encoder(self) -> BertEncoder:
        if self._encoder is None:
            raise RuntimeError("the engine is closed")
        return self._encoder

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model sees: special tokens included, each text truncated as ``embed`` truncates it."""
        if not texts:
            return 0
        with self._lock:
            self.encoder  # noqa: B018 - raises once closed
            return sum(len(e.ids) for e in self._tokenizer.encode_batch(list(texts)))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            encoder = self.encoder
            encodings = self._tokenizer.encode_batch(list(texts))
            out = np.empty((len(encodings), self.dimensions), dtype=np.float32)
            order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
            for start in range(0, len(order), BATCH):
                rows = order[start:start + BATCH]
                out[rows] = self._embed_batch(encoder, [encodings[i] for i in rows])
        result: list[list[float]] = out.tolist()
        return result

    def _embed_batch(self, encoder: BertEncoder, encodings: Sequence[Encoding]) -> F32:
        tokens = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), tokens), self._pad, dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros((len(encodings), tokens), dtype=np.float32)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            types[row, :len(e.ids)] = e.type_ids
            mask[row, :len(e.ids)] = 1.0
        hidden = encoder(ids, types, mask)
        pooled = np.concatenate([_pool(mode, hidden, mask) for mode in self._pooling], axis=1)
        if self._normalize:  # torch.nn.functional.normalize: x / max(|x|, 1e-12)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
        return pooled

    def close(self) -> None:
        with self._lock:
            self._encoder = None


def _pool(mode: str, hidden: F32, mask: F32) -> F32:
    """One of sentence-transformers' pooling modes over (batch, tokens, hidden) with right padding."""
    weights = mask[..., None]
    lengths: npt.NDArray[np.int64] = mask.sum(axis=1).astype(np.int64)
    pooled: F32
    if mode == "cls":
        pooled = hidden[:, 0]
    elif mode == "max":
        pooled = np.where(weights > 0, hidden, -np.inf).max(axis=1).astype(np.float32)
    elif mode in ("mean", "mean_sqrt_len_tokens"):
        count = np.maximum(weights.sum(axis=1), np.float32(1e-9))
        pooled = (hidden * weights).sum(axis=1) / (count if mode == "mean" else np.sqrt(count))
    elif mode == "weightedmean":
        position = weights * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :, None]
        pooled = (hidden * position).sum(axis=1) / np.maximum(position.sum(axis=1), np.float32(1e-9))
    else:  # lasttoken
        pooled = hidden[np.arange(hidden.shape[0]), np.maximum(lengths - 1, 0)]
    return pooled
