"""The `mcp` SDK's client against a real `faas up` (offline models): tools listed and called
over streamable HTTP with a token from `faas token`, and the process still stops cleanly."""

from __future__ import annotations

from pathlib import Path

import httpx2
import orjson
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.test_faas_up import faas
from tests.support.faas_process import running_faas

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def test_mcp_client_lists_and_calls_faas_tools_on_faas_up(tmp_path: Path) -> None:
    with running_faas(tmp_path) as up:
        token = faas("token", "--tenant", "acme", "--user", "ann", env=up.env)
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            streamable_http_client(f"{up.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            names = {t.name for t in (await session.list_tools()).tools}
            assert {"rag_search", "prompt_render", "cache_get", "cache_set"} <= names
            stored = await session.call_tool("cache_set", {"key": "e2e", "value": [1, 2]})
            assert not stored.is_error
            got = await session.call_tool("cache_get", {"key": "e2e"})
            block = got.content[0]
            assert block.type == "text" and orjson.loads(block.text)["value"] == [1, 2]
            found = await session.call_tool("rag_search", {"query": "anything"})
            assert not found.is_error
        async with httpx2.AsyncClient() as anonymous:
            refused = await anonymous.post(
                f"{up.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            )
            assert refused.status_code == 401
