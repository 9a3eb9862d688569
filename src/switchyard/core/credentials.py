"""Provider credentials kept in the encrypted vault, as the gateway sees them.

A :class:`Credential` carries everything about a stored provider key except the key: its
ciphertext travels apart, in :class:`Sealed`, and the plaintext exists only for the moment
it is checked or handed to a provider.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = [
    "CREDENTIAL_PROVIDERS",
    "Credential",
    "CredentialStore",
    "DuplicateCredentialError",
    "Sealed",
    "SealedCredential",
]

CREDENTIAL_PROVIDERS: tuple[str, ...] = ("openai", "ollama", "anthropic", "gemini", "azure")


@dataclass(frozen=True, slots=True)
class Sealed:
    """One encryption of a secret: AES-256-GCM under a scrypt key from the master key and ``salt``.

    ``key_version`` is the fingerprint of the master key that sealed it.
    """

    salt: bytes
    nonce: bytes
    ciphertext: bytes
    key_version: str

    def __repr__(self) -> str:
        return f"Sealed(key_version={self.key_version!r}, {len(self.ciphertext)} bytes)"


@dataclass(frozen=True, slots=True)
class Credential:
    """A stored provider key, without the key. ``prefix`` and ``last4`` are for display only."""

    id: str
    name: str
    provider: str
    base_url: str | None
    prefix: str
    last4: str
    key_version: str
    created_at: datetime
    updated_at: datetime
    active: bool = True
    last_used_at: datetime | None = None
    use_count: int = 0
    last_checked_at: datetime | None = None
    last_check_ok: bool | None = None  # None: never checked
    last_check_error: str | None = None

    @property
    def display(self) -> str:
        """``sk-pr…wxyz``: enough to recognise a key, never enough to use it."""
        return f"{self.prefix}…{self.last4}"


@dataclass(frozen=True, slots=True)
class SealedCredential:
    credential: Credential
    sealed: Sealed


class DuplicateCredentialError(Exception):
    """A credential with this name (or id) already exists."""


class CredentialStore(Protocol):
    async def add(self, credential: Credential, sealed: Sealed) -> None:
        """Insert; raises :class:`DuplicateCredentialError` for a name (or id) already taken."""
        ...

    async def get(self, id_or_name: str) -> Credential | None: ...

    async def list(self) -> builtins.list[Credential]: ...

    async def sealed(self, id_or_name: str) -> SealedCredential | None: ...

    async def list_sealed(self, *, active_only: bool = True) -> builtins.list[SealedCredential]: ...

    async def remove(self, credential_id: str) -> bool: ...

    async def set_active(self, credential_id: str, active: bool, at: datetime) -> bool: ...

    async def record_check(self, credential_id: str, ok: bool, error: str | None, at: datetime) -> bool: ...

    async def reseal(self, transform: Callable[[SealedCredential], Awaitable[Sealed]], at: datetime) -> int:
        """Replace every row's ``Sealed`` with ``transform(row)`` in one transaction; all or nothing."""
        ...

    async def touch(self, uses: dict[str, tuple[int, datetime]]) -> None:
        """Add use counts and keep the latest last-used times: {name: (count, last)}."""
        ...
