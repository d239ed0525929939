"""API keys across real processes: two `faas up` replicas sharing PostgreSQL and NATS, a key
made with `faas keys create` on one, used with the official `openai` client over HTTP on both,
and revoked on the other: every replica refuses it at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import openai
import pytest

from faas.backends.vectors.pgvector import asyncpg_dsn
from tests.conftest import TEST_SECRET, auth
from tests.e2e.test_faas_up import faas
from tests.support.faas_process import running_faas
from tests.support.pgvector import with_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    name = f"faas_keys_e2e_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(postgres_url, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def test_a_cli_made_key_works_on_every_replica_until_revoked_on_one(
    tmp_path: Path, database: str, nats_url: str
) -> None:
    shared = {
        "FAAS_SERVICES": "gateway",
        "FAAS_JWT_SECRET": TEST_SECRET,
        "FAAS_DATABASE_URL": database,
        "FAAS_NATS_URL": nats_url,
        "FAAS_NATS_PREFIX": f"keyse2e{uuid.uuid4().hex[:8]}",
    }
    # One after the other: the first applies the migrations to the fresh database.
    with (
        running_faas(tmp_path / "one", env=shared) as one,
        running_faas(tmp_path / "two", env=shared) as two,
    ):
        key = faas(
            "keys", "create", "--tenant", "acme", "--name", "ci", "--model", "chat-default",
            "--url", one.url, env=one.env,
        )  # fmt: skip
        assert key.startswith("fk-") and "\n" not in key
        clients = [sdk(one.url, key), sdk(two.url, key)]
        for client in clients:
            assert [m.id for m in client.models.list().data] == ["chat-default"]
            reply = client.chat.completions.create(model="chat-default", messages=HI)
            assert reply.choices[0].message.content
            with pytest.raises(openai.PermissionDeniedError, match="not allowed for API key"):
                client.embeddings.create(model="embed-default", input="x")

        admin = auth("acme", "root", scopes=["admin"])
        listed = httpx.get(f"{two.url}/api/v1/keys", headers=admin).json()["data"]["items"]
        assert [k["name"] for k in listed] == ["ci"] and key not in str(listed)
        revoked = httpx.delete(f"{two.url}/api/v1/keys/{listed[0]['id']}", headers=admin)
        assert revoked.status_code == 200, revoked.text
        started = time.monotonic()
        for client in clients:
            while True:
                try:
                    client.models.list()
                except openai.AuthenticationError as exc:
                    assert "invalid or revoked API key" in str(exc)
                    break
                assert time.monotonic() - started < 5, "a replica kept accepting a revoked key"
                time.sleep(0.01)
