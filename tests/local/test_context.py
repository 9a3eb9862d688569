"""A local model's context length read from its files (what /v1/models says before it is
loaded), checked against what llama.cpp and sentence-transformers themselves read."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from switchyard.local.context import LLAMACPP_DEFAULT_MAX_CONTEXT, declared_context_length, gguf_trained_context
from switchyard.local.spec import LocalModelSpec
from tests.local.bundled import minilm_dir, smollm2_gguf


def test_the_gguf_header_gives_the_trained_context_llama_cpp_reads() -> None:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(smollm2_gguf()), vocab_only=True, verbose=False)
    try:
        arch = llm.metadata["general.architecture"]
        expected = int(llm.metadata[f"{arch}.context_length"])
    finally:
        llm.close()
    assert gguf_trained_context(smollm2_gguf()) == expected == 8192


def test_llamacpp_uses_the_configured_context_else_the_trained_one_up_to_the_cap() -> None:
    gguf = str(smollm2_gguf())
    assert declared_context_length(LocalModelSpec("smol", "llamacpp", gguf, context_length=2048)) == 2048
    assert declared_context_length(LocalModelSpec("smol", "llamacpp", gguf)) == min(8192, LLAMACPP_DEFAULT_MAX_CONTEXT)


@pytest.mark.parametrize("engine", ["sentence_transformers", "bert"])
def test_sentence_transformers_max_seq_length(engine: str) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    spec = LocalModelSpec("minilm", engine, str(minilm_dir()))  # type: ignore[arg-type]
    assert declared_context_length(spec) == model.max_seq_length == 256
    assert declared_context_length(LocalModelSpec("minilm", engine, str(minilm_dir()),  # type: ignore[arg-type]
                                                  context_length=128)) == 128


def test_without_sentence_bert_config_the_tokenizer_limit_up_to_the_positions(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    spec = LocalModelSpec("m", "bert", str(tmp_path))
    assert declared_context_length(spec) == 512
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    assert declared_context_length(spec) == 128
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 10**30}))  # "no limit"
    assert declared_context_length(spec) == 512


def test_transformers_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    assert declared_context_length(LocalModelSpec("hf", "transformers", str(tmp_path))) == 4096
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert declared_context_length(LocalModelSpec("hf", "transformers", str(tmp_path))) == 2048  # the engine's
    assert declared_context_length(LocalModelSpec("hf", "transformers", "HuggingFaceTB/not-downloaded")) is None


def _gguf(path: Path, pairs: list[tuple[str, int, bytes]]) -> Path:
    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs))
    for key, kind, value in pairs:
        body += string(key) + struct.pack("<I", kind) + value
    path.write_bytes(body)
    return path


def test_unreadable_or_unusual_ggufs(tmp_path: Path) -> None:
    arch = ("general.architecture", 8, struct.pack("<Q", 5) + b"llama")
    tokens = ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2) + struct.pack("<Q", 1) + b"a"
              + struct.pack("<Q", 2) + b"bc")
    scores = ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 2) + struct.pack("<ff", 0.5, 0.25))
    length = ("llama.context_length", 4, struct.pack("<I", 32768))
    # arrays of strings and of floats before the key are skipped; over the cap, the cap applies
    big = _gguf(tmp_path / "big.gguf", [arch, tokens, scores, length])
    assert gguf_trained_context(big) == 32768
    assert declared_context_length(LocalModelSpec("big", "llamacpp", str(big))) == LLAMACPP_DEFAULT_MAX_CONTEXT
    # no context key: the engine's default; a truncated or foreign file: unknown, never an error
    assert gguf_trained_context(_gguf(tmp_path / "none.gguf", [arch, tokens])) is None
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(big.read_bytes()[:40])
    assert declared_context_length(LocalModelSpec("cut", "llamacpp", str(truncated))) is None
    other = tmp_path / "model.bin"
    other.write_bytes(b"PK\x03\x04 not a gguf")
    assert gguf_trained_context(other) is None
