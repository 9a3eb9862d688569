"""Per-row sampling for a batch of logits: greedy, temperature, nucleus (top-p).

Every sampling row draws its randomness from its own ``torch.Generator`` (on the CPU, seeded
from the request), so a row's tokens do not depend on what else is in the batch: the same seed,
prompt and parameters give the same tokens.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["RowSampler", "make_sampler", "sample_tokens"]


@dataclass(slots=True)
class RowSampler:
    temperature: float  # <= 0: greedy
    top_p: float
    generator: torch.Generator | None  # None when greedy


def make_sampler(temperature: float, top_p: float, seed: int | None) -> RowSampler:
    if temperature <= 0:
        return RowSampler(0.0, 1.0, None)
    import torch

    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed if seed is not None else secrets.randbits(63))
    return RowSampler(float(temperature), min(max(float(top_p), 0.0), 1.0), generator)


def sample_tokens(logits: torch.Tensor, samplers: Sequence[RowSampler]) -> list[int]:
    """One token per row of ``logits`` ([rows, vocab], masked entries at -inf)."""
    import torch

    tokens: list[int] = logits.argmax(dim=-1).tolist()
    rows = [i for i, s in enumerate(samplers) if s.generator is not None]
    if not rows:
        return tokens
    device = logits.device
    chosen = [samplers[i] for i in rows]
    temperature = torch.tensor([s.temperature for s in chosen], dtype=torch.float32, device=device)
    scaled = logits[rows].float() / temperature[:, None]
    probs = torch.softmax(scaled, dim=-1, dtype=torch.float64)
    top_p = torch.tensor([s.top_p for s in chosen], dtype=torch.float64, device=device)
    if bool((top_p < 1.0).any()):
        probs, order = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
        probs = probs.masked_fill(before >= top_p[:, None], 0.0)
        probs[:, 0] = torch.where(probs[:, 0] > 0, probs[:, 0], 1.0)  # top_p = 0 keeps the best token
    else:
        order = None
    cumulative = probs.cumsum(dim=-1)
    uniform = torch.stack([torch.rand((), generator=s.generator, dtype=torch.float64) for s in chosen])
    targets = uniform.to(device)[:, None] * cumulative[:, -1:]
    picks = torch.searchsorted(cumulative, targets, right=True)
    last_valid = (probs > 0).to(torch.int64).cumsum(dim=-1).argmax(dim=-1, keepdim=True)  # guard float ties
    picks = torch.minimum(picks, last_valid)
    if order is not None:
        picks = order.gather(1, picks)
    for row, token in zip(rows, picks[:, 0].tolist(), strict=True):
        tokens[row] = token
    return tokens
