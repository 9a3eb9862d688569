"""A local model's context length before it is loaded, read from its files without importing an
engine: what ``/v1/models`` reports for a model that is not in memory. Once loaded, the engine's
own figure is used (the two agree: each engine sizes its context by the same rule).

- llamacpp: the configured ``context_length``, else the GGUF's trained context
  (``<arch>.context_length``) up to the engine's default cap;
- transformers: the configured one, else ``max_position_embeddings`` of ``config.json`` (2048
  when it has none);
- sentence_transformers and bert: the configured one, else ``max_seq_length`` of
  ``sentence_bert_config.json``, else the tokenizer's ``model_max_length`` up to the model's
  ``max_position_embeddings`` (as sentence-transformers sizes it).

``None`` when the files do not say (a hub id not downloaded, an unreadable file).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO

from switchyard.local.spec import LocalModelSpec

__all__ = [
    "LLAMACPP_DEFAULT_MAX_CONTEXT", "declared_context_length", "gguf_metadata", "gguf_trained_context",
    "sentence_max_seq_length",
]

LLAMACPP_DEFAULT_MAX_CONTEXT = 8192  # the llama.cpp engine uses the model's own context up to this

# GGUF value types -> struct format of a scalar (8: string, 9: array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_KEYS = 100_000


def _read(f: BinaryIO, fmt: str) -> int | float | bool:
    size = struct.calcsize(fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise ValueError("truncated GGUF header")
    value: int | float | bool = struct.unpack(fmt, raw)[0]
    return value


def _string(f: BinaryIO) -> str:
    length = int(_read(f, "<Q"))
    if length > 1 << 20:
        raise ValueError("implausible GGUF string length")
    return f.read(length).decode("utf-8", "replace")


def _skip(f: BinaryIO, kind: int) -> None:
    if kind in _SCALARS:
        f.seek(struct.calcsize(_SCALARS[kind]), 1)
    elif kind == _STRING:
        f.seek(int(_read(f, "<Q")), 1)
    elif kind == _ARRAY:
        item, count = int(_read(f, "<I")), int(_read(f, "<Q"))
        if item in _SCALARS:
            f.seek(struct.calcsize(_SCALARS[item]) * count, 1)
        else:
            for _ in range(count):
                _skip(f, item)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")


def gguf_trained_context(path: Path) -> int | None:
    """``<general.architecture>.context_length`` from a GGUF file's header (v2 and v3)."""
    with path.open("rb") as f:
        if f.read(4) != b"GGUF" or int(_read(f, "<I")) < 2:
            return None
        _read(f, "<Q")  # tensor count
        keys = int(_read(f, "<Q"))
        arch: str | None = None
        lengths: dict[str, int] = {}
        for _ in range(min(keys, _MAX_KEYS)):
            key, kind = _string(f), int(_read(f, "<I"))
            if key == "general.architecture" and kind == _STRING:
                arch = _string(f)
            elif key.endswith(".context_length") and kind in _SCALARS and kind not in (6, 7, 12):
                lengths[key] = int(_read(f, _SCALARS[kind]))
            else:
                _skip(f, kind)
            if arch is not None and f"{arch}.context_length" in lengths:
                return lengths[f"{arch}.context_length"]
    return None


def gguf_metadata(path: Path) -> dict[str, int | str | list[int]]:
    """A GGUF file's header: its integer and string values, and its integer arrays of up to 4,096
    items (per-layer figures); the vocabulary and other long arrays are skipped."""
    found: dict[str, int | str | list[int]] = {}
    with path.open("rb") as f:
        if f.read(4) != b"GGUF" or int(_read(f, "<I")) < 2:
            return found
        _read(f, "<Q")  # tensor count
        for _ in range(min(int(_read(f, "<Q")), _MAX_KEYS)):
            key, kind = _string(f), int(_read(f, "<I"))
            if kind == _STRING:
                found[key] = _string(f)
            elif kind in _SCALARS and kind not in (6, 7, 12):
                found[key] = int(_read(f, _SCALARS[kind]))
            elif kind == _ARRAY:
                item, count = int(_read(f, "<I")), int(_read(f, "<Q"))
                if item in _SCALARS and item not in (6, 7, 12) and count <= 4096:
                    found[key] = [int(_read(f, _SCALARS[item])) for _ in range(count)]
                elif item in _SCALARS:
                    f.seek(struct.calcsize(_SCALARS[item]) * count, 1)
                else:
                    for _ in range(count):
                        _skip(f, item)
            else:
                _skip(f, kind)
    return found


def _json_int(path: Path, key: str) -> int | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def declared_context_length(spec: LocalModelSpec) -> int | None:
    """The context length ``spec`` will be served with, from its configuration and files."""
    if spec.context_length is not None:
        return spec.context_length
    source = Path(spec.source)
    if spec.engine == "llamacpp":
        try:
            trained = gguf_trained_context(source) if source.is_file() else None
        except (OSError, ValueError, struct.error):
            return None
        return min(trained or LLAMACPP_DEFAULT_MAX_CONTEXT, LLAMACPP_DEFAULT_MAX_CONTEXT)
    if spec.engine == "transformers":
        config = source / "config.json"
        if not config.is_file():
            return None
        return _json_int(config, "max_position_embeddings") or 2048  # the engine's own fallback
    return sentence_max_seq_length(source) if source.is_dir() else None


def sentence_max_seq_length(directory: Path) -> int | None:
    """The tokens a sentence-transformers model directory embeds (the rest is truncated)."""
    configured = _json_int(directory / "sentence_bert_config.json", "max_seq_length")
    if configured is not None:
        return configured
    tokenizer = _json_int(directory / "tokenizer_config.json", "model_max_length")
    positions = _json_int(directory / "config.json", "max_position_embeddings")
    limits = [n for n in (tokenizer, positions) if n is not None and n < 1_000_000]  # a huge sentinel: none
    return min(limits) if limits else None
