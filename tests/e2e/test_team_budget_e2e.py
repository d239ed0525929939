"""A team's cap across real processes: two `faas up` replicas sharing PostgreSQL, NATS and Redis;
a team made on one and an `fk-` key of that team, used with the official `openai` client on
both: the team's requests-per-minute cap holds across the replicas and the refusal is a 429 that
names the team."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import TEST_SECRET, auth
from tests.e2e.test_api_keys_e2e import HI, database, sdk
from tests.support.faas_process import running_faas

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

__all__ = ["database"]  # the fixture, shared with the API keys e2e


def test_a_teams_key_hits_the_teams_cap_on_every_replica(
    tmp_path: Path, database: str, nats_url: str, redis_url: str
) -> None:
    tenant = f"e2e{uuid.uuid4().hex[:10]}"  # fresh counters in the shared Redis
    shared = {
        "FAAS_SERVICES": "gateway",
        "FAAS_JWT_SECRET": TEST_SECRET,
        "FAAS_DATABASE_URL": database,
        "FAAS_NATS_URL": nats_url,
        "FAAS_REDIS_URL": redis_url,
        "FAAS_NATS_PREFIX": f"teame2e{uuid.uuid4().hex[:8]}",
    }
    admin = auth(tenant, "root", scopes=["admin"])
    with (
        running_faas(tmp_path / "one", env=shared) as one,
        running_faas(tmp_path / "two", env=shared) as two,
    ):
        team = httpx.post(
            f"{one.url}/api/v1/teams",
            json={"name": "research", "limits": {"rpm": 3}},
            headers=admin,
        )
        assert team.status_code == 201, team.text
        created = httpx.post(
            f"{one.url}/api/v1/keys", json={"name": "ci", "team": "research"}, headers=admin
        )
        assert created.status_code == 201, created.text
        key = created.json()["data"]["key"]
        assert key.startswith("fk-")
        clients = [sdk(one.url, key), sdk(two.url, key)]
        if time.time() % 60 > 50:  # all the calls inside one rate window
            time.sleep(61 - time.time() % 60)
        for n in range(3):
            reply = clients[n % 2].chat.completions.create(model="chat-default", messages=HI)
            assert reply.choices[0].message.content
        for client in clients:
            with pytest.raises(openai.RateLimitError, match="team 'research' rpm exceeded"):
                client.chat.completions.create(model="chat-default", messages=HI)
        # Another caller of the tenant, outside the team, is still served.
        other = httpx.post(
            f"{two.url}/v1/chat/completions",
            json={"model": "chat-default", "messages": HI},
            headers=auth(tenant, "ann"),
        )
        assert other.status_code == 200, other.text
