"""The llama.cpp engine's slots: the sequences of its one context, and which one a request gets.

A slot keeps, after its request ends, the tokens whose keys and values are still in the KV
cache, and whose they are. A new request takes the idle slot whose cached tokens share the
longest prefix with its prompt, so that only the rest is evaluated; but only a slot it may read:

- ``owner`` (the default): cached by the same owner (the key's team, else its user, else the
  key). A cached prefix answers faster, and a tenant could time that to probe another's prompts;
- ``shared``: any slot;
- ``off``: none (every request is evaluated whole).

With no prefix to reuse, a request takes the empty slot with the lowest id (so that the running
sequences stay consecutive ids: llama.cpp evaluates a run of them in one pass), else the one idle
longest (its cache is the least likely to be asked for again).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Slot", "common_prefix", "pick_slot"]

Scope = Literal["owner", "shared", "off"]


@dataclass(eq=False, slots=True)
class Slot:
    seq: int  # the sequence id in the llama.cpp context
    tokens: list[int] = field(default_factory=list)  # what the KV cache holds for it, in position order
    owner: str | None = None  # whose tokens they are
    last_used: int = 0  # the scheduler's step when it last ended a request
    # the request it serves (None: idle), and that request's progress
    job: Any = None
    sampler: Any = None
    fed: int = 0  # prompt tokens in the cache so far (reused + evaluated)
    generated: int = 0
    last_token: int = -1  # sampled, not yet evaluated
    last_step: int = 0  # the step that gave it its last token

    @property
    def busy(self) -> bool:
        return self.job is not None

    @property
    def prefilling(self) -> bool:
        return self.job is not None and self.fed < len(self.job.prompt)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def pick_slot(slots: Sequence[Slot], prompt: Sequence[int], owner: str | None, scope: Scope) -> tuple[Slot, int]:
    """The idle slot for a prompt, and how many of its cached tokens it may keep (at most all but
    the prompt's last token: that one is evaluated again, for the logits of the first new one)."""
    idle = [s for s in slots if not s.busy]
    if not idle:
        raise LookupError("no idle slot")
    best, reuse = None, 0
    if scope != "off":
        for slot in idle:
            if scope == "owner" and slot.owner != owner:
                continue
            n = min(common_prefix(slot.tokens, prompt), len(prompt) - 1)
            if n > reuse:
                best, reuse = slot, n
    if best is None:
        best = min(idle, key=lambda s: (True, s.last_used) if s.tokens else (False, s.seq))
    return best, reuse
