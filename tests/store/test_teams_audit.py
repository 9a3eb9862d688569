"""Teams, key owners/limits/budgets and the audit log in the store, on SQLite and PostgreSQL;
and the KeyService Principal built from them."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from switchyard.admin.audit import REDACTED, AuditLog, scrub
from switchyard.admin.teams import TeamService
from switchyard.core.keys import ApiKey, Team
from switchyard.core.limits import Budget, RateLimits
from switchyard.errors import BadRequestError
from switchyard.service.keys import KeyService
from switchyard.store import Database, SqlKeyStore, upgrade
from switchyard.store.audit import AuditEntry, SqlAuditStore
from switchyard.store.migrate import alembic_config
from switchyard.store.teams import DuplicateTeamError, SqlTeamStore

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
SECRET = b"x" * 32


def make_key(n: int, **fields: object) -> ApiKey:
    key = ApiKey(id=f"key_{n:016x}", name=f"key {n}", prefix=f"sy-{n:04d}", key_hash=f"hash-{n}", created_at=T0)
    return replace(key, **fields)  # type: ignore[arg-type]


def make_team(n: int, **fields: object) -> Team:
    team = Team(id=f"team_{n:016x}", name=f"team {n}", created_at=T0, updated_at=T0)
    return replace(team, **fields)  # type: ignore[arg-type]


def test_teams_crud(url: str) -> None:
    full = make_team(1, limits=RateLimits(rpm=60, tpm=1000, rph=500, rpd=5000, max_parallel=3),
                     budget=Budget(100.0, "daily"))

    async def body() -> None:
        async with Database.create(url) as db:
            teams, keys = SqlTeamStore(db.engine), SqlKeyStore(db.engine)
            await teams.add(full)
            await teams.add(make_team(2, name="alpha"))
            assert await teams.get(full.id) == full
            assert await teams.get("team 1") == full  # by name
            assert await teams.get("nope") is None
            with pytest.raises(DuplicateTeamError):
                await teams.add(make_team(3, name="alpha"))
            assert [t.name for t in await teams.list()] == ["alpha", "team 1"]
            plain = await teams.get("alpha")
            assert plain is not None and plain.limits is None and plain.budget is None

            later = T0 + timedelta(minutes=1)
            changed = replace(full, name="renamed", limits=RateLimits(rpm=1), budget=None, updated_at=later)
            assert await teams.update(changed)
            assert await teams.get(full.id) == changed
            assert await teams.changed_since(T0) == [changed]
            with pytest.raises(DuplicateTeamError):
                await teams.update(replace(changed, name="alpha"))
            assert not await teams.update(make_team(9))

            # a team that keys belong to is not removed; revoked keys do not hold it
            await keys.add(make_key(1, team_id=full.id))
            await keys.add(make_key(2, team_id=full.id))
            assert await teams.key_counts() == {full.id: 2}
            assert not await teams.remove(full.id)
            await keys.revoke(make_key(1).id, later)
            assert await teams.key_counts() == {full.id: 1}
            assert await keys.update(make_key(2, team_id=None), later)
            assert await teams.key_counts() == {}
            assert await teams.remove(full.id)
            assert await teams.get(full.id) is None and not await teams.remove(full.id)

    asyncio.run(body())


def test_key_owner_limit_and_budget_fields_round_trip(url: str) -> None:
    owned = make_key(
        1, user_id="alice@example.com", team_id="team_0000000000000001",
        limits=RateLimits(rpm=10, tpm=2000, rph=100, rpd=1000, max_parallel=2),
        model_limits={"gpt-4o": RateLimits(rpm=2), "ollama/*": RateLimits(tpm=50, max_parallel=1)},
        budget=Budget(12.5, "total"),
    )

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlKeyStore(db.engine)
            await store.add(owned)
            await store.add(make_key(2))
            assert await store.get(owned.id) == owned
            assert await store.find_by_hash(owned.key_hash) == owned
            plain = await store.get(make_key(2).id)
            assert plain == make_key(2) and plain is not None
            assert plain.limits is None and plain.model_limits == {} and plain.budget is None

            later = T0 + timedelta(minutes=5)
            changed = replace(owned, name="renamed", user_id=None, team_id=None, limits=RateLimits(rpd=7),
                              model_limits={}, budget=Budget(3.0, "monthly"), allowed_models=("chat",),
                              expires_at=later + timedelta(days=1))
            # update never touches the secret, admin flag or counters
            assert await store.update(replace(changed, key_hash="evil", is_admin=True, use_count=99), later)
            assert await store.get(owned.id) == changed
            assert [k.id for k in await store.changed_since(T0)] == [owned.id]
            async with db.engine.connect() as conn:
                row = (await conn.execute(sa.text(
                    "SELECT user_id, team_id, model_limits, budget_usd, budget_period FROM api_keys WHERE id = :id"
                ), {"id": owned.id})).one()
            assert tuple(row) == (None, None, None, 3.0, "monthly")  # SQL NULLs, not JSON null
            assert await store.revoke(owned.id, later)
            assert not await store.update(changed, later)  # revoked keys are not changed

    asyncio.run(body())


def _entry(minute: int, actor: str, action: str, object_id: str | None, **details: object) -> AuditEntry:
    return AuditEntry(at=T0 + timedelta(minutes=minute), actor=actor, action=action, object_type=action.split(".")[0],
                      object_id=object_id, details=dict(details), client_ip="10.0.0.1", request_id=f"req-{minute}")


def test_audit_insert_and_query_filters(url: str) -> None:
    entries = [
        _entry(0, "key_admin1", "key.create", "key_1", name="a", limits={"rpm": 3}),
        _entry(1, "key_admin1", "key.update", "key_1", budget={"amount_usd": 2.5, "period": "daily"}),
        _entry(2, "cli", "team.create", "team_1", name="ml"),
        _entry(3, "static", "key.revoke", "key_1"),
        _entry(4, "key_admin2", "keyring.create", None),
        _entry(5, "key_admin2", "model.delete", "m_1", alias="x"),
    ]

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlAuditStore(db.engine)
            await store.write(entries[:3])
            await store.write(entries[3:])
            await store.write([])
            got = await store.query()
            assert [e.request_id for e in got] == [f"req-{m}" for m in (5, 4, 3, 2, 1, 0)]  # newest first
            assert [replace(e, id=None) for e in got] == entries[::-1]
            assert len({e.id for e in got}) == 6
            assert got[-1].at == T0 and got[-1].at.tzinfo is not None and got[-1].at.utcoffset() == timedelta(0)
            assert got[-1].details == {"name": "a", "limits": {"rpm": 3}}

            async def ids(**filters: object) -> list[str | None]:
                return [e.request_id for e in await store.query(**filters)]  # type: ignore[arg-type]

            assert await ids(actor="key_admin1") == ["req-1", "req-0"]
            assert await ids(action="key.") == ["req-3", "req-1", "req-0"]  # a prefix: not keyring.*
            assert await ids(action="key") == ["req-4", "req-3", "req-1", "req-0"]
            assert await ids(action="key.create") == ["req-0"]
            assert await ids(action="%") == [] and await ids(action="k_y.") == []  # wildcards are literal
            assert await ids(object_id="key_1") == ["req-3", "req-1", "req-0"]
            assert await ids(since=T0 + timedelta(minutes=2)) == ["req-5", "req-4", "req-3", "req-2"]
            assert await ids(until=T0 + timedelta(minutes=2)) == ["req-1", "req-0"]
            assert await ids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3),
                             object_id="key_1") == ["req-1"]
            assert await ids(limit=2) == ["req-5", "req-4"]
            none = await store.query(object_id="m_1")
            assert none[0].details == {"alias": "x"} and none[0].client_ip == "10.0.0.1"
            empty = (await store.query(action="keyring."))[0]
            assert empty.details == {} and empty.object_id is None
            async with db.engine.connect() as conn:
                nulls = await conn.scalar(sa.text("SELECT count(*) FROM audit_log WHERE details IS NULL"))
            assert nulls == 2  # no details: SQL NULL

    asyncio.run(body())


def test_audit_log_scrubs_secrets_before_they_reach_the_table(url: str) -> None:
    secrets = ["sk-proj-abcdefghijklmnopqrstuvwxyz012345", "sk-sy-" + "Q" * 43, "AIzaSyA1234567890abcdefghijklmnopqrs",
               "hunter2-password-value", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"]

    async def body() -> None:
        async with Database.create(url) as db:
            log = AuditLog(SqlAuditStore(db.engine), interval=0.05)
            log.start()
            log.record("key_admin", "credential.add", "credential", "cred_1", {
                "name": "main", "api_key": secrets[0], "provider_settings": {"headers": {"Authorization":
                                                                                          "Bearer " + secrets[0]}},
                "note": f"rotated from {secrets[1]}", "list": [secrets[2], {"password": secrets[3]}],
                "key": secrets[1], "jwt": secrets[4], "limits": {"rpm": 5}, "max_tokens": 10,
            }, client_ip="127.0.0.1")
            for _ in range(250):  # the background writer, within 5 s
                if not log.pending:
                    break
                await asyncio.sleep(0.02)
            assert log.pending == 0
            await log.aclose()
            async with db.engine.connect() as conn:
                raw = repr((await conn.execute(sa.text("SELECT * FROM audit_log"))).all())
            for secret in secrets:
                assert secret not in raw
            (entry,) = await SqlAuditStore(db.engine).query()
            assert entry.details["api_key"] == REDACTED and entry.details["key"] == REDACTED
            assert entry.details["note"] == f"rotated from {REDACTED}"
            assert entry.details["list"] == [REDACTED, {"password": REDACTED}]
            assert entry.details["limits"] == {"rpm": 5} and entry.details["max_tokens"] == 10
            assert entry.details["name"] == "main" and entry.client_ip == "127.0.0.1"

    asyncio.run(body())
    assert scrub({"when": T0, "n": None, "ok": True}) == {"when": T0.isoformat(), "n": None, "ok": True}


def test_key_service_principal_carries_owners_limits_budgets_and_team_changes(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            team_store = SqlTeamStore(db.engine)
            # two replicas on one database
            here = KeyService(SqlKeyStore(db.engine), SECRET, refresh_interval=3600, teams=team_store)
            there = KeyService(SqlKeyStore(db.engine), SECRET, refresh_interval=3600, teams=team_store)
            teams_here, teams_there = TeamService(team_store, here), TeamService(team_store, there)
            await here.start()
            await there.start()
            try:
                team = await teams_here.create("research", limits=RateLimits(rpm=100, tpm=10_000),
                                               budget=Budget(500.0, "monthly"))
                with pytest.raises(BadRequestError) as dup:
                    await teams_here.create("research")
                assert dup.value.param == "name" and dup.value.code == "duplicate_name"
                with pytest.raises(BadRequestError) as missing:
                    await here.create("x", team="nope")
                assert missing.value.param == "team" and missing.value.code == "team_not_found"
                new = await here.create("bob", team="research", user_id="bob@example.com",
                                        limits=RateLimits(rpm=10, max_parallel=1),
                                        model_limits={"gpt-4o*": RateLimits(tpm=500)}, budget=Budget(5.0, "daily"))
                assert new.key.team_id == team.id

                p = await here.authenticate(new.secret)
                assert (p.key_id, p.name, p.user_id, p.team_id) == (new.key.id, "bob", "bob@example.com", team.id)
                assert p.limits == RateLimits(rpm=10, max_parallel=1)
                assert p.model_limits == {"gpt-4o*": RateLimits(tpm=500)}
                assert p.budget == Budget(5.0, "daily")
                assert p.team_limits == RateLimits(rpm=100, tpm=10_000) and p.team_budget == Budget(500.0, "monthly")
                assert await there.authenticate(new.secret) == p  # found on a miss, team loaded with it

                # a team changed on one replica reaches the other at its next refresh
                await teams_there.update("research", limits=RateLimits(rpm=1), budget=None)
                assert (await there.authenticate(new.secret)).team_limits == RateLimits(rpm=1)
                assert (await here.authenticate(new.secret)).team_limits == RateLimits(rpm=100, tpm=10_000)
                await here.refresh()
                p = await here.authenticate(new.secret)
                assert p.team_limits == RateLimits(rpm=1) and p.team_budget is None

                # a key moved to a team created elsewhere: the refresh brings both
                other = await teams_there.create("other", budget=Budget(1.0, "total"))
                await there.update(new.key.id, team_id="other", limits=None, budget=None, model_limits={})
                await here.refresh()
                p = await here.authenticate(new.secret)
                assert p.team_id == other.id and p.team_budget == Budget(1.0, "total") and p.team_limits is None
                assert p.limits is None and p.budget is None and p.model_limits == {}
                with pytest.raises(BadRequestError) as in_use:
                    await teams_here.delete("other")
                assert in_use.value.code == "team_has_keys" and "1 key" in in_use.value.message
            finally:
                await here.aclose()
                await there.aclose()

    asyncio.run(body())


def _columns(conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def _tables(conn: Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


def _downgrade(conn: Connection, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = conn
    command.downgrade(config, revision)


def test_migration_0005_keeps_existing_keys_and_downgrades(empty_url: str) -> None:
    async def body() -> None:
        await upgrade(empty_url, "0004")
        async with Database.create(empty_url) as db:
            async with db.engine.begin() as conn:
                await conn.execute(sa.text(
                    "INSERT INTO api_keys (id, name, prefix, key_hash, created_at, updated_at, use_count, active, "
                    "is_admin) VALUES ('key_old', 'old', 'sy-old', 'h-old', :at, :at, 0, true, false)"
                ), {"at": T0.replace(tzinfo=None)})
            await upgrade(db.engine, "0005")
            old = await SqlKeyStore(db.engine).get("key_old")
            assert old is not None and old.name == "old" and old.limits is None and old.team_id is None
            await SqlKeyStore(db.engine).update(replace(old, user_id="u", limits=RateLimits(rpm=1)), T0)
            await SqlTeamStore(db.engine).add(make_team(1))
            await SqlAuditStore(db.engine).write([_entry(0, "cli", "team.create", "team_1")])

            async with db.engine.begin() as conn:
                await conn.run_sync(_downgrade, "0004")
            async with db.engine.connect() as conn:
                assert "user_id" not in await conn.run_sync(_columns, "api_keys")
                assert not {"teams", "audit_log"} & await conn.run_sync(_tables)
                assert await conn.scalar(sa.text("SELECT name FROM api_keys WHERE id = 'key_old'")) == "old"
            await upgrade(db.engine, "0005")
            async with db.engine.connect() as conn:
                assert {"user_id", "team_id", "limits", "model_limits", "budget_usd", "budget_period"} <= (
                    await conn.run_sync(_columns, "api_keys"))

    asyncio.run(body())
