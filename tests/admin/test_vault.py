"""The credential vault: encryption format, failures, rekey, live checks, use counts. What a store
decides (the sealed columns, unique names, rekey all or nothing, use counts) runs on SQLite and on
the real PostgreSQL (``store``); the rest on SQLite."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from switchyard.admin.vault import (
    CredentialIntegrityError,
    Vault,
    VaultNotConfiguredError,
    WrongMasterKeyError,
)
from switchyard.errors import BadRequestError, NotFoundError
from switchyard.store import Database, upgrade
from switchyard.store.credentials import SqlCredentialStore
from tests.conftest import reset_pg_schema
from tests.fakes import FakeOllama, FakeOpenAI
from tests.harness import free_port

MASTER = "vault-test-master-key-0123456789-abcdef"
OTHER_MASTER = "a-different-master-key-0123456789-zyxw"
GOOD_KEY = "sk-proj-vault-good-key-abcdefghijklmnopqrstuvwxyz"
BAD_KEY = "sk-proj-vault-bad-key-ZYXWVUTSRQPONMLKJIHGFEDCBA"


@pytest.fixture(scope="module")
def openai_up() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=GOOD_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def ollama_up() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


def db_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "switchyard.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a SQLite file in tmp_path, or the session's PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{db_file(tmp_path)}"
    url: str = request.getfixturevalue("pg_url")
    asyncio.run(reset_pg_schema(url))
    return url


def run(where: Path | str, body: Callable[[Vault, Database], Awaitable[None]], master: str | None = MASTER) -> None:
    """``body`` with a vault on ``where``: a URL (``store``), or a tmp_path (its SQLite file)."""
    url = where if isinstance(where, str) else f"sqlite+aiosqlite:///{db_file(where)}"

    async def main() -> None:
        await upgrade(url)
        async with Database.create(url) as db:
            vault = Vault(SqlCredentialStore(db.engine), master)
            try:
                await body(vault, db)
            finally:
                await vault.aclose()

    asyncio.run(main())


def sql(url: str, statement: str, **params: Any) -> list[dict[str, Any]]:
    """Run one statement on the database at ``url`` (committed); its rows as dicts."""

    async def main() -> list[dict[str, Any]]:
        async with Database.create(url) as db, db.engine.begin() as conn:
            result = await conn.execute(sa.text(statement), params)
            return [dict(r._mapping) for r in result] if result.returns_rows else []

    return asyncio.run(main())


def rows(url: str) -> dict[str, dict[str, Any]]:
    return {str(r["name"]): r for r in sql(url, "SELECT * FROM credentials")}


def spec_decrypt(master: str, cred_id: str, salt: bytes, nonce: bytes, ciphertext: bytes) -> str:
    """The documented format, implemented independently: scrypt(n=2**14, r=8, p=1) + AES-256-GCM."""
    key = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(master.encode())
    return AESGCM(key).decrypt(nonce, ciphertext, b"switchyard-credential:" + cred_id.encode()).decode()


def fingerprint(master: str) -> str:
    return hmac.new(master.encode(), b"switchyard-master-key-id", hashlib.sha256).hexdigest()[:16]


def test_database_never_holds_the_plaintext_and_the_format_is_as_documented(store: str, tmp_path: Path) -> None:
    async def body(vault: Vault, db: Database) -> None:
        a = await vault.add("first", "openai", GOOD_KEY, check=False)
        b = await vault.add("second", "openai", GOOD_KEY, check=False)  # same secret, twice
        assert a.display == "sk-pr…wxyz" and a.key_version == fingerprint(MASTER)
        assert a.id.startswith("cred_") and a.id != b.id

    run(store, body)
    if store.startswith("sqlite"):
        files = [p for p in db_file(tmp_path).parent.iterdir() if p.is_file()]
        assert db_file(tmp_path) in files
        contents = [(p.name, p.read_bytes()) for p in files]  # the database, and its -wal / -shm if present
    else:  # every column of every row, as PostgreSQL hands it out
        contents = [(str(r["name"]), repr(r).encode() + b"".join(v for v in r.values() if isinstance(v, bytes)))
                    for r in sql(store, "SELECT * FROM credentials")]
    for where, content in contents:
        assert GOOD_KEY.encode() not in content, f"{where} holds the plaintext"
        assert GOOD_KEY[5:-4].encode() not in content
    found = rows(store)
    first, second = found["first"], found["second"]
    assert len(first["salt"]) == 16 and len(first["nonce"]) == 12
    assert len(first["ciphertext"]) == len(GOOD_KEY) + 16  # GCM tag
    # unique salt and nonce per encryption: the same secret gives unrelated rows
    assert first["salt"] != second["salt"] and first["nonce"] != second["nonce"]
    assert first["ciphertext"] != second["ciphertext"]
    for row in (first, second):
        assert row["key_version"] == fingerprint(MASTER)
        assert spec_decrypt(MASTER, row["id"], row["salt"], row["nonce"], row["ciphertext"]) == GOOD_KEY
    assert (first["prefix"], first["last4"]) == ("sk-pr", "wxyz")


def test_wrong_master_key_is_reported_with_both_fingerprints(store: str) -> None:
    async def add(vault: Vault, db: Database) -> None:
        await vault.add("prod", "openai", GOOD_KEY, check=False)

    async def read(vault: Vault, db: Database) -> None:
        expected = (f"credential 'prod' was encrypted under master key {fingerprint(MASTER)}, "
                    f"but the configured master key is {fingerprint(OTHER_MASTER)}")
        with pytest.raises(WrongMasterKeyError) as got:
            await vault.secrets()
        assert str(got.value) == expected
        with pytest.raises(WrongMasterKeyError, match="encrypted under master key"):
            await vault.decrypt("prod")
        with pytest.raises(WrongMasterKeyError, match="encrypted under master key"):
            await vault.check("prod")
        with pytest.raises(WrongMasterKeyError):
            await vault.rekey(MASTER + "-new")
        assert [c.name for c in await vault.list()] == ["prod"]  # listing needs no key

    run(store, add)
    run(store, read, master=OTHER_MASTER)


def test_swapped_or_altered_ciphertexts_fail_authentication(store: str) -> None:
    async def add(vault: Vault, db: Database) -> None:
        await vault.add("one", "openai", GOOD_KEY, check=False)
        await vault.add("two", "openai", BAD_KEY, check=False)
        await vault.add("three", "openai", "sk-three-0123456789abcdefghij", check=False)

    run(store, add)
    sql(store,  # give row 'one' the sealed columns of row 'two'
        "UPDATE credentials SET (salt, nonce, ciphertext) = "
        "(SELECT salt, nonce, ciphertext FROM credentials WHERE name = 'two') WHERE name = 'one'")
    ct = rows(store)["three"]["ciphertext"]
    flipped = bytes([ct[0] ^ 1]) + ct[1:]  # one bit of the first byte
    sql(store, "UPDATE credentials SET ciphertext = :ct WHERE name = 'three'", ct=flipped)

    async def read(vault: Vault, db: Database) -> None:
        with pytest.raises(CredentialIntegrityError, match=r"credential 'one' .* fails authentication"):
            await vault.decrypt("one")
        with pytest.raises(CredentialIntegrityError, match="credential 'three'"):
            await vault.decrypt("three")
        cred, secret = await vault.decrypt("two")  # the untouched row still opens
        assert secret == BAD_KEY and cred.name == "two"
        with pytest.raises(CredentialIntegrityError):
            await vault.secrets()

    run(store, read)


def test_rekey_round_trips_and_is_all_or_nothing(store: str) -> None:
    plain = {f"cred-{n}": f"sk-rekey-{n}-0123456789abcdefghijklmnop" for n in range(4)}
    new_master = "the-new-master-key-after-rotation-00000"

    async def add(vault: Vault, db: Database) -> None:
        for name, secret in plain.items():
            await vault.add(name, "openai", secret, check=False)
        await vault.set_active("cred-3", False)  # inactive rows are re-encrypted too
        with pytest.raises(BadRequestError, match="already configured"):
            await vault.rekey(MASTER)
        with pytest.raises(BadRequestError, match="too short"):
            await vault.rekey("short")
        assert await vault.rekey(new_master) == 4
        assert vault.fingerprint == fingerprint(new_master)
        assert (await vault.decrypt("cred-0"))[1] == plain["cred-0"]  # this vault now uses the new key

    run(store, add)
    after = rows(store)
    for name, secret in plain.items():
        row = after[name]
        assert row["key_version"] == fingerprint(new_master)
        assert spec_decrypt(new_master, row["id"], row["salt"], row["nonce"], row["ciphertext"]) == secret

    async def new_opens(vault: Vault, db: Database) -> None:
        assert await vault.secrets() == {k: v for k, v in plain.items() if k != "cred-3"}

    async def old_fails(vault: Vault, db: Database) -> None:
        with pytest.raises(WrongMasterKeyError):
            await vault.secrets()

    run(store, new_opens, master=new_master)
    run(store, old_fails, master=MASTER)

    # a row the current key cannot open (added under a third key) makes the whole rekey fail
    async def foreign(vault: Vault, db: Database) -> None:
        await vault.add("foreign", "openai", "sk-foreign-0123456789abcdefghij", check=False)

    run(store, foreign, master=OTHER_MASTER)
    snapshot = rows(store)

    async def partial(vault: Vault, db: Database) -> None:
        with pytest.raises(WrongMasterKeyError, match="credential 'foreign'"):
            await vault.rekey("yet-another-master-key-0123456789abcd")

    run(store, partial, master=new_master)
    assert rows(store) == snapshot


def test_without_a_master_key_the_vault_refuses_to_seal_or_open(store: str) -> None:
    async def add(vault: Vault, db: Database) -> None:
        await vault.add("kept", "openai", GOOD_KEY, check=False)

    async def body(vault: Vault, db: Database) -> None:
        assert not vault.configured and vault.fingerprint is None
        for call in (vault.add("new", "openai", GOOD_KEY, check=False), vault.secrets(), vault.decrypt("kept"),
                     vault.check("kept"), vault.rekey(OTHER_MASTER)):
            with pytest.raises(VaultNotConfiguredError, match="SWITCHYARD_MASTER_KEY"):
                await call
        assert (await vault.get("kept")).name == "kept"
        assert not (await vault.set_active("kept", False)).active
        assert (await vault.remove("kept")).name == "kept"
        assert await vault.list() == []

    run(store, add)
    run(store, body, master=None)


def test_live_check_refuses_a_bad_key_and_records_checks(tmp_path: Path, openai_up: FakeOpenAI) -> None:
    async def body(vault: Vault, db: Database) -> None:
        openai_up.reset()
        with pytest.raises(BadRequestError) as refused:
            await vault.add("bad", "openai", BAD_KEY, base_url=openai_up.base_url)
        err = refused.value
        assert err.code == "credential_check_failed" and err.param == "api_key"
        assert "openai" in err.message and "rejected the key" in err.message
        assert BAD_KEY not in err.message and BAD_KEY[:12] not in err.message
        assert await vault.list() == []  # nothing stored
        seen = openai_up.last_request
        assert seen.path == "/v1/models" and seen.headers["Authorization"] == f"Bearer {BAD_KEY}"

        good = await vault.add("good", "openai", GOOD_KEY, base_url=openai_up.base_url + "/")
        assert good.last_check_ok is True and good.last_checked_at is not None
        assert good.base_url == openai_up.base_url
        assert openai_up.last_request.headers["Authorization"] == f"Bearer {GOOD_KEY}"

        openai_up.reset()
        unchecked = await vault.add("later", "openai", BAD_KEY, base_url=openai_up.base_url, check=False)
        assert unchecked.last_check_ok is None and unchecked.last_checked_at is None
        assert openai_up.requests == []  # check=False never calls the provider

        failed = await vault.check("later")
        assert failed.last_check_ok is False and failed.last_checked_at is not None
        assert failed.last_check_error is not None and "rejected the key" in failed.last_check_error
        assert BAD_KEY not in failed.last_check_error
        again = await vault.check(good.id)
        assert again.last_check_ok is True and again.last_checked_at is not None
        assert good.last_checked_at is not None and again.last_checked_at > good.last_checked_at

        dead = f"http://127.0.0.1:{free_port()}/v1"
        with pytest.raises(BadRequestError, match="credential check failed") as unreachable:
            await vault.add("dead", "openai", GOOD_KEY, base_url=dead)
        assert unreachable.value.code == "credential_check_failed" and GOOD_KEY not in unreachable.value.message

    run(tmp_path, body)


def test_ollama_is_checked_only_with_a_base_url(tmp_path: Path, ollama_up: FakeOllama) -> None:
    async def body(vault: Vault, db: Database) -> None:
        ollama_up.reset()
        local = await vault.add("local", "ollama", "ollama-proxy-token-0123456789")
        assert local.last_check_ok is None and ollama_up.requests == []
        assert (await vault.check("local")).last_checked_at is None  # nothing to check, nothing recorded
        remote = await vault.add("remote", "ollama", "ollama-proxy-token-0123456789", base_url=ollama_up.base_url)
        assert remote.last_check_ok is True
        assert ollama_up.last_request.path == "/api/tags"
        assert ollama_up.last_request.headers["Authorization"] == "Bearer ollama-proxy-token-0123456789"
        with pytest.raises(BadRequestError) as down:
            await vault.add("down", "ollama", "tok-0123456789", base_url=f"http://127.0.0.1:{free_port()}")
        assert down.value.code == "credential_check_failed" and "ollama" in down.value.message

    run(tmp_path, body)


@pytest.mark.parametrize(
    ("name", "provider", "secret", "base_url", "param"),
    [
        ("", "openai", GOOD_KEY, None, "name"),
        ("has space", "openai", GOOD_KEY, None, "name"),
        ("cred_abc", "openai", GOOD_KEY, None, "name"),
        ("-dash", "openai", GOOD_KEY, None, "name"),
        ("ok", "mistral", GOOD_KEY, None, "provider"),
        ("ok", "openai", "", None, "api_key"),
        ("ok", "openai", "sk-with space", None, "api_key"),
        ("ok", "openai", "sk-new\nline", None, "api_key"),
        ("ok", "openai", GOOD_KEY, "ftp://example.com", "base_url"),
        ("ok", "openai", GOOD_KEY, "not a url", "base_url"),
        ("ok", "openai", GOOD_KEY, "http:///v1", "base_url"),
        ("ok", "azure", GOOD_KEY, None, "base_url"),
    ],
)
def test_bad_input_is_refused_with_its_param(
    tmp_path: Path, name: str, provider: str, secret: str, base_url: str | None, param: str
) -> None:
    async def body(vault: Vault, db: Database) -> None:
        with pytest.raises(BadRequestError) as refused:
            await vault.add(name, provider, secret, base_url=base_url, check=False)
        assert refused.value.param == param
        assert await vault.list() == []

    run(tmp_path, body)


def test_names_are_unique_and_lookups_take_id_or_name(store: str) -> None:
    async def body(vault: Vault, db: Database) -> None:
        made = await vault.add("team", "anthropic", "sk-ant-0123456789abcdefghijkl", check=False)
        with pytest.raises(BadRequestError) as dup:
            await vault.add("team", "openai", GOOD_KEY, check=False)
        assert dup.value.code == "duplicate_name" and dup.value.param == "name"
        assert await vault.get(made.id) == await vault.get("team") == made
        assert made.display == "sk-an…ijkl"
        short = await vault.add("short", "openai", "sk-0123456789", check=False)
        assert short.display == "…"  # a short key shows nothing rather than most of itself
        with pytest.raises(NotFoundError):
            await vault.get("missing")
        with pytest.raises(NotFoundError):
            await vault.remove("missing")
        off = await vault.set_active("team", False)
        assert not off.active
        assert await vault.secrets() == {"short": "sk-0123456789"}
        with pytest.raises(NotFoundError, match="deactivated"):
            await vault.decrypt("team")
        assert (await vault.set_active(made.id, True)).active
        assert (await vault.decrypt("team"))[1] == "sk-ant-0123456789abcdefghijkl"
        assert (await vault.remove("team")).id == made.id
        with pytest.raises(NotFoundError):
            await vault.get(made.id)

    run(store, body)


def test_uses_are_counted_in_memory_and_flushed(store: str) -> None:
    async def body(vault: Vault, db: Database) -> None:
        await vault.add("busy", "openai", GOOD_KEY, check=False)
        await vault.add("idle", "openai", BAD_KEY, check=False)
        for _ in range(3):
            vault.note_use("busy")
        assert (await vault.get("busy")).use_count == 0  # not written yet
        await vault.flush_uses()
        busy = await vault.get("busy")
        assert busy.use_count == 3 and busy.last_used_at is not None
        assert (await vault.get("idle")).use_count == 0
        vault.note_use("busy")
        vault.note_use("idle")
        # ``run`` closes the vault, which flushes

    run(store, body)
    found = rows(store)
    assert found["busy"]["use_count"] == 4 and found["idle"]["use_count"] == 1


def test_the_background_flush_writes_uses(store: str) -> None:
    async def body(vault: Vault, db: Database) -> None:
        await vault.add("bg", "openai", GOOD_KEY, check=False)
        fast = Vault(SqlCredentialStore(db.engine), MASTER, flush_interval=0.05)
        await fast.start()
        try:
            fast.note_use("bg")
            for _ in range(100):
                if (await fast.get("bg")).use_count == 1:
                    break
                await asyncio.sleep(0.02)
            assert (await fast.get("bg")).use_count == 1
        finally:
            await fast.aclose()

    run(store, body)
