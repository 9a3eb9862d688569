"""The sentence-transformers engine on the real bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from transformers import AutoTokenizer

from switchyard.local.engine import EmbeddingEngine
from switchyard.local.engines import sentence
from switchyard.local.spec import LocalModelSpec
from tests.local.bundled import minilm_dir

TEXTS = [
    "The cat sat on the mat.",
    "A cat was sitting on a rug.",
    "Quarterly revenue rose by eight percent.",
    "naïve café — 日本語 🙂",
    "",
]


def spec(**kw: object) -> LocalModelSpec:
    return LocalModelSpec(name="minilm", engine="sentence_transformers", source=str(minilm_dir()), device="cpu",
                          **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine() -> Iterator[EmbeddingEngine]:
    eng = sentence.load(spec())
    yield eng
    eng.close()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))


def test_shape_and_limits(engine: EmbeddingEngine) -> None:
    assert isinstance(engine, EmbeddingEngine)
    assert engine.dimensions == 384
    assert engine.context_length == 256  # all-MiniLM-L6-v2's max_seq_length
    # 22.7 M float32 parameters: the footprint is the weights, within a few % of the safetensors file
    weights = (minilm_dir() / "model.safetensors").stat().st_size
    assert 0.95 * weights < engine.footprint_bytes < 1.05 * weights


def test_vectors_are_unit_python_floats_and_semantic(engine: EmbeddingEngine) -> None:
    vectors = engine.embed(TEXTS)
    assert len(vectors) == len(TEXTS)
    for v in vectors:
        assert type(v) is list and len(v) == 384 and all(type(x) is float for x in v)
        assert math.hypot(*v) == pytest.approx(1.0, abs=1e-5)
    cat, cat2, revenue = vectors[0], vectors[1], vectors[2]
    assert cosine(cat, cat2) > 0.5 > cosine(cat, revenue) + 0.3
    # one at a time gives the same vectors as the padded batch
    assert engine.embed([TEXTS[2]])[0] == pytest.approx(revenue, abs=1e-5)
    assert engine.embed([]) == []


def test_token_counts_are_exact(engine: EmbeddingEngine) -> None:
    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    long_text = "token " * 1000
    for text in [*TEXTS, long_text]:
        expected = len(tok(text, truncation=True, max_length=256)["input_ids"])
        assert engine.count_tokens([text]) == expected
    assert engine.count_tokens([long_text]) == 256  # truncated as the model sees it
    assert engine.count_tokens(["hello world"]) == 4  # [CLS] hello world [SEP]
    assert engine.count_tokens(TEXTS) == sum(engine.count_tokens([t]) for t in TEXTS)
    assert engine.count_tokens([]) == 0


def test_context_length_override_truncates() -> None:
    eng = sentence.load(spec(context_length=8))
    try:
        assert eng.context_length == 8
        assert eng.count_tokens(["one two three four five six seven eight nine ten"]) == 8
        a, b = eng.embed(["one two three four five six", "one two three four five six seven eight nine ten"])
        assert a == pytest.approx(b, abs=1e-5)  # both cut to the same 6 words + [CLS]/[SEP]
    finally:
        eng.close()
    with pytest.raises(RuntimeError, match="closed"):
        eng.embed(["x"])

