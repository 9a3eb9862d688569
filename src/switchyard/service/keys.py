"""The gateway's own API keys: generation, HMAC hashing, and a cache the hot path reads.

A key is ``sk-sy-`` + 43 url-safe characters (32 random bytes). Only its HMAC-SHA256 under
the server secret and a display prefix are stored. Authentication is a dict lookup by HMAC,
then a constant-time comparison; it never waits on the database for a known key. The cache
is refreshed from the store every ``refresh_interval`` seconds (so keys created or revoked by
the CLI or another replica take effect), and revocations through this process apply at once.

The writes (create, update, rotate, revoke) live here too, since each must land in the cache
coherently; the operator's side of them (the admin API's JSON, validation, the audit entry) is
``admin/keys.py``, which is what the edges call.

Teams are cached beside the keys and refreshed with them, so the ``Principal`` of a key carries
its owners, its limits and budget, and its team's limits and budget, without a database read;
a team changed anywhere reaches every replica within the same refresh.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from switchyard.core.keys import ApiKey, NewKey, Principal, Team
from switchyard.core.limits import Budget, RateLimits
from switchyard.core.ports import KeyStore
from switchyard.errors import AuthenticationError, BadRequestError, NotFoundError
from switchyard.service.background import every, stop_task

__all__ = ["KEY_PREFIX", "KeyService", "OwnedKeyStore", "TeamSource", "hash_key"]

_UPDATABLE = frozenset({"name", "allowed_models", "expires_at", "user_id", "team_id", "limits", "model_limits",
                        "budget"})


class OwnedKeyStore(KeyStore, Protocol):
    async def update(self, key: ApiKey, at: datetime) -> bool: ...


class TeamSource(Protocol):
    async def list(self) -> builtins.list[Team]: ...

    async def get(self, id_or_name: str) -> Team | None: ...

    async def changed_since(self, since: datetime) -> builtins.list[Team]: ...

KEY_PREFIX = "sk-sy-"
_DISPLAY = len(KEY_PREFIX) + 6
_NEGATIVE_TTL = 2.0
_STALE_AFTER = 60.0  # s: how long a local change is remembered against reads begun before it
_NEGATIVE_MAX = 10_000
log = logging.getLogger("switchyard.keys")


def hash_key(secret_key: bytes, presented: str) -> str:
    return hmac.new(secret_key, presented.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class KeyService:
    def __init__(
        self,
        store: OwnedKeyStore,
        secret_key: bytes,
        *,
        static_keys: Sequence[str] = (),
        refresh_interval: float = 1.0,
        clock: Callable[[], datetime] = _now,
        teams: TeamSource | None = None,
    ) -> None:
        self._store = store
        self._team_store = teams
        self._teams: dict[str, Team] = {}
        self._secret = secret_key
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._by_hash: dict[str, ApiKey] = {}
        self._id_to_hash: dict[str, str] = {}
        self._static = {
            hash_key(secret_key, k): Principal(key_id=None, name="static", is_admin=True) for k in static_keys
        }
        self._misses: dict[str, float] = {}
        # key id -> when (time.monotonic) it was last revoked, rotated or changed through this
        # process: a store read that began before that is stale for it and must not be cached
        self._changed_at: dict[str, float] = {}
        self._refreshing = asyncio.Lock()  # one refresh at a time: an older read never lands after a newer one
        self._uses: dict[str, tuple[int, datetime]] = {}
        self._watermark: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self.on_change: Callable[[str], Awaitable[None]] | None = None  # tell other replicas (Redis)

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._team_store is not None:
            self._teams = {team.id: team for team in await self._team_store.list()}
        for key in await self._store.list():
            self._cache(key)
        self._watermark = self._clock()
        self._task = every(self._refresh_interval, self._refresh_and_flush, name="switchyard-key-refresh", log=log,
                           failed="key cache refresh failed; serving from cache")

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self.flush_uses()

    async def _refresh_and_flush(self) -> None:
        await self.refresh()
        await self.flush_uses()

    async def refresh(self) -> None:
        """Bring the cache up to date with the store. The one-second loop and another replica's
        change event (Redis) may both ask at once: they take turns, so the later read wins."""
        async with self._refreshing:
            since = (self._watermark or self._clock()) - timedelta(seconds=2)  # tolerate clock skew
            self._watermark = self._clock()
            if self._team_store is not None:
                for team in await self._team_store.changed_since(since):
                    self._teams[team.id] = team
            started = time.monotonic()
            changed = await self._store.changed_since(since)
            for key in changed:
                if not self._stale(key, started):  # (a key revoked here meanwhile stays revoked)
                    self._cache(key)
            await self._load_teams_of(changed)  # a team created after the team query above
            if self._changed_at:  # a read that starts now sees every change older than this
                self._changed_at = {k: at for k, at in self._changed_at.items() if at > started - _STALE_AFTER}

    def _stale(self, key: ApiKey, read_started: float) -> bool:
        """Whether ``key`` was read before it last changed through this process."""
        return self._changed_at.get(key.id, -math.inf) >= read_started

    def _changed_here(self, key_id: str) -> None:
        """Called once the store has the change, so that a read begun before it counts as stale."""
        self._changed_at[key_id] = time.monotonic()

    async def _load_teams_of(self, keys: Sequence[ApiKey]) -> None:
        if self._team_store is None:
            return
        for team_id in {k.team_id for k in keys if k.team_id is not None and k.team_id not in self._teams}:
            team = await self._team_store.get(team_id)
            if team is not None and team.id == team_id:
                self._teams[team_id] = team

    # -- teams in the cache -------------------------------------------------------------
    def team_changed(self, team: Team) -> None:
        """A team was created or changed through this process: its keys see it at once."""
        self._teams[team.id] = team

    def team_removed(self, team_id: str) -> None:
        self._teams.pop(team_id, None)

    def cached_team(self, team_id: str) -> Team | None:
        return self._teams.get(team_id)

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
        return await self.authenticate_digest(self.digest(presented))

    def digest(self, presented: str) -> str:
        """The HMAC a presented key is known by (what a console session keeps instead of the key)."""
        return hash_key(self._secret, presented)

    async def authenticate_digest(self, digest: str) -> Principal:
        """:meth:`authenticate` for a key known by its digest: revoked, rotated or expired keys fail."""
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
        return self.principal(key)

    def principal(self, key: ApiKey) -> Principal:
        """Who ``key`` is, with its limits and budget and its team's (from the cache)."""
        team = self._teams.get(key.team_id) if key.team_id is not None else None
        return Principal(
            key_id=key.id,
            name=key.name,
            is_admin=key.is_admin,
            allowed_models=key.allowed_models,
            user_id=key.user_id,
            team_id=key.team_id,
            limits=key.limits,
            model_limits=key.model_limits,
            budget=key.budget,
            team_limits=team.limits if team is not None else None,
            team_budget=team.budget if team is not None else None,
        )

    async def _lookup_miss(self, digest: str) -> ApiKey | None:
        """A key this process has not seen: maybe created a moment ago by the CLI."""
        mono = time.monotonic()
        if self._misses.get(digest, 0.0) > mono:
            return None
        started = time.monotonic()
        key = await self._store.find_by_hash(digest)
        if key is not None and self._stale(key, started):  # changed here while we read: read again
            key = await self._store.find_by_hash(digest)
        if key is not None and key.active and key.revoked_at is None:
            self._cache(key)
            await self._load_teams_of([key])
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
        user_id: str | None = None,
        team: str | None = None,
        limits: RateLimits | None = None,
        model_limits: Mapping[str, RateLimits] | None = None,
        budget: Budget | None = None,
    ) -> NewKey:
        """A new key; ``team`` is a team's id or name (BadRequestError if there is none)."""
        team_id = (await self.resolve_team(team)).id if team is not None else None
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
            user_id=user_id,
            team_id=team_id,
            limits=limits,
            model_limits=dict(model_limits or {}),
            budget=budget,
        )
        await self._store.add(key)
        self._cache(key)
        return NewKey(key=key, secret=secret)

    async def revoke(self, key_id: str) -> None:
        if not await self._store.revoke(key_id, self._clock()):
            raise NotFoundError(f"No API key with id '{key_id}'.", param="key_id")
        self._changed_here(key_id)
        digest = self._id_to_hash.pop(key_id, None)
        if digest is not None:
            self._by_hash.pop(digest, None)
        await self._changed(key_id)

    async def _changed(self, key_id: str) -> None:
        if self.on_change is not None:
            await self.on_change(key_id)

    async def rotate(self, key_id: str) -> NewKey:
        key = await self._store.get(key_id)
        if key is None or not key.active:
            raise NotFoundError(f"No active API key with id '{key_id}'.", param="key_id")
        secret, prefix, digest = self._new_secret()
        await self._store.replace_secret(key_id, prefix, digest, self._clock())
        rotated = replace(key, prefix=prefix, key_hash=digest)
        self._changed_here(key_id)
        self._cache(rotated)
        await self._changed(key_id)
        return NewKey(key=rotated, secret=secret)

    async def resolve_team(self, id_or_name: str) -> Team:
        """The team of that id or name, from the store (it may have been created a moment ago)."""
        team = await self._team_store.get(id_or_name) if self._team_store is not None else None
        if team is None:
            raise BadRequestError(f"No team with id or name '{id_or_name}'.", param="team", code="team_not_found")
        self._teams[team.id] = team
        return team

    async def update(self, key_id: str, **changes: Any) -> ApiKey:
        """Change a key's name, models, expiry, owners, limits or budget (fields of ``ApiKey``;
        ``team_id`` may be given as a team's name). The new settings apply at once here and
        within one refresh on other replicas."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        key = await self._store.get(key_id)
        if key is None or key.revoked_at is not None:
            raise NotFoundError(f"No active API key with id '{key_id}'.", param="key_id")
        if changes.get("team_id") is not None:
            changes["team_id"] = (await self.resolve_team(str(changes["team_id"]))).id
        if "allowed_models" in changes and changes["allowed_models"] is not None:
            changes["allowed_models"] = tuple(changes["allowed_models"])
        if "model_limits" in changes:
            changes["model_limits"] = dict(changes["model_limits"] or {})
        updated = replace(key, **changes)
        if not await self._store.update(updated, self._clock()):
            raise NotFoundError(f"No active API key with id '{key_id}'.", param="key_id")
        self._changed_here(key_id)
        self._cache(updated)
        await self._changed(key_id)
        return updated

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
