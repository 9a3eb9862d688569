"""The llama.cpp engine's KV cache in bytes, known before the model is loaded (from the GGUF
header), and what ``parallel: auto`` makes of it.

Every slot (a sequence of the shared context) holds its own ``context_length`` tokens of keys and
values for every layer, in f16 (llama.cpp's default cache type)::

    bytes per slot = context_length * sum over layers of kv_heads * (key_length + value_length) * 2

The loaded engine measures its footprint again (weights, this cache, compute buffers), and the
model manager charges the larger figure to the memory budget.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["AUTO_MAX_SLOTS", "KV_TYPE_BYTES", "auto_parallel", "kv_bytes_per_token"]

AUTO_MAX_SLOTS = 4  # as llama.cpp's own server: more only when the configuration asks for them
KV_TYPE_BYTES = 2  # f16


def _number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return int(max(value))
    return None


def kv_bytes_per_token(meta: Mapping[str, object]) -> int | None:
    """Bytes of KV cache one token takes in one sequence, from a GGUF header (None: it does not say)."""
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        return None
    layers = _number(meta.get(f"{arch}.block_count"))
    heads = _number(meta.get(f"{arch}.attention.head_count"))
    embd = _number(meta.get(f"{arch}.embedding_length"))
    if not layers or not heads or not embd:
        return None
    head_k = _number(meta.get(f"{arch}.attention.key_length")) or embd // heads
    head_v = _number(meta.get(f"{arch}.attention.value_length")) or embd // heads
    kv_heads = meta.get(f"{arch}.attention.head_count_kv", heads)
    if isinstance(kv_heads, list):  # per layer (some layers may have none)
        total_heads = sum(h for h in kv_heads if isinstance(h, int))
    else:
        total_heads = layers * (_number(kv_heads) or heads)
    return total_heads * (head_k + head_v) * KV_TYPE_BYTES


def auto_parallel(weights_bytes: int, slot_bytes: int, budget_bytes: int) -> int:
    """Slots for ``parallel: auto``: as many as fit the budget beside the weights, 1 to AUTO_MAX_SLOTS."""
    if slot_bytes <= 0:
        return AUTO_MAX_SLOTS
    return max(1, min(AUTO_MAX_SLOTS, (budget_bytes - weights_bytes) // slot_bytes))
