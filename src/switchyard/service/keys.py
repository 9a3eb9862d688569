"""The gateway's own API keys: generation, HMAC hashing, and a cache the hot path reads.

A key is ``sk-sy-`` + 43 url-safe characters (32 random bytes). Only its HMAC-SHA256 under
the server secret and a display prefix are stored. Authentication is a dict lookup by HMAC,
then a constant-time comparison; it never waits on the database for a known key. The cache
is refreshed from the store every ``refresh_interval`` seconds (so keys created or revoked by
the CLI or another replica take effect), and revocations through this process apply at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from switchyard.core.keys import ApiKey, NewKey, Principal
from switchyard.core.ports import KeyStore
from switchyard.errors import AuthenticationError, NotFoundError
from switchyard.service.background import stop_task

__all__ = ["KEY_PREFIX", "KeyService", "hash_key"]

KEY_PREFIX = "sk-sy-"
_DISPLAY = len(KEY_PREFIX) + 6
_NEGATIVE_TTL = 2.0
_NEGATIVE_MAX = 10_000
log = logging.getLogger("switchyard.keys")


def hash_key(secret_key: bytes, presented: str) -> str:
    return hmac.new(secret_key, presented.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class KeyService:
    def __init__(
        self,
        store: KeyStore,
        secret_key: bytes,
        *,
        static_keys: Sequence[str] = (),
        refresh_interval: float = 1.0,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._secret = secret_key
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._by_hash: dict[str, ApiKey] = {}
        self._id_to_hash: dict[str, str] = {}
        self._static = {
            hash_key(secret_key, k): Principal(key_id=None, name="static", is_admin=True) for k in static_keys
        }
        self._misses: dict[str, float] = {}
        self._uses: dict[str, tuple[int, datetime]] = {}
        self._watermark: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        for key in await self._store.list():
            self._cache(key)
        self._watermark = self._clock()
        self._task = asyncio.create_task(self._refresh_loop(), name="switchyard-key-refresh")

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self.flush_uses()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            try:
                await self.refresh()
                await self.flush_uses()
            except Exception:
                log.warning("key cache refresh failed; serving from cache", exc_info=True)

    async def refresh(self) -> None:
        since = (self._watermark or self._clock()) - timedelta(seconds=2)  # tolerate clock skew
        self._watermark = self._clock()
        for key in await self._store.changed_since(since):
            self._cache(key)

    async def flush_uses(self) -> None:
        if self._uses:
            uses, self._uses = self._uses, {}
            try:
                await self._store.touch(uses)
            except Exception:
                for key_id, (n, last) in uses.items():  # keep them for the next flush
                    old = self._uses.get(key_id, (0, last))
                    self._uses[key_id] = (old[0] + n, max(old[1], last))
                raise

    def _cache(self, key: ApiKey) -> None:
        old_hash = self._id_to_hash.pop(key.id, None)
        if old_hash is not None:
            self._by_hash.pop(old_hash, None)
        if key.active and key.revoked_at is None:
            self._by_hash[key.key_hash] = key
            self._id_to_hash[key.id] = key.key_hash
            self._misses.pop(key.key_hash, None)

    # -- the hot path ----------------------------------------------------------------
    async def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise AuthenticationError()
        digest = hash_key(self._secret, presented)
        static = self._static.get(digest)
        if static is not None:
            return static
        key = self._by_hash.get(digest)
        if key is None:
            key = await self._lookup_miss(digest)
        if key is None or not hmac.compare_digest(key.key_hash, digest):
            raise AuthenticationError()
        now = self._clock()
        if key.expires_at is not None and key.expires_at <= now:
            raise AuthenticationError()
        count, _ = self._uses.get(key.id, (0, now))
        self._uses[key.id] = (count + 1, now)
        return Principal(key_id=key.id, name=key.name, is_admin=key.is_admin, allowed_models=key.allowed_models)

    async def _lookup_miss(self, digest: str) -> ApiKey | None:
        """A key this process has not seen: maybe created a moment ago by the CLI."""
        mono = time.monotonic()
        if self._misses.get(digest, 0.0) > mono:
            return None
        key = await self._store.find_by_hash(digest)
        if key is not None and key.active and key.revoked_at is None:
            self._cache(key)
            return key
        if len(self._misses) >= _NEGATIVE_MAX:
            self._misses.clear()
        self._misses[digest] = mono + _NEGATIVE_TTL
        return None

    # -- administration ----------------------------------------------------------------
    def _new_secret(self) -> tuple[str, str, str]:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        return secret, secret[:_DISPLAY], hash_key(self._secret, secret)

    async def create(
        self,
        name: str,
        *,
        is_admin: bool = False,
        allowed_models: Sequence[str] | None = None,
        expires_at: datetime | None = None,
    ) -> NewKey:
        secret, prefix, digest = self._new_secret()
        now = self._clock()
        key = ApiKey(
            id="key_" + secrets.token_hex(8),
            name=name,
            prefix=prefix,
            key_hash=digest,
            created_at=now,
            is_admin=is_admin,
            allowed_models=tuple(allowed_models) if allowed_models is not None else None,
            expires_at=expires_at,
        )
        await self._store.add(key)
        self._cache(key)
        return NewKey(key=key, secret=secret)

    async def revoke(self, key_id: str) -> None:
        if not await self._store.revoke(key_id, self._clock()):
            raise NotFoundError(f"No API key with id '{key_id}'.", param="key_id")
        digest = self._id_to_hash.pop(key_id, None)
        if digest is not None:
            self._by_hash.pop(digest, None)

    async def rotate(self, key_id: str) -> NewKey:
        key = await self._store.get(key_id)
        if key is None or not key.active:
            raise NotFoundError(f"No active API key with id '{key_id}'.", param="key_id")
        secret, prefix, digest = self._new_secret()
        await self._store.replace_secret(key_id, prefix, digest, self._clock())
        rotated = replace(key, prefix=prefix, key_hash=digest)
        self._cache(rotated)
        return NewKey(key=rotated, secret=secret)

    async def get(self, key_id: str) -> ApiKey:
        key = await self._store.get(key_id)
        if key is None:
            raise NotFoundError(f"No API key with id '{key_id}'.", param="key_id")
        return key

    async def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        return await self._store.list(include_revoked=include_revoked)

    async def ensure_admin(self) -> NewKey | None:
        """First start: no stored and no static keys -> create an admin key (shown once)."""
        if self._static or await self._store.count() > 0:
            return None
        return await self.create("admin", is_admin=True)
