"""A stored Responses API response, as the store keeps it: sealed content, plaintext keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["SealedResponse"]


@dataclass(frozen=True, slots=True)
class SealedResponse:
    """One stored response. ``ciphertext`` holds its input items and the Response object (AES-GCM,
    ``nonce``); the id, owner, chain link and time stay in the clear for lookups and pruning."""

    id: str
    owner: str | None  # the key id that made it (None: auth off, or a static key)
    previous_response_id: str | None
    created_at: datetime
    nonce: bytes
    ciphertext: bytes
