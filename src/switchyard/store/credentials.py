"""Encrypted provider credentials in SQL: the ``CredentialStore`` port.

Only ciphertext, the scrypt salt and GCM nonce of its encryption, and a display prefix and
last four characters are stored; this module never sees a plaintext key.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from switchyard.core.credentials import Credential, DuplicateCredentialError, Sealed, SealedCredential
from switchyard.store.engine import AsyncEngine
from switchyard.store.tables import UtcDateTime, credentials

__all__ = ["SqlCredentialStore"]

_t = credentials

# Bind names must not clash with column names in an UPDATE, hence the ``b_`` prefix.
_TOUCH = (
    sa.update(_t)
    .where(_t.c.name == sa.bindparam("b_name"))
    .values(
        use_count=_t.c.use_count + sa.bindparam("b_count", type_=sa.BigInteger()),
        last_used_at=sa.case(
            (
                sa.or_(
                    _t.c.last_used_at.is_(None),
                    _t.c.last_used_at < sa.bindparam("b_last", type_=UtcDateTime()),
                ),
                sa.bindparam("b_last", type_=UtcDateTime()),
            ),
            else_=_t.c.last_used_at,
        ),
    )
)

_RESEAL = (
    sa.update(_t)
    .where(_t.c.id == sa.bindparam("b_id"))
    .values(
        salt=sa.bindparam("b_salt", type_=sa.LargeBinary()),
        nonce=sa.bindparam("b_nonce", type_=sa.LargeBinary()),
        ciphertext=sa.bindparam("b_ciphertext", type_=sa.LargeBinary()),
        key_version=sa.bindparam("b_version", type_=sa.String()),
        updated_at=sa.bindparam("b_at", type_=UtcDateTime()),
    )
)


def _to_row(cred: Credential, sealed: Sealed) -> dict[str, Any]:
    return {
        "id": cred.id,
        "name": cred.name,
        "provider": cred.provider,
        "base_url": cred.base_url,
        "salt": sealed.salt,
        "nonce": sealed.nonce,
        "ciphertext": sealed.ciphertext,
        "key_version": sealed.key_version,
        "prefix": cred.prefix,
        "last4": cred.last4,
        "created_at": cred.created_at,
        "updated_at": cred.updated_at,
        "last_used_at": cred.last_used_at,
        "use_count": cred.use_count,
        "active": cred.active,
        "last_checked_at": cred.last_checked_at,
        "last_check_ok": cred.last_check_ok,
        "last_check_error": cred.last_check_error,
    }


def _credential(row: RowMapping) -> Credential:
    ok = row["last_check_ok"]
    return Credential(
        id=row["id"],
        name=row["name"],
        provider=row["provider"],
        base_url=row["base_url"],
        prefix=row["prefix"],
        last4=row["last4"],
        key_version=row["key_version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        active=bool(row["active"]),
        last_used_at=row["last_used_at"],
        use_count=int(row["use_count"]),
        last_checked_at=row["last_checked_at"],
        last_check_ok=None if ok is None else bool(ok),
        last_check_error=row["last_check_error"],
    )


def _sealed(row: RowMapping) -> SealedCredential:
    sealed = Sealed(
        salt=bytes(row["salt"]),
        nonce=bytes(row["nonce"]),
        ciphertext=bytes(row["ciphertext"]),
        key_version=row["key_version"],
    )
    return SealedCredential(credential=_credential(row), sealed=sealed)


_PUBLIC = [c for c in _t.c if c.name not in ("salt", "nonce", "ciphertext")]


def _match(id_or_name: str) -> sa.ColumnElement[bool]:
    return sa.or_(_t.c.id == id_or_name, _t.c.name == id_or_name)


def _prefer_id(rows: builtins.list[RowMapping], id_or_name: str) -> RowMapping | None:
    by_id = [r for r in rows if r["id"] == id_or_name]
    found = by_id or rows
    return found[0] if found else None


class SqlCredentialStore:
    """``CredentialStore`` over SQLAlchemy Core; one code path for SQLite and PostgreSQL.

    Lookups take an id or a name (an id wins if a name ever equals another row's id).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, credential: Credential, sealed: Sealed) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(_t).values(_to_row(credential, sealed)))
        except sa.exc.IntegrityError:
            raise DuplicateCredentialError(credential.name) from None

    async def get(self, id_or_name: str) -> Credential | None:
        async with self._engine.connect() as conn:
            result = await conn.execute(sa.select(*_PUBLIC).where(_match(id_or_name)))
            row = _prefer_id(builtins.list(result.mappings()), id_or_name)
        return None if row is None else _credential(row)

    async def list(self) -> builtins.list[Credential]:
        async with self._engine.connect() as conn:
            result = await conn.execute(sa.select(*_PUBLIC).order_by(_t.c.name))
            return [_credential(row) for row in result.mappings()]

    async def sealed(self, id_or_name: str) -> SealedCredential | None:
        async with self._engine.connect() as conn:
            result = await conn.execute(sa.select(_t).where(_match(id_or_name)))
            row = _prefer_id(builtins.list(result.mappings()), id_or_name)
        return None if row is None else _sealed(row)

    async def list_sealed(self, *, active_only: bool = True) -> builtins.list[SealedCredential]:
        stmt = sa.select(_t).order_by(_t.c.name)
        if active_only:
            stmt = stmt.where(_t.c.active.is_(True))
        async with self._engine.connect() as conn:
            result = await conn.execute(stmt)
            return [_sealed(row) for row in result.mappings()]

    async def _update(self, credential_id: str, values: dict[str, Any]) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.update(_t).where(_t.c.id == credential_id).values(values))
            return result.rowcount > 0

    async def remove(self, credential_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.delete(_t).where(_t.c.id == credential_id))
            return result.rowcount > 0

    async def set_active(self, credential_id: str, active: bool, at: datetime) -> bool:
        return await self._update(credential_id, {"active": active, "updated_at": at})

    async def record_check(self, credential_id: str, ok: bool, error: str | None, at: datetime) -> bool:
        return await self._update(
            credential_id,
            {"last_checked_at": at, "last_check_ok": ok, "last_check_error": None if ok else (error or "")[:500]},
        )

    async def reseal(self, transform: Callable[[SealedCredential], Awaitable[Sealed]], at: datetime) -> int:
        """Re-encrypt every row in one transaction: if ``transform`` raises for any row, none changes.

        PostgreSQL: the table is locked against writers (a credential added meanwhile would be left
        under the old key). SQLite: a writer that commits meanwhile makes the final update fail.
        """
        async with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(sa.text("LOCK TABLE credentials IN SHARE ROW EXCLUSIVE MODE"))
            result = await conn.execute(sa.select(_t).order_by(_t.c.name))
            rows = [_sealed(row) for row in result.mappings()]
            params = []
            for row in rows:
                new = await transform(row)
                params.append({"b_id": row.credential.id, "b_salt": new.salt, "b_nonce": new.nonce,
                               "b_ciphertext": new.ciphertext, "b_version": new.key_version, "b_at": at})
            if params:
                await conn.execute(_RESEAL, params)
            return len(params)

    async def touch(self, uses: dict[str, tuple[int, datetime]]) -> None:
        if not uses:
            return
        params = [{"b_name": name, "b_count": count, "b_last": last} for name, (count, last) in sorted(uses.items())]
        async with self._engine.begin() as conn:
            await conn.execute(_TOUCH, params)
