"""Structured output for the transformers engine, with xgrammar.

``GrammarCompilerCache.compile(constraint)`` turns a ``Constraint`` into a ``CompiledConstraint``
(the opaque grammar ``ChatEngine.submit`` takes). Each constrained generation then holds a
``RowGrammar``: the matcher's state and the bitmask of tokens allowed next.

JSON is generated without free whitespace (``any_whitespace=False``: ``", "`` and ``": "`` as
separators). With free whitespace a model, a weak one especially, may emit blanks forever
between two tokens of a perfectly valid document; without it every bounded schema reaches its
end. The stop tokens of the matcher are the model's EOS ids, so EOS can be sampled only where
the grammar allows the document to end.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from switchyard.errors import BadRequestError
from switchyard.local.engine import Constraint

if TYPE_CHECKING:
    import torch
    import xgrammar

__all__ = ["CompiledConstraint", "GrammarCompilerCache", "RowGrammar", "VocabMasks"]

_LOG_PREFIX = re.compile(r"^\[[0-9:]+\] \S+:\d+: ")  # "[14:32:38] /project/cpp/json_schema_converter.cc:4944: "


@dataclass(frozen=True, slots=True)
class VocabMasks:
    """Token bitmasks (int32 words, as xgrammar lays them out) that every grammar of an engine shares."""

    vocab_size: int
    allowed: torch.Tensor  # tokens a compact JSON document may contain, and the stop tokens
    non_stop: torch.Tensor  # the same without the stop tokens


class CompiledConstraint:
    """A compiled grammar, bound to one engine's vocabulary."""

    def __init__(self, grammar: xgrammar.CompiledGrammar, masks: VocabMasks) -> None:
        self.grammar = grammar
        self.masks = masks


class GrammarCompilerCache:
    """One xgrammar compiler per engine, made on first use (it reads the whole vocabulary)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: Iterable[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._stop_ids = frozenset(stop_ids)
        self._lock = threading.Lock()
        self._compiler: tuple[xgrammar.GrammarCompiler, VocabMasks] | None = None

    def _get_compiler(self) -> tuple[xgrammar.GrammarCompiler, VocabMasks]:
        import xgrammar

        with self._lock:
            if self._compiler is None:
                info = xgrammar.TokenizerInfo.from_huggingface(
                    self._tokenizer, vocab_size=self._vocab_size, stop_token_ids=sorted(self._stop_ids)
                )
                masks = _vocab_masks(info.decoded_vocab, self._vocab_size, self._stop_ids,
                                     frozenset(int(i) for i in self._tokenizer.all_special_ids))
                self._compiler = (xgrammar.GrammarCompiler(info), masks)
            return self._compiler

    def compile(self, constraint: Constraint) -> CompiledConstraint:
        compiler, masks = self._get_compiler()
        if constraint.kind == "json_object":
            # Any JSON object (not the builtin grammar, which also allows a top-level array and free whitespace).
            grammar = compiler.compile_json_schema('{"type": "object"}', any_whitespace=False, strict_mode=False)
        elif constraint.kind == "json_schema":
            text = _schema_text(constraint.schema)
            try:
                grammar = compiler.compile_json_schema(text, any_whitespace=False)
            except Exception as exc:  # xgrammar raises RuntimeError (and types of its own) for bad schemas
                message = _LOG_PREFIX.sub("", str(exc)).strip() or type(exc).__name__
                raise _invalid(f"invalid JSON schema: {message}") from exc
        else:
            raise BadRequestError(f"unsupported response_format type {constraint.kind!r}", param="response_format")
        return CompiledConstraint(grammar, masks)


def _schema_text(schema: object) -> str:
    if not isinstance(schema, dict) and schema is not True and schema is not False:
        raise _invalid(f"the JSON schema must be an object, got {type(schema).__name__}")
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise _invalid(f"the JSON schema is not serializable as JSON: {exc}") from exc
    return text


def _invalid(message: str) -> BadRequestError:
    return BadRequestError(message, param="response_format", code="invalid_json_schema")


class RowGrammar:
    """One generation's matcher, and the bitmask of the tokens it allows next."""

    def __init__(self, compiled: CompiledConstraint) -> None:
        import xgrammar

        self._matcher = xgrammar.GrammarMatcher(compiled.grammar)
        self._masks = compiled.masks
        self.bitmask: torch.Tensor = xgrammar.allocate_token_bitmask(1, compiled.masks.vocab_size)
        self._fill()

    def _fill(self) -> None:
        self._matcher.fill_next_token_bitmask(self.bitmask, 0)
        self.bitmask[0] &= self._masks.allowed

    def accept(self, token: int) -> None:
        """Advance past ``token`` and compute the next bitmask (unless the matcher terminated)."""
        if not self._matcher.accept_token(token):
            raise RuntimeError(f"the grammar rejected token {token}, which its own bitmask allowed")
        if not self._matcher.is_terminated():
            self._fill()

    def terminated(self) -> bool:
        return bool(self._matcher.is_terminated())

    def only_stop_allowed(self) -> bool:
        """The document is complete and nothing but a stop token may follow."""
        return not bool((self.bitmask[0] & self._masks.non_stop).any())


def _vocab_masks(decoded_vocab: Sequence[bytes], vocab_size: int, stop_ids: frozenset[int],
                 special_ids: frozenset[int]) -> VocabMasks:
    """Which tokens constrained rows may sample, besides what the grammar says.

    Compact JSON (no free whitespace) never contains a byte below 0x20: raw control characters
    are invalid inside strings, yet xgrammar 0.2.8 lets them into strings bounded by ``maxLength``
    (for them it excludes only the quote, the backslash, CR and LF). And a special token such as
    ``<|im_start|>`` is no text at all: the detokenizer drops it, so it must not stand for
    characters of a string.
    """
    import torch

    words = (vocab_size + 31) // 32
    allowed = torch.zeros(words * 32, dtype=torch.bool)
    for token, text in enumerate(decoded_vocab[:vocab_size]):
        allowed[token] = token not in special_ids and not any(byte < 0x20 for byte in text)
    non_stop = allowed.clone()
    for token in stop_ids:
        if token < vocab_size:
            allowed[token], non_stop[token] = True, False
    return VocabMasks(vocab_size, _pack(allowed, words), _pack(non_stop, words))


def _pack(bits: torch.Tensor, words: int) -> torch.Tensor:
    """Booleans (token order) to int32 words, bit ``i % 32`` of word ``i // 32`` for token ``i``."""
    import torch

    weights = torch.tensor([1 << bit for bit in range(32)], dtype=torch.int64)
    packed = (bits.view(words, 32).to(torch.int64) * weights).sum(dim=1)
    return torch.where(packed >= 1 << 31, packed - (1 << 32), packed).to(torch.int32)
