"""The encrypted credential vault: provider API keys sealed under a master key, in the database.

Each encryption is AES-256-GCM under a key derived with scrypt (n=2**14, r=8, p=1) from the
master key and a fresh 16-byte salt, with a fresh 96-bit nonce. The associated data binds the
credential id, so a ciphertext copied onto another row fails authentication. Every row records
``key_version``, a fingerprint of the master key that sealed it, so a wrong master key is
reported as such instead of as a bare authentication failure.

The plaintext exists only while a key is checked against its provider, handed out by
:meth:`Vault.secrets` / :meth:`Vault.decrypt`, or re-encrypted by :meth:`Vault.rekey`. It is
never stored, logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import logging
import os
import re
import secrets as random
from collections.abc import Callable
from datetime import UTC, datetime

from switchyard.core.credentials import (
    CREDENTIAL_PROVIDERS,
    Credential,
    CredentialStore,
    DuplicateCredentialError,
    Sealed,
    SealedCredential,
)
from switchyard.core.models import UpstreamSpec
from switchyard.errors import BadRequestError, GatewayError, NotFoundError
from switchyard.providers import load_provider
from switchyard.service.background import every, stop_task
from switchyard.settings import is_upstream_url

__all__ = [
    "DEFAULT_BASE_URLS",
    "MIN_MASTER_KEY",
    "CredentialIntegrityError",
    "MasterKey",
    "Vault",
    "VaultError",
    "VaultNotConfiguredError",
    "WrongMasterKeyError",
]

MIN_MASTER_KEY = 32
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
KEY_BYTES, SALT_BYTES, NONCE_BYTES = 32, 16, 12
_FINGERPRINT_LABEL = b"switchyard-master-key-id"
_AAD_PREFIX = b"switchyard-credential:"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_MAX_SECRET = 8192
_CHECK_TIMEOUT = 15.0

DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
"""Where the live check goes when a credential has no base_url (azure needs one; ollama is not checked)."""

log = logging.getLogger("switchyard.vault")


class VaultError(Exception):
    """A credential cannot be sealed or opened. The message names the credential, never its secret."""

    code = "vault_error"


class VaultNotConfiguredError(VaultError):
    code = "vault_not_configured"

    def __init__(self) -> None:
        super().__init__(
            "The credential vault has no master key: set SWITCHYARD_MASTER_KEY (at least "
            f"{MIN_MASTER_KEY} characters; `switchyard init` generates one)."
        )


class WrongMasterKeyError(VaultError):
    code = "wrong_master_key"


class CredentialIntegrityError(VaultError):
    code = "credential_integrity_error"


def _now() -> datetime:
    return datetime.now(UTC)


def _aad(credential_id: str) -> bytes:
    return _AAD_PREFIX + credential_id.encode("utf-8")


class MasterKey:
    """The master key and its fingerprint. Its value is never part of a repr or a message."""

    __slots__ = ("_key", "fingerprint")

    def __init__(self, value: str) -> None:
        if len(value) < MIN_MASTER_KEY:
            raise ValueError(f"a master key must be at least {MIN_MASTER_KEY} characters")
        self._key = value.encode("utf-8")
        self.fingerprint = hmac.new(self._key, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"MasterKey(fingerprint={self.fingerprint!r})"

    def _derive(self, salt: bytes) -> bytes:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt  # only when the vault is used (~6 MB)

        return Scrypt(salt=salt, length=KEY_BYTES, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(self._key)

    def seal(self, credential_id: str, plaintext: str) -> Sealed:
        """Encrypt with a new salt and nonce: two seals of one secret share nothing."""
        salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        ciphertext = AESGCM(self._derive(salt)).encrypt(nonce, plaintext.encode("utf-8"), _aad(credential_id))
        return Sealed(salt=salt, nonce=nonce, ciphertext=ciphertext, key_version=self.fingerprint)

    def open(self, row: SealedCredential) -> str:
        cred, sealed = row.credential, row.sealed
        if sealed.key_version != self.fingerprint:
            raise WrongMasterKeyError(
                f"credential '{cred.name}' was encrypted under master key {sealed.key_version}, "
                f"but the configured master key is {self.fingerprint}"
            )
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            plain = AESGCM(self._derive(sealed.salt)).decrypt(sealed.nonce, sealed.ciphertext, _aad(cred.id))
        except (InvalidTag, ValueError):
            raise CredentialIntegrityError(
                f"credential '{cred.name}' ({cred.id}) cannot be decrypted: its stored ciphertext fails "
                "authentication (altered, or copied from another credential)"
            ) from None
        return plain.decode("utf-8")


def _display(secret: str) -> tuple[str, str]:
    """Prefix and last four for display; short keys show nothing rather than most of themselves."""
    if len(secret) >= 20:
        return secret[:5], secret[-4:]
    return "", ""


def _validate(name: str, provider: str, secret: str, base_url: str | None) -> str | None:
    if not _NAME.fullmatch(name) or name.startswith("cred_"):
        raise BadRequestError(
            "A credential name is 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(and not with 'cred_').", param="name",
        )
    if provider not in CREDENTIAL_PROVIDERS:
        raise BadRequestError(
            f"Unknown provider '{provider}'; one of: {', '.join(CREDENTIAL_PROVIDERS)}.", param="provider"
        )
    if not secret:
        raise BadRequestError("The API key is empty.", param="api_key")
    if len(secret) > _MAX_SECRET:
        raise BadRequestError(f"The API key is longer than {_MAX_SECRET} characters.", param="api_key")
    if any(c.isspace() or not c.isprintable() for c in secret):
        raise BadRequestError("The API key contains whitespace or control characters.", param="api_key")
    if base_url is not None:
        if not is_upstream_url(base_url) or len(base_url) > 2048:
            raise BadRequestError("base_url must be an http:// or https:// URL.", param="base_url")
        base_url = base_url.rstrip("/")
    elif provider == "azure":
        raise BadRequestError("An azure credential needs its resource's base_url.", param="base_url")
    return base_url


async def _live_check(name: str, provider: str, base_url: str | None, secret: str) -> tuple[bool, str | None] | None:
    """The provider's cheapest authenticated call (its model list). None: this credential is not
    checkable (ollama without a base_url); else (ok, reason) with a reason free of the secret."""
    url = base_url or DEFAULT_BASE_URLS.get(provider)
    if url is None:
        return None
    spec = UpstreamSpec(name=f"credential:{name}", type=provider, base_url=url, api_key=secret,
                        timeout=_CHECK_TIMEOUT)
    try:
        client = load_provider(spec)
    except (ImportError, AttributeError, KeyError):
        return False, f"the {provider} provider is not available in this installation"
    except Exception as exc:  # a provider refusing its spec must not crash the caller
        return False, f"the {provider} provider could not be set up ({type(exc).__name__})"
    try:
        await client.list_models()
    except GatewayError as exc:
        if exc.code == "upstream_auth_error":
            reason = f"{provider} at {url} rejected the key (HTTP 401/403: invalid or unauthorised)"
        else:
            reason = f"{provider} at {url}: {exc.message}"
        return False, reason.replace(secret, "[redacted]")
    except Exception as exc:
        return False, f"{provider} at {url}: the check failed ({type(exc).__name__})"
    finally:
        await client.aclose()
    return True, None


class Vault:
    """Credentials sealed in a :class:`CredentialStore`. Without a master key it still lists,
    removes and (de)activates credentials, but refuses to add, check, decrypt or rekey."""

    def __init__(
        self,
        store: CredentialStore,
        master_key: str | None,
        *,
        flush_interval: float = 1.0,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._master = MasterKey(master_key) if master_key is not None else None
        self._flush_interval = flush_interval
        self._clock = clock
        self._uses: dict[str, tuple[int, datetime]] = {}
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------
    @property
    def configured(self) -> bool:
        return self._master is not None

    @property
    def fingerprint(self) -> str | None:
        """The configured master key's fingerprint (the ``key_version`` it writes)."""
        return None if self._master is None else self._master.fingerprint

    async def start(self) -> None:
        self._task = every(self._flush_interval, self.flush_uses, name="switchyard-vault-uses", log=log,
                           failed="credential use counts not written; retrying")

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self.flush_uses()

    def note_use(self, name: str) -> None:
        """Count one use of a credential (in memory; written in batches)."""
        now = self._clock()
        count, _ = self._uses.get(name, (0, now))
        self._uses[name] = (count + 1, now)

    async def flush_uses(self) -> None:
        if self._uses:
            uses, self._uses = self._uses, {}
            try:
                await self._store.touch(uses)
            except Exception:
                for name, (n, last) in uses.items():  # keep them for the next flush
                    old = self._uses.get(name, (0, last))
                    self._uses[name] = (old[0] + n, max(old[1], last))
                raise

    # -- helpers -----------------------------------------------------------------------
    def _require_master(self) -> MasterKey:
        if self._master is None:
            raise VaultNotConfiguredError()
        return self._master

    async def _sealed(self, id_or_name: str) -> SealedCredential:
        row = await self._store.sealed(id_or_name)
        if row is None:
            raise NotFoundError(f"No credential '{id_or_name}'.", param="credential")
        return row

    async def _open(self, row: SealedCredential) -> str:
        return await asyncio.to_thread(self._require_master().open, row)

    # -- administration ----------------------------------------------------------------
    async def add(
        self, name: str, provider: str, secret: str, base_url: str | None = None, check: bool = True
    ) -> Credential:
        """Check the key against its provider (unless ``check`` is false), then store it sealed."""
        base_url = _validate(name, provider, secret, base_url)
        master = self._require_master()
        if await self._store.get(name) is not None:
            raise BadRequestError(f"A credential named '{name}' already exists.", param="name", code="duplicate_name")
        outcome = await _live_check(name, provider, base_url, secret) if check else None
        if outcome is not None and not outcome[0]:
            raise BadRequestError(
                f"The {provider} credential check failed: {outcome[1]}. Nothing was stored "
                "(skip the check with check=false, or --no-check).",
                param="api_key", code="credential_check_failed",
            )
        prefix, last4 = _display(secret)
        now = self._clock()
        cred = Credential(
            id="cred_" + random.token_hex(8), name=name, provider=provider, base_url=base_url, prefix=prefix,
            last4=last4, key_version=master.fingerprint, created_at=now, updated_at=now,
            last_checked_at=now if outcome is not None else None,
            last_check_ok=True if outcome is not None else None,
        )
        sealed = await asyncio.to_thread(master.seal, cred.id, secret)
        try:
            await self._store.add(cred, sealed)
        except DuplicateCredentialError:
            raise BadRequestError(
                f"A credential named '{name}' already exists.", param="name", code="duplicate_name"
            ) from None
        log.info("credential added", extra={"credential_id": cred.id, "credential": name, "provider": provider,
                                             "checked": outcome is not None})
        return cred

    async def list(self) -> builtins.list[Credential]:
        return await self._store.list()

    async def get(self, id_or_name: str) -> Credential:
        cred = await self._store.get(id_or_name)
        if cred is None:
            raise NotFoundError(f"No credential '{id_or_name}'.", param="credential")
        return cred

    async def remove(self, id_or_name: str) -> Credential:
        cred = await self.get(id_or_name)
        if not await self._store.remove(cred.id):
            raise NotFoundError(f"No credential '{id_or_name}'.", param="credential")
        log.info("credential removed", extra={"credential_id": cred.id, "credential": cred.name})
        return cred

    async def set_active(self, id_or_name: str, active: bool) -> Credential:
        cred = await self.get(id_or_name)
        if not await self._store.set_active(cred.id, active, self._clock()):
            raise NotFoundError(f"No credential '{id_or_name}'.", param="credential")
        log.info("credential %s", "activated" if active else "deactivated",
                 extra={"credential_id": cred.id, "credential": cred.name})
        return await self.get(cred.id)

    async def check(self, id_or_name: str) -> Credential:
        """Re-validate a stored key against its provider and record the outcome.

        The returned credential's ``last_check_ok`` is the result (None: not checkable, nothing recorded).
        """
        row = await self._sealed(id_or_name)
        cred = row.credential
        secret = await self._open(row)
        outcome = await _live_check(cred.name, cred.provider, cred.base_url, secret)
        if outcome is None:
            return cred
        ok, reason = outcome
        await self._store.record_check(cred.id, ok, reason, self._clock())
        log.info("credential checked", extra={"credential_id": cred.id, "credential": cred.name, "ok": ok})
        return await self.get(cred.id)

    async def rekey(self, new_master_key: str) -> int:
        """Re-encrypt every credential under ``new_master_key`` in one transaction (new salt, nonce and
        key_version); the current master key must open each first, or nothing changes. Returns the count."""
        old = self._require_master()
        try:
            new = MasterKey(new_master_key)
        except ValueError as exc:
            raise BadRequestError(f"The new master key is too short: {exc}.", param="new_master_key") from None
        if new.fingerprint == old.fingerprint:
            raise BadRequestError("The new master key is the one already configured.", param="new_master_key")

        async def reseal(row: SealedCredential) -> Sealed:
            plaintext = await asyncio.to_thread(old.open, row)
            return await asyncio.to_thread(new.seal, row.credential.id, plaintext)

        count = await self._store.reseal(reseal, self._clock())
        self._master = new
        log.info("credentials re-encrypted", extra={"count": count, "old_key_version": old.fingerprint,
                                                    "key_version": new.fingerprint})
        return count

    # -- plaintext, for the gateway itself ---------------------------------------------
    async def decrypt(self, id_or_name: str) -> tuple[Credential, str]:
        """One active credential and its plaintext key."""
        row = await self._sealed(id_or_name)
        if not row.credential.active:
            raise NotFoundError(f"Credential '{id_or_name}' is deactivated.", param="credential",
                                code="credential_inactive")
        return row.credential, await self._open(row)

    async def secrets(self) -> dict[str, str]:
        """name -> plaintext of every active credential (to resolve ``credential:`` references)."""
        rows = await self._store.list_sealed(active_only=True)
        if rows:
            self._require_master()
        return {row.credential.name: await self._open(row) for row in rows}
