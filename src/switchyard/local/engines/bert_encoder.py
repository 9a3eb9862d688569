"""A BERT encoder in numpy: the weights of a ``model.safetensors`` file, and the forward pass from
token ids to the last hidden states, in float32 with numpy's BLAS matrix products.

Follows Hugging Face's ``BertModel`` (post-layer-norm, absolute positions, erf GELU unless the
config names the tanh approximation). Read without torch and without the ``safetensors``
package: the format is an 8-byte header length, a JSON header and the raw little-endian tensors.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BertEncoder", "read_safetensors"]

F32 = npt.NDArray[np.float32]
_DTYPES: dict[str, np.dtype[Any]] = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
_MAX_HEADER = 100 * 1024 * 1024


def read_safetensors(path: Path) -> dict[str, F32]:
    """Every floating-point tensor of ``path``, as float32 arrays (F16 and BF16 widened)."""
    tensors: dict[str, F32] = {}
    with path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path.name} is not a safetensors file")
        length = struct.unpack("<Q", head)[0]
        if length > min(_MAX_HEADER, size - 8):
            raise ValueError(f"{path.name} is not a safetensors file (header length {length})")
        header: dict[str, Any] = json.loads(f.read(length))
        base = 8 + length
        for name, meta in header.items():
            if name == "__metadata__" or meta.get("dtype") not in _DTYPES:
                continue
            dtype = _DTYPES[meta["dtype"]]
            start, end = (int(v) for v in meta["data_offsets"])
            shape = tuple(int(n) for n in meta["shape"])
            if not 0 <= start <= end <= size - base or end - start != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"{path.name}: tensor {name} lies outside the file")
            f.seek(base + start)
            raw = np.frombuffer(f.read(end - start), dtype=dtype).reshape(shape)
            if meta["dtype"] == "BF16":  # the high half of a float32
                tensors[name] = (raw.astype(np.uint32) << 16).view(np.float32)
            else:
                tensors[name] = raw.astype(np.float32)
    return tensors


def _erf(x: F32) -> F32:
    """erf, Abramowitz and Stegun 7.1.26 (absolute error under 1.5e-7, float32's own resolution)."""
    z = np.abs(x)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(0.3275911) * z)
    poly = t * (np.float32(0.254829592) + t * (np.float32(-0.284496736) + t * (
        np.float32(1.421413741) + t * (np.float32(-1.453152027) + t * np.float32(1.061405429)))))
    result: F32 = np.copysign(np.float32(1.0) - poly * np.exp(-z * z), x)
    return result


def _gelu(x: F32) -> F32:
    result: F32 = np.float32(0.5) * x * (np.float32(1.0) + _erf(x * np.float32(1 / math.sqrt(2))))
    return result


def _gelu_tanh(x: F32) -> F32:
    inner = (x + np.float32(0.044715) * x * x * x) * np.float32(math.sqrt(2 / math.pi))
    result: F32 = (np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner))).astype(np.float32, copy=False)
    return result


def _relu(x: F32) -> F32:
    result: F32 = np.maximum(x, np.float32(0.0))
    return result


ACTIVATIONS = {"gelu": _gelu, "gelu_new": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh, "gelu_fast": _gelu_tanh,
               "relu": _relu}


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv: F32  # (hidden, 3 * hidden): query, key and value in one product
    qkv_bias: F32
    out: F32
    out_bias: F32
    norm1: tuple[F32, F32]
    up: F32
    up_bias: F32
    down: F32
    down_bias: F32
    norm2: tuple[F32, F32]


class BertEncoder:
    """Token ids -> last hidden states. Immutable once built: safe to call from several threads."""

    def __init__(self, config: Mapping[str, Any], weights: Mapping[str, F32]) -> None:
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {config['position_embedding_type']!r} is not supported")
        act = config.get("hidden_act", "gelu")
        if act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {act!r} is not supported (supported: {', '.join(ACTIVATIONS)})")
        self._act = ACTIVATIONS[act]
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.max_positions = int(config.get("max_position_embeddings", 512))
        self._eps = np.float32(config.get("layer_norm_eps", 1e-12))
        prefix = _prefix(weights)

        def w(name: str) -> F32:
            key = prefix + name
            if key not in weights:
                raise ValueError(f"the weights have no tensor {key!r}")
            return weights[key]

        self._words = w("embeddings.word_embeddings.weight")
        self._positions = w("embeddings.position_embeddings.weight")
        types = prefix + "embeddings.token_type_embeddings.weight"
        self._types = weights[types] if types in weights else np.zeros((1, self.hidden), np.float32)
        self._norm = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self._layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv = [w(f"{p}attention.self.{n}.weight") for n in ("query", "key", "value")]
            self._layers.append(_Layer(
                qkv=np.ascontiguousarray(np.concatenate(qkv, axis=0).T),
                qkv_bias=np.concatenate([w(f"{p}attention.self.{n}.bias") for n in ("query", "key", "value")]),
                out=np.ascontiguousarray(w(f"{p}attention.output.dense.weight").T),
                out_bias=w(f"{p}attention.output.dense.bias"),
                norm1=(w(f"{p}attention.output.LayerNorm.weight"), w(f"{p}attention.output.LayerNorm.bias")),
                up=np.ascontiguousarray(w(f"{p}intermediate.dense.weight").T),
                up_bias=w(f"{p}intermediate.dense.bias"),
                down=np.ascontiguousarray(w(f"{p}output.dense.weight").T),
                down_bias=w(f"{p}output.dense.bias"),
                norm2=(w(f"{p}output.LayerNorm.weight"), w(f"{p}output.LayerNorm.bias")),
            ))
        if self.hidden % self.heads or self._words.shape[1] != self.hidden:
            raise ValueError("the weights do not match config.json's hidden_size and num_attention_heads")
        arrays = [self._words, self._positions, self._types, *self._norm]
        for layer in self._layers:
            arrays += [layer.qkv, layer.qkv_bias, layer.out, layer.out_bias, *layer.norm1, layer.up,
                       layer.up_bias, layer.down, layer.down_bias, *layer.norm2]
        self.nbytes = sum(a.nbytes for a in arrays)

    def __call__(self, ids: npt.NDArray[np.int64], types: npt.NDArray[np.int64], mask: F32) -> F32:
        """``ids``, ``types`` and ``mask`` (1.0 for a real token, 0.0 for padding) are (batch, tokens)."""
        batch, tokens = ids.shape
        if tokens > self.max_positions:
            raise ValueError(f"{tokens} tokens is more than the model's {self.max_positions} positions")
        x = self._words[ids] + self._positions[:tokens][None] + self._types[types]
        x = self._layer_norm(x.reshape(batch * tokens, self.hidden), self._norm)
        # padding is never attended to: a very negative score softmaxes to exactly 0
        bias = ((np.float32(1.0) - mask) * np.finfo(np.float32).min)[:, None, None, :]
        heads, size = self.heads, self.hidden // self.heads
        scale = np.float32(1 / math.sqrt(size))
        for layer in self._layers:
            qkv = (x @ layer.qkv + layer.qkv_bias).reshape(batch, tokens, 3, heads, size).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0] * scale, qkv[1], qkv[2]
            scores = q @ k.transpose(0, 1, 3, 2) + bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * tokens, self.hidden)
            x = self._layer_norm(context @ layer.out + layer.out_bias + x, layer.norm1)
            h = self._act(x @ layer.up + layer.up_bias)
            x = self._layer_norm(h @ layer.down + layer.down_bias + x, layer.norm2)
        result: F32 = x.reshape(batch, tokens, self.hidden)
        return result

    def _layer_norm(self, x: F32, params: tuple[F32, F32]) -> F32:
        centred = x - x.mean(axis=-1, keepdims=True)
        variance = (centred * centred).mean(axis=-1, keepdims=True)
        result: F32 = centred / np.sqrt(variance + self._eps) * params[0] + params[1]
        return result


def _prefix(weights: Mapping[str, F32]) -> str:
    """``bert.`` (a BertForXxx checkpoint), ``""`` (a BertModel one), or whatever precedes the embeddings."""
    for name in weights:
        if name.endswith("embeddings.word_embeddings.weight"):
            return name[: -len("embeddings.word_embeddings.weight")]
    raise ValueError("the weights have no embeddings.word_embeddings.weight: not a BERT model")
