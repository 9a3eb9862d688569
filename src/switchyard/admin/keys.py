"""API keys for the edges: create, change, rotate and revoke, each validated from the admin API's
JSON and recorded in the audit log (never a secret).

The key cache (``service/keys.py``) applies each change, so that it holds at once in this
process; it stays on the request path, and this module is what the HTTP handlers and the CLI call.
"""

from __future__ import annotations

import builtins
from typing import Any

from switchyard.admin.audit import Actor, AuditLog
from switchyard.core.keys import ApiKey, NewKey
from switchyard.errors import BadRequestError
from switchyard.protocol.admin import (
    CreateKey,
    KeySettings,
    key_settings_json,
    merge_patch,
    model_limits,
    rate_limits,
    validate,
)
from switchyard.service.keys import KeyService

__all__ = ["KeyAdmin"]


class KeyAdmin:
    def __init__(self, keys: KeyService, audit: AuditLog) -> None:
        self._keys = keys
        self._audit = audit

    async def get(self, key_id: str) -> ApiKey:
        return await self._keys.get(key_id)

    async def list(self, *, include_revoked: bool = False) -> builtins.list[ApiKey]:
        return await self._keys.list(include_revoked=include_revoked)

    def team_name(self, key: ApiKey) -> str | None:
        """The name of the key's team, from the cache (None when unknown)."""
        team = self._keys.cached_team(key.team_id) if key.team_id is not None else None
        return team.name if team is not None else None

    async def create(self, body: Any, *, actor: Actor) -> NewKey:
        """A key from a ``CreateKey`` body (``team``: an id or a name). The entry records the validated
        body, with the team as its id."""
        spec = validate(CreateKey, body)
        new = await self._keys.create(spec.name, is_admin=spec.admin, allowed_models=spec.models,
                                      expires_at=spec.expires_at, user_id=spec.user, team=spec.team,
                                      limits=rate_limits(spec.limits), model_limits=model_limits(spec.model_limits),
                                      budget=spec.budget.budget() if spec.budget else None)
        details = spec.model_dump(mode="json", exclude_none=True)
        if new.key.team_id is not None:
            details["team"] = new.key.team_id
        self._audit.action(actor, "key.create", "api_key", new.key.id, details)
        return new

    async def update(self, key_id: str, patch: Any, *, actor: Actor, merge: bool = True) -> ApiKey:
        """A JSON merge patch of ``KeySettings`` (null removes a setting); with ``merge=False`` each
        field it names is replaced whole (the CLI's options give whole values). The entry records
        the patch, with the team as its id."""
        if not isinstance(patch, dict):
            raise BadRequestError("The request body must be a JSON object (a merge patch).")
        for name in patch:
            if name not in KeySettings.model_fields:
                raise BadRequestError(f"Field '{name}' cannot be changed; a key's settings are "
                                      f"{sorted(KeySettings.model_fields)}.", param=name)
        if "name" in patch and patch["name"] is None:
            raise BadRequestError("A key's name cannot be removed.", param="name")
        key = await self._keys.get(key_id)
        spec = validate(KeySettings, merge_patch(key_settings_json(key), patch, merge=merge))
        changes: dict[str, Any] = {}
        if "name" in patch:
            changes["name"] = spec.name
        if "models" in patch:
            changes["allowed_models"] = spec.models
        if "expires_at" in patch:
            changes["expires_at"] = spec.expires_at
        if "user" in patch:
            changes["user_id"] = spec.user
        if "team" in patch:
            changes["team_id"] = spec.team
        if "limits" in patch:
            changes["limits"] = rate_limits(spec.limits)
        if "model_limits" in patch:
            changes["model_limits"] = model_limits(spec.model_limits)
        if "budget" in patch:
            changes["budget"] = spec.budget.budget() if spec.budget else None
        updated = await self._keys.update(key_id, **changes)
        details = dict(patch)
        if "team" in patch and updated.team_id is not None:
            details["team"] = updated.team_id
        self._audit.action(actor, "key.update", "api_key", key_id, details)
        return updated

    async def revoke(self, key_id: str, *, actor: Actor) -> None:
        await self._keys.revoke(key_id)
        self._audit.action(actor, "key.revoke", "api_key", key_id)

    async def rotate(self, key_id: str, *, actor: Actor) -> NewKey:
        new = await self._keys.rotate(key_id)
        self._audit.action(actor, "key.rotate", "api_key", new.key.id)
        return new
