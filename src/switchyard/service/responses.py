"""Stored Responses API responses: sealed at rest, visible only to their owner (and admin keys).

Content (the input items and the Response object) is sealed with AES-256-GCM under a key derived
with HKDF-SHA256 from the server secret (info ``switchyard responses v1``), a fresh 96-bit nonce
per row, and associated data binding the response id and its owner key id: a row copied onto
another id or owner fails to open. A response another non-admin key asks for is reported exactly
as an unknown id is, so ids cannot be probed.

A ``/v1/responses/compact`` summary travels to the client and back, not in the store: it is
sealed under the same key, bound to the key that asked for it (``seal_summary``), so only that
key can send it back and nothing of it is readable on the client. So does a reasoning item's
text when the client asks for ``reasoning.encrypted_content`` (``seal_reasoning``): a stateless
client (``store: false``) sends the item back and the gateway restores the reasoning, keeping
nothing itself.

A response relayed to an upstream that speaks the Responses API (native pass-through) is held
by that upstream; the gateway keeps only who made it (``save_native``): a row in the same table,
whose sealed content is ``{"native": {"provider", "alias"}}`` and no prompt. Its id is then
visible to its key (and admin keys) alone, as a stored response is: another key's
``previous_response_id`` or ``GET`` gets the unknown-id 404 before any upstream call.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from switchyard.core.keys import Principal
from switchyard.core.ports import ResponseStore
from switchyard.core.responses import SealedResponse
from switchyard.errors import NotFoundError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MAX_CHAIN", "NativeResponse", "ResponseLog", "StoredResponse", "listed_items", "not_found"]

log = logging.getLogger("switchyard.responses")

MAX_CHAIN = 1000
"""The most earlier responses a ``previous_response_id`` chain is read back through."""
_INFO = b"switchyard responses v1"
_AAD = b"switchyard-response:"
_SUMMARY_AAD = b"switchyard-compaction:"
_REASONING_AAD = b"switchyard-reasoning:"
_ID_PREFIXES = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_",
                "custom_tool_call": "ctc_", "custom_tool_call_output": "ctco_", "reasoning": "rs_"}


def not_found(response_id: str, param: str | None = None) -> NotFoundError:
    """What an unknown id, and another key's response, both get."""
    what = "Previous response" if param == "previous_response_id" else "Response"
    return NotFoundError(f"{what} with id '{response_id}' not found.", param=param,
                         code="previous_response_not_found" if param else "not_found")


@dataclass(frozen=True)
class NativeResponse:
    """A response an upstream holds: which configured provider, and the alias it was made as."""

    provider: str
    alias: str


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]  # the Response object as it was returned ({} for an upstream-held one)
    input_items: list[dict[str, Any]]  # its own input items (not the earlier turns'), with ids
    native: NativeResponse | None = None  # held by this upstream: the gateway keeps only its owner


def _item_id(kind: str) -> str:
    return _ID_PREFIXES.get(kind, "item_") + os.urandom(12).hex()


def listed_items(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Input items as OpenAI lists them: each with an id, messages with typed parts and a status."""
    out = []
    for given in items:
        item = dict(given)
        kind = item.get("type") or ("message" if "role" in item else "item_reference")
        item["type"] = kind
        if kind == "message":
            content = item.get("content")
            text_type = "output_text" if item.get("role") == "assistant" else "input_text"
            if isinstance(content, str):
                part: dict[str, Any] = {"type": text_type, "text": content}
                if text_type == "output_text":
                    part["annotations"] = []
                item["content"] = [part]
            item.setdefault("status", "completed")
        elif kind in ("function_call", "function_call_output", "custom_tool_call_output") and "status" not in item:
            item["status"] = "completed"
        if not item.get("id"):
            item["id"] = _item_id(kind)
        out.append(item)
    return out


class ResponseLog:
    """Seals, stores, opens and forgets responses, through a :class:`ResponseStore`."""

    def __init__(self, store: ResponseStore, secret: bytes) -> None:
        self.store = store
        self._secret = secret
        self._cipher: AESGCM | None = None

    @property
    def _aead(self) -> AESGCM:
        """The AEAD under the derived key, made at first use: a server that never stores a response
        never loads ``cryptography``."""
        if self._cipher is None:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF

            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(self._secret)
            self._cipher = AESGCM(key)
        return self._cipher

    def _seal(self, text: str, aad: bytes) -> str:
        """URL-safe base64 of nonce + AES-GCM ciphertext of ``text``."""
        nonce = os.urandom(12)
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, text.encode(), aad)).decode()

    def _unseal(self, token: str, aad: bytes) -> str | None:
        from cryptography.exceptions import InvalidTag

        try:
            raw = base64.urlsafe_b64decode(token.encode())
            return self._aead.decrypt(raw[:12], raw[12:], aad).decode()
        except (binascii.Error, ValueError, InvalidTag):  # UnicodeDecodeError is a ValueError
            return None

    def seal_summary(self, summary: str, owner: str | None) -> str:
        """A compaction summary, sealed for the key ``owner``: URL-safe base64 of nonce + ciphertext."""
        return self._seal(summary, _SUMMARY_AAD + (owner or "").encode())

    def open_summary(self, token: str, owner: str | None) -> str | None:
        """The summary ``seal_summary`` sealed for ``owner``; None if it is not one (or not theirs)."""
        return self._unseal(token, _SUMMARY_AAD + (owner or "").encode())

    def seal_reasoning(self, text: str, owner: str | None) -> str:
        """A reasoning item's text, sealed for the key ``owner`` (its ``encrypted_content``)."""
        return self._seal(text, _REASONING_AAD + (owner or "").encode())

    def open_reasoning(self, token: str, owner: str | None) -> str | None:
        """The reasoning ``seal_reasoning`` sealed for ``owner``; None if it is not one (or not theirs)."""
        return self._unseal(token, _REASONING_AAD + (owner or "").encode())

    @staticmethod
    def _aad(response_id: str, owner: str | None) -> bytes:
        return _AAD + response_id.encode() + b"\0" + (owner or "").encode()

    async def save(self, response: Mapping[str, Any], input_items: Sequence[Mapping[str, Any]],
                   owner: str | None, previous_response_id: str | None) -> None:
        """Keep a response and its (already listed) input items."""
        response_id = str(response["id"])
        nonce = os.urandom(12)
        plain = orjson.dumps({"response": response, "input": list(input_items)})
        sealed = self._aead.encrypt(nonce, plain, self._aad(response_id, owner))
        await self.store.add(SealedResponse(
            id=response_id, owner=owner, previous_response_id=previous_response_id,
            created_at=datetime.now(UTC), nonce=nonce, ciphertext=sealed))

    async def save_native(self, response_id: str, owner: str | None, provider: str, alias: str,
                          previous_response_id: str | None) -> None:
        """Record who made a response an upstream holds (no content: the upstream keeps that)."""
        nonce = os.urandom(12)
        plain = orjson.dumps({"native": {"provider": provider, "alias": alias}})
        sealed = self._aead.encrypt(nonce, plain, self._aad(response_id, owner))
        await self.store.add(SealedResponse(
            id=response_id, owner=owner, previous_response_id=previous_response_id,
            created_at=datetime.now(UTC), nonce=nonce, ciphertext=sealed))

    def _open(self, row: SealedResponse) -> StoredResponse | None:
        from cryptography.exceptions import InvalidTag

        try:
            plain = self._aead.decrypt(row.nonce, row.ciphertext, self._aad(row.id, row.owner))
        except InvalidTag:  # another server secret, or a tampered row: as good as gone
            log.warning("stored response %s cannot be opened (another server secret?)", row.id)
            return None
        data = orjson.loads(plain)
        native = data.get("native")
        if native is not None:
            return StoredResponse(response={}, input_items=[],
                                  native=NativeResponse(provider=native["provider"], alias=native["alias"]))
        return StoredResponse(response=data["response"], input_items=data["input"])

    @staticmethod
    def _visible(row: SealedResponse, principal: Principal) -> bool:
        return principal.is_admin or row.owner == principal.key_id

    async def find(self, response_id: str, principal: Principal) -> StoredResponse | None:
        """The response (or the record of an upstream-held one) if ``principal`` may see it; else None."""
        row = await self.store.get(response_id)
        return self._open(row) if row is not None and self._visible(row, principal) else None

    async def get(self, response_id: str, principal: Principal) -> StoredResponse:
        """The response, if this principal may see it; else the unknown-id 404."""
        found = await self.find(response_id, principal)
        if found is None:
            raise not_found(response_id)
        return found

    async def history(self, response_id: str, principal: Principal) -> list[dict[str, Any]]:
        """The items of a chain ending at ``response_id`` (each turn's inputs, then its output),
        oldest first. 404 if the principal may not see the response it names."""
        rows = await self.store.chain(response_id, MAX_CHAIN)
        if not rows or not self._visible(rows[0], principal):
            raise not_found(response_id, "previous_response_id")
        # a response an upstream holds chains only there (on a model relayed to it), never here
        items: list[dict[str, Any]] = []
        for row in reversed(rows):
            if not self._visible(row, principal):
                items = []  # a chain continued by another key starts where this key's part begins
                continue
            opened = self._open(row)
            if opened is None or opened.native is not None:
                if row is rows[0]:
                    raise not_found(response_id, "previous_response_id")
                continue
            items += opened.input_items
            items += opened.response.get("output") or []
        return items

    async def delete(self, response_id: str, principal: Principal) -> None:
        row = await self.store.get(response_id)
        if row is None or not self._visible(row, principal) or not await self.store.delete(response_id):
            raise not_found(response_id)
