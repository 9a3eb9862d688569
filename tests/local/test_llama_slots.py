"""Which slot a llama.cpp request gets (prefix reuse, scoped to its owner), and the KV cache's
size from the GGUF header with what ``parallel: auto``
makes of a budget."""

from __future__ import annotations

import pytest

from switchyard.local.build import parallel_slots
from switchyard.local.context import gguf_metadata
from switchyard.local.engines.llama_slots import Slot, common_prefix, pick_slot
from switchyard.local.kvcache import AUTO_MAX_SLOTS, auto_parallel, kv_bytes_per_token
from switchyard.settings import LocalModelConfig
from tests.local.bundled import smollm2_gguf


def slots(*caches: tuple[list[int], str | None, int]) -> list[Slot]:
    return [Slot(seq=i, tokens=list(t), owner=o, last_used=u) for i, (t, o, u) in enumerate(caches)]


def test_the_longest_common_prefix_of_the_owners_idle_slots_wins() -> None:
    table = slots(([1, 2, 3], "team:a", 5), ([1, 2, 3, 4, 5, 9], "team:a", 1), ([1, 2, 3, 4, 5, 6], "team:b", 2))
    slot, reuse = pick_slot(table, [1, 2, 3, 4, 5, 6, 7], "team:a", "owner")
    assert (slot.seq, reuse) == (1, 5)
    slot, reuse = pick_slot(table, [1, 2, 3, 4, 5, 6, 7], "team:b", "owner")
    assert (slot.seq, reuse) == (2, 6)
    # shared: anyone's cache; off: none, and the slot idle longest is taken
    assert pick_slot(table, [1, 2, 3, 4, 5, 6, 7], "team:c", "shared")[0].seq == 2
    assert pick_slot(table, [1, 2, 3, 4, 5, 6, 7], "team:a", "off") == (table[1], 0)


def test_a_whole_cached_prompt_still_evaluates_its_last_token() -> None:
    table = slots(([1, 2, 3, 4], "key:k", 0))
    assert pick_slot(table, [1, 2, 3, 4], "key:k", "owner") == (table[0], 3)
    assert pick_slot(table, [1, 2], "key:k", "owner") == (table[0], 1)


def test_with_nothing_to_reuse_an_empty_slot_then_the_one_idle_longest() -> None:
    table = slots(([5, 6], "key:a", 3), ([], None, 0), ([7], "key:a", 1))
    assert pick_slot(table, [1, 2], "key:b", "owner") == (table[1], 0)
    table[1].tokens = [8]
    table[1].last_used = 4
    assert pick_slot(table, [1, 2], "key:b", "owner") == (table[2], 0)
    table[2].job = object()  # busy slots are never taken
    assert pick_slot(table, [1, 2], "key:b", "owner") == (table[0], 0)
    for slot in table:
        slot.job = object()
    with pytest.raises(LookupError):
        pick_slot(table, [1], "key:b", "owner")


def test_of_the_empty_slots_the_lowest_id_so_running_sequences_stay_consecutive() -> None:
    # llama.cpp evaluates a run of consecutive sequence ids (a KV stream each) in one pass
    table = slots(([5], "key:a", 1), ([], None, 9), ([6], "key:a", 2), ([], None, 0))
    table[0].job = table[2].job = object()
    assert pick_slot(table, [1, 2], "key:b", "owner") == (table[1], 0)  # not slot 3, though empty longer


def test_common_prefix() -> None:
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_kv_bytes_per_token_from_the_gguf_header() -> None:
    meta = gguf_metadata(smollm2_gguf())
    # SmolLM2-135M: 30 layers, 9 heads of 64 dims over a 576 embedding, 3 KV heads; f16 keys and values
    assert (meta["llama.block_count"], meta["llama.attention.head_count_kv"], meta["llama.embedding_length"]) == (
        30, 3, 576)
    assert kv_bytes_per_token(meta) == 30 * 3 * (64 + 64) * 2
    assert kv_bytes_per_token({"general.architecture": "x"}) is None
    per_layer = {"general.architecture": "x", "x.block_count": 2, "x.attention.head_count": 4,
                 "x.embedding_length": 256, "x.attention.head_count_kv": [2, 0]}
    assert kv_bytes_per_token(per_layer) == 2 * (64 + 64) * 2  # one layer with 2 KV heads, one with none


def test_parallel_auto_takes_what_fits_the_budget() -> None:
    assert auto_parallel(100, 50, 1000) == AUTO_MAX_SLOTS
    assert auto_parallel(100, 300, 1000) == 3
    assert auto_parallel(100, 5000, 1000) == 1  # never none
    gguf = str(smollm2_gguf())
    weights = smollm2_gguf().stat().st_size
    slot = 2048 * 30 * 3 * 128 * 2
    model = LocalModelConfig(alias="s", engine="llamacpp", model=gguf, context_length=2048)
    assert parallel_slots(model, weights + 2 * slot + 1000) == 2
    assert parallel_slots(model, 8 << 30) == AUTO_MAX_SLOTS
    assert parallel_slots(model.model_copy(update={"parallel": 8}), 1) == 8  # as configured
