"""SqlCredentialStore and the Vault over it, on SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from switchyard.admin.vault import CredentialIntegrityError, Vault, WrongMasterKeyError
from switchyard.core.credentials import (
    Credential,
    CredentialStore,
    DuplicateCredentialError,
    Sealed,
    SealedCredential,
)
from switchyard.store import Database
from switchyard.store.credentials import SqlCredentialStore

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))
MASTER = "master-key-for-the-store-tests-0123456789"
NEW_MASTER = "another-master-key-for-the-store-tests-987"


def make(n: int, **fields: object) -> tuple[Credential, Sealed]:
    cred = Credential(
        id=f"cred_{n:016x}", name=f"cred-{n}", provider="openai", base_url=None, prefix="sk-pr", last4=f"{n:04d}",
        key_version="v1", created_at=T0, updated_at=T0,
    )
    sealed = Sealed(salt=bytes([n]) * 16, nonce=bytes([n + 1]) * 12, ciphertext=b"\x00\xff" + bytes([n]) * 30,
                    key_version="v1")
    return replace(cred, **fields), sealed  # type: ignore[arg-type]


def test_store_matches_its_port_exactly() -> None:
    def methods(cls: type) -> dict[str, list[tuple[str, object, object]]]:
        return {
            name: [(p.name, p.kind, p.default) for p in inspect.signature(member).parameters.values()]
            for name, member in vars(cls).items()
            if inspect.iscoroutinefunction(member) and not name.startswith("_")
        }

    wanted, got = methods(CredentialStore), methods(SqlCredentialStore)
    assert wanted and set(wanted) <= set(got)
    for name, parameters in wanted.items():
        assert got[name] == parameters, name


def test_round_trip_with_every_field_and_binary_columns(url: str) -> None:
    full, full_sealed = make(1, base_url="https://example.test/v1", provider="azure", active=False,
                             created_at=T0.astimezone(PLUS2), updated_at=T0 + timedelta(minutes=1),
                             last_used_at=T0 + timedelta(minutes=2), use_count=7,
                             last_checked_at=T0 + timedelta(minutes=3), last_check_ok=False,
                             last_check_error="rejected")
    plain, plain_sealed = make(2)

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlCredentialStore(db.engine)
            await store.add(full, full_sealed)
            await store.add(plain, plain_sealed)
            assert await store.get(full.id) == full
            assert await store.get(full.name) == full  # by name too
            got = await store.get(plain.id)
            assert got == plain and got is not None and got.last_check_ok is None
            assert got.created_at.utcoffset() == timedelta(0)
            assert await store.get("cred_missing") is None
            row = await store.sealed(full.name)
            assert row == SealedCredential(full, full_sealed)  # bytes survive exactly (BLOB / BYTEA)
            assert await store.sealed("nope") is None
            assert [c.name for c in await store.list()] == ["cred-1", "cred-2"]
            assert [r.credential.name for r in await store.list_sealed()] == ["cred-2"]  # cred-1 is inactive
            assert len(await store.list_sealed(active_only=False)) == 2

    asyncio.run(body())


def test_names_and_ids_are_unique(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlCredentialStore(db.engine)
            await store.add(*make(1))
            with pytest.raises(DuplicateCredentialError):
                await store.add(*make(2, name="cred-1"))
            with pytest.raises(DuplicateCredentialError):
                await store.add(*make(1, name="other"))
            assert len(await store.list()) == 1

    asyncio.run(body())


def test_active_checks_and_remove(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlCredentialStore(db.engine)
            cred, sealed = make(1)
            await store.add(cred, sealed)
            t1, t2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
            assert await store.set_active(cred.id, False, t1) is True
            assert await store.set_active("cred_missing", False, t1) is False
            got = await store.get(cred.id)
            assert got is not None and not got.active and got.updated_at == t1
            assert await store.record_check(cred.id, False, "x" * 900, t2) is True
            got = await store.get(cred.id)
            assert got is not None and got.last_check_ok is False and got.last_checked_at == t2
            assert got.last_check_error == "x" * 500  # bounded
            assert await store.record_check(cred.id, True, "ignored", t2) is True
            got = await store.get(cred.id)
            assert got is not None and got.last_check_ok is True and got.last_check_error is None
            assert await store.remove(cred.id) is True
            assert await store.remove(cred.id) is False
            assert await store.get(cred.id) is None

    asyncio.run(body())


def test_touch_accumulates_by_name_and_keeps_latest_use(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlCredentialStore(db.engine)
            a, b = make(1), make(2, last_used_at=T0 + timedelta(days=1), use_count=10)
            await store.add(*a)
            await store.add(*b)
            t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
            await store.touch({"cred-1": (3, t2), "cred-2": (1, t1), "unknown": (1, t1)})
            await store.touch({"cred-1": (2, t1.astimezone(PLUS2))})  # older: count grows, last use stays
            await store.touch({})
            got_a, got_b = await store.get("cred-1"), await store.get("cred-2")
            assert got_a is not None and got_a.use_count == 5 and got_a.last_used_at == t2
            assert got_b is not None and got_b.use_count == 11 and got_b.last_used_at == T0 + timedelta(days=1)

    asyncio.run(body())


def test_reseal_is_all_or_nothing(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlCredentialStore(db.engine)
            for n in range(3):
                await store.add(*make(n))
            before = await store.list_sealed(active_only=False)

            async def fails_on_second(row: SealedCredential) -> Sealed:
                if row.credential.name == "cred-1":
                    raise RuntimeError("cannot open this one")
                return Sealed(b"s" * 16, b"n" * 12, b"c" * 40, "v2")

            with pytest.raises(RuntimeError):
                await store.reseal(fails_on_second, T0 + timedelta(hours=1))
            assert await store.list_sealed(active_only=False) == before  # nothing changed

            async def ok(row: SealedCredential) -> Sealed:
                return Sealed(row.sealed.salt[::-1], b"n" * 12, row.credential.id.encode(), "v2")

            at = T0 + timedelta(hours=2)
            assert await store.reseal(ok, at) == 3
            after = await store.list_sealed(active_only=False)
            assert [r.sealed.ciphertext for r in after] == [r.credential.id.encode() for r in before]
            assert all(r.sealed.key_version == "v2" == r.credential.key_version for r in after)
            assert all(r.credential.updated_at == at for r in after)

    asyncio.run(body())


def _vault(db: Database, master: str = MASTER) -> Vault:
    return Vault(SqlCredentialStore(db.engine), master)


def test_vault_swap_tamper_and_rekey(url: str) -> None:
    """The vault's guarantees on this backend: raw SQL tampering is caught, rekey round-trips."""
    secrets = {"alpha": "sk-alpha-0123456789abcdefghij", "beta": "sk-beta-0123456789abcdefghijk"}

    async def body() -> None:
        async with Database.create(url) as db:
            vault = _vault(db)
            for name, secret in secrets.items():
                await vault.add(name, "openai", secret, check=False)
            assert await vault.secrets() == secrets

            # swap the sealed columns of the two rows with raw SQL
            async with db.engine.begin() as conn:
                rows = {r.name: r for r in await conn.execute(sa.text("SELECT name, salt, nonce, ciphertext "
                                                                      "FROM credentials"))}
                for mine, theirs in (("alpha", "beta"), ("beta", "alpha")):
                    src = rows[theirs]
                    await conn.execute(
                        sa.text("UPDATE credentials SET salt = :s, nonce = :n, ciphertext = :c WHERE name = :name"),
                        {"s": src.salt, "n": src.nonce, "c": src.ciphertext, "name": mine},
                    )
            with pytest.raises(CredentialIntegrityError, match="credential 'alpha'"):
                await vault.decrypt("alpha")
            with pytest.raises(CredentialIntegrityError, match="credential 'beta'"):
                await vault.decrypt("beta")
            with pytest.raises(CredentialIntegrityError):  # rekey needs every row opened first
                await vault.rekey(NEW_MASTER)

            # put them back: both open again, then rekey
            async with db.engine.begin() as conn:
                for name in ("alpha", "beta"):
                    src = rows[name]
                    await conn.execute(
                        sa.text("UPDATE credentials SET salt = :s, nonce = :n, ciphertext = :c WHERE name = :name"),
                        {"s": src.salt, "n": src.nonce, "c": src.ciphertext, "name": name},
                    )
            assert await vault.secrets() == secrets
            old = {r.credential.name: r.sealed for r in await SqlCredentialStore(db.engine).list_sealed()}
            assert await vault.rekey(NEW_MASTER) == 2
            new = {r.credential.name: r.sealed for r in await SqlCredentialStore(db.engine).list_sealed()}
            for name in secrets:
                assert new[name].salt != old[name].salt and new[name].nonce != old[name].nonce
                assert new[name].key_version == vault.fingerprint != old[name].key_version
            assert await _vault(db, NEW_MASTER).secrets() == secrets
            with pytest.raises(WrongMasterKeyError, match="but the configured master key is"):
                await _vault(db, MASTER).secrets()

    asyncio.run(body())
