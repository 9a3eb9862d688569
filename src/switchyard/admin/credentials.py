"""Provider credentials for the edges: add, remove, (de)activate, check and rekey, each recorded in
the audit log (never the key). The vault (``vault.py``) seals and opens them."""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from typing import Any

from switchyard.admin.audit import Actor, AuditLog
from switchyard.admin.vault import Vault
from switchyard.core.credentials import Credential
from switchyard.protocol.admin import CreateCredential, validate

__all__ = ["CredentialAdmin"]


class CredentialAdmin:
    def __init__(self, vault: Vault, audit: AuditLog) -> None:
        self._vault = vault
        self._audit = audit
        # Routing holds decrypted credentials: after a change, rebuild it now (the model catalog's
        # reload) rather than at the next model change. None: nothing to rebuild (the CLI).
        self.on_change: Callable[[], Awaitable[None]] | None = None

    @property
    def vault(self) -> Vault:
        return self._vault

    async def list(self) -> builtins.list[Credential]:
        return await self._vault.list()

    async def get(self, id_or_name: str) -> Credential:
        return await self._vault.get(id_or_name)

    async def _changed(self) -> None:
        if self.on_change is not None:
            await self.on_change()

    async def add(self, body: Any, *, actor: Actor, check: bool = True) -> Credential:
        """A credential from a ``CreateCredential`` body, checked against its provider unless ``check``
        or the body's ``check`` is false."""
        spec = validate(CreateCredential, body)
        checked = check and spec.check
        cred = await self._vault.add(spec.name, spec.provider, spec.api_key.get_secret_value(),
                                     base_url=spec.base_url, check=checked)
        details = {"name": cred.name, "provider": cred.provider, "base_url": cred.base_url, "checked": checked}
        self._audit.action(actor, "credential.add", "credential", cred.id, details)  # never the api_key
        await self._changed()
        return cred

    async def remove(self, id_or_name: str, *, actor: Actor) -> Credential:
        cred = await self._vault.remove(id_or_name)
        self._audit.action(actor, "credential.remove", "credential", cred.id, {"name": cred.name})
        await self._changed()
        return cred

    async def set_active(self, id_or_name: str, active: bool, *, actor: Actor) -> Credential:
        cred = await self._vault.set_active(id_or_name, active)
        self._audit.action(actor, "credential.activate" if active else "credential.deactivate", "credential",
                           cred.id, {"name": cred.name})
        await self._changed()
        return cred

    async def check(self, id_or_name: str, *, actor: Actor) -> tuple[Credential, bool]:
        """Re-validate against the provider and record the outcome. Returns the credential and whether
        it was checked (a credential with nothing to check, ollama without a base_url, is not)."""
        before = await self._vault.get(id_or_name)
        cred = await self._vault.check(before.id)
        self._audit.action(actor, "credential.check", "credential", cred.id,
                           {"name": cred.name, "ok": cred.last_check_ok})
        return cred, cred.last_checked_at != before.last_checked_at

    async def rekey(self, new_master_key: str, *, actor: Actor) -> int:
        """Re-encrypt every credential under a new master key (see :meth:`Vault.rekey`)."""
        count = await self._vault.rekey(new_master_key)
        self._audit.action(actor, "credential.rekey", "credential", None,
                           {"count": count, "key_version": self._vault.fingerprint})
        return count
