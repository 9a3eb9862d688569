"""The whole gateway on the real PostgreSQL: keys, revocation and usage rows land there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest

from tests.conftest import UPSTREAM_KEY, SdkFactory, reset_pg_schema
from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.harness import run_server


def test_gateway_on_postgresql(sdk: SdkFactory, tmp_path: Path, pg_url: str, fake_openai: FakeOpenAI) -> None:
    asyncio.run(reset_pg_schema(pg_url))
    with run_server(
        tmp_path, database_url=pg_url, secret_key="s" * 40,
        providers={"fake": {"type": "openai", "base_url": fake_openai.base_url, "api_key": UPSTREAM_KEY}},
        models=[{"alias": "m", "provider": "fake", "model": "gpt-4o-mini"}],
    ) as server:
        assert not (tmp_path / "secret.key").exists()  # the configured secret is used, nothing generated
        with server.http(server.admin_key) as http:
            made = http.post("/admin/keys", json={"name": "pg-user", "models": ["m"]}).json()
        user = sdk(server.v1, made["key"])
        assert user.chat.completions.create(model="m", messages=HELLO).choices[0].message.content
        chunks = list(user.chat.completions.create(model="m", messages=HELLO, stream=True))
        assert chunks
        rows = server.usage_rows(wait_for=2)
        assert [(r["key_id"], r["model"], r["streamed"], r["estimated"]) for r in rows] == [
            (made["id"], "m", False, False), (made["id"], "m", True, False)]
        with server.http(server.admin_key) as http:
            assert http.delete(f"/admin/keys/{made['id']}").status_code == 200
        with pytest.raises(openai.AuthenticationError):
            user.models.list()
