"""Embedding requests and results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from switchyard.core.usage import Usage

__all__ = ["EmbeddingRequest", "EmbeddingResult"]


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """``inputs`` is normalised to a list: strings, or token arrays (lists of ints)."""

    model: str
    inputs: Sequence[str] | Sequence[Sequence[int]]
    encoding_format: str = "float"  # "float" | "base64"
    dimensions: int | None = None
    body: Mapping[str, Any] | None = None
    keep_alive: str | int | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """Vectors as floats, in input order. The HTTP layer encodes float or base64."""

    vectors: Sequence[Sequence[float]]
    usage: Usage
    model: str
