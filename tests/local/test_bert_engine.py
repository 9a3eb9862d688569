"""The numpy ``bert`` engine on the real bundled all-MiniLM-L6-v2, against sentence-transformers
running the same files: the same vectors (within float32 noise), the same token counts, the same
truncation, and the pipeline variants (pooling modes, no Normalize, no sentence_bert_config.json)
built from the same weights."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from switchyard.local.engine import EmbeddingEngine
from switchyard.local.engines import bert
from switchyard.local.engines.bert_encoder import read_safetensors
from switchyard.local.spec import LocalModelSpec
from tests.local.bundled import minilm_dir

LONG = "The capital of France is Paris, and the river Seine runs through it. " * 30  # ~450 tokens
TEXTS = [
    "The cat sat on the mat.",
    "A cat was sitting on a rug.",
    "Quarterly revenue rose by eight percent.",
    "naïve café — 日本語 🙂",
    "",
    "  leading and trailing spaces  ",
    LONG,
]


def spec(source: Path | None = None, **kw: object) -> LocalModelSpec:
    return LocalModelSpec(name="minilm", engine="bert", source=str(source or minilm_dir()), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine() -> Iterator[EmbeddingEngine]:
    eng = bert.load(spec())
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference() -> SentenceTransformer:
    return SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)


def assert_same(ours: list[list[float]], theirs: np.ndarray) -> None:
    a = np.array(ours, dtype=np.float64)
    b = theirs.astype(np.float64)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-5
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.99999


def test_shape_and_limits(engine: EmbeddingEngine, reference: SentenceTransformer) -> None:
    assert isinstance(engine, EmbeddingEngine)
    assert engine.dimensions == reference.get_embedding_dimension() == 384
    assert engine.context_length == reference.max_seq_length == 256
    weights = (minilm_dir() / "model.safetensors").stat().st_size  # float32 weights, held once
    assert 0.95 * weights < engine.footprint_bytes < 1.05 * weights


def test_the_vectors_are_sentence_transformers_own(engine: EmbeddingEngine, reference: SentenceTransformer) -> None:
    vectors = engine.embed(TEXTS)  # one padded batch of very different lengths, one past max_seq_length
    assert all(type(v) is list and len(v) == 384 and all(type(x) is float for x in v) for v in vectors)
    assert_same(vectors, reference.encode(TEXTS, convert_to_numpy=True))
    for text, vector in zip(TEXTS, vectors, strict=True):  # alone, unpadded: the same vector
        assert engine.embed([text])[0] == pytest.approx(vector, abs=1e-5)
    assert all(math.hypot(*v) == pytest.approx(1.0, abs=1e-5) for v in vectors)
    assert engine.embed([]) == []


def test_more_texts_than_one_forward_pass(engine: EmbeddingEngine, reference: SentenceTransformer) -> None:
    texts = [f"sentence number {i} " * (1 + i % 7) for i in range(bert.BATCH * 2 + 5)]
    vectors = engine.embed(texts)
    assert_same(vectors, reference.encode(texts, convert_to_numpy=True))


def test_token_counts_match_and_truncate(engine: EmbeddingEngine, reference: SentenceTransformer) -> None:
    for text in TEXTS:
        features = reference.preprocess([text])
        assert engine.count_tokens([text]) == int(features["attention_mask"].sum().item())
    assert engine.count_tokens([LONG]) == 256  # truncated as the model sees it
    assert engine.count_tokens(["hello world"]) == 4  # [CLS] hello world [SEP]
    assert engine.count_tokens([""]) == 2
    assert engine.count_tokens(TEXTS) == sum(engine.count_tokens([t]) for t in TEXTS)
    assert engine.count_tokens([]) == 0
    # the text past the limit changes nothing
    assert engine.embed([LONG + " and a different ending entirely"])[0] == pytest.approx(engine.embed([LONG])[0])


def test_context_length_override_truncates_and_is_capped() -> None:
    eng = bert.load(spec(context_length=8))
    try:
        assert eng.context_length == 8
        assert eng.count_tokens(["one two three four five six seven eight nine ten"]) == 8
        a, b = eng.embed(["one two three four five six", "one two three four five six seven eight nine ten"])
        assert a == pytest.approx(b, abs=1e-5)  # both cut to the same 6 words + [CLS]/[SEP]
    finally:
        eng.close()
    with pytest.raises(RuntimeError, match="closed"):
        eng.embed(["x"])
    with pytest.raises(ValueError, match="more than the model's 512 positions"):
        bert.load(spec(context_length=1024))


def _variant(tmp_path: Path, pooling: dict[str, object] | None, *, normalize: bool, sbert: bool = True) -> Path:
    """all-MiniLM-L6-v2's files with another pipeline around the same weights."""
    out = tmp_path / "model"
    out.mkdir()
    src = minilm_dir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / name, out / name)
    (out / "model.safetensors").symlink_to(src / "model.safetensors")
    if sbert:
        shutil.copy(src / "sentence_bert_config.json", out / "sentence_bert_config.json")
    if pooling is None:
        return out  # no modules.json: a plain model, mean pooling
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384, **pooling}))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (out / "modules.json").write_text(json.dumps(modules))
    return out


@pytest.mark.parametrize(("pooling", "normalize"), [
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, False),
    ({"pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": False}, True),
    ({"pooling_mode_mean_sqrt_len_tokens": True, "pooling_mode_mean_tokens": False}, False),
    ({"pooling_mode": "weightedmean"}, False),
    ({"pooling_mode": "lasttoken"}, False),
    ({"pooling_mode": ["cls", "mean"]}, True),
])
def test_pipeline_variants_match(tmp_path: Path, pooling: dict[str, object], normalize: bool) -> None:
    directory = _variant(tmp_path, pooling, normalize=normalize)
    ours = bert.load(spec(directory))
    theirs = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    assert ours.dimensions == theirs.get_embedding_dimension()
    texts = TEXTS[:5]
    vectors = ours.embed(texts)
    expected = theirs.encode(texts, convert_to_numpy=True)
    scale = max(1.0, float(np.abs(expected).max()))  # unnormalised vectors: relative to their size
    assert np.abs(np.array(vectors) - expected).max() <= 1e-5 * scale
    ours.close()


def test_a_plain_model_directory_is_mean_pooled(tmp_path: Path) -> None:
    """No modules.json and no sentence_bert_config.json: mean pooling, no normalising, the context
    the tokenizer allows up to the model's positions, as sentence-transformers builds it."""
    directory = _variant(tmp_path, None, normalize=False, sbert=False)
    ours = bert.load(spec(directory))
    theirs = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    assert ours.context_length == theirs.max_seq_length == 512
    expected = theirs.encode(TEXTS, convert_to_numpy=True)
    assert np.abs(np.array(ours.embed(TEXTS)) - expected).max() <= 1e-5 * max(1.0, float(np.abs(expected).max()))


@pytest.mark.parametrize("activation", ["gelu_new", "gelu_pytorch_tanh", "relu"])
def test_other_activations_match(tmp_path: Path, activation: str) -> None:
    """The same weights with another activation in config.json: both libraries compute the same
    (different) model."""
    directory = _variant(tmp_path, {"pooling_mode": "mean"}, normalize=True)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "hidden_act": activation}))
    ours = bert.load(spec(directory))
    theirs = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    assert_same(ours.embed(TEXTS[:5]), theirs.encode(TEXTS[:5], convert_to_numpy=True))
    ours.close()


def test_models_it_cannot_run_fail_to_load_naming_the_other_engine(tmp_path: Path) -> None:
    directory = _variant(tmp_path, {"pooling_mode": "mean"}, normalize=True)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(ValueError, match=r"'roberta'.*sentence_transformers engine"):
        bert.load(spec(directory))
    (directory / "config.json").write_text(json.dumps(config))
    modules = json.loads((directory / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (directory / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match=r"Dense.*sentence_transformers engine"):
        bert.load(spec(directory))
    (directory / "modules.json").unlink()
    (directory / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"model\.safetensors.*sentence_transformers engine"):
        bert.load(spec(directory))
    with pytest.raises(ValueError, match="not a model directory"):
        bert.load(spec(tmp_path / "missing"))


def test_half_precision_weights_are_widened(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {"a": torch.tensor([[1.5, -2.25], [3.0e-3, 65504.0]], dtype=torch.float16),
               "b": torch.tensor([1.0, -0.5, 3.140625], dtype=torch.bfloat16),
               "c": torch.arange(6, dtype=torch.float32).reshape(3, 2)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    read = read_safetensors(tmp_path / "w.safetensors")
    for name, tensor in tensors.items():
        assert read[name].dtype == np.float32
        assert read[name].tolist() == tensor.float().tolist()
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_safetensors(tmp_path / "bad.safetensors")
