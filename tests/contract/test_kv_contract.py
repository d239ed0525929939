"""One contract for every key/value store: the same tests run against memory and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from faas.backends.kv import KeyValueStore, MemoryKeyValueStore
from faas.backends.kv.redis import RedisKeyValueStore


@pytest.fixture(params=["memory", "redis"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[KeyValueStore]:
    if request.param == "memory":
        store: KeyValueStore = MemoryKeyValueStore()
    else:
        store = RedisKeyValueStore.with_url(request.getfixturevalue("redis_url"))
    yield store
    await store.close()


@pytest.fixture
def ns() -> str:
    """A fresh key prefix so tests never see each other's keys on a shared Redis."""
    return f"test-{uuid.uuid4().hex[:12]}"


async def test_get_of_missing_key_is_none(kv: KeyValueStore, ns: str) -> None:
    assert await kv.get(f"{ns}:missing") is None
    assert await kv.get_entry(f"{ns}:missing") is None


async def test_set_then_get_returns_the_bytes(kv: KeyValueStore, ns: str) -> None:
    await kv.set(f"{ns}:a", b"\x00value\xff")
    assert await kv.get(f"{ns}:a") == b"\x00value\xff"
    entry = await kv.get_entry(f"{ns}:a")
    assert entry is not None and entry.value == b"\x00value\xff"
    assert entry.ttl_remaining_s is None


async def test_ttl_is_reported_and_enforced(kv: KeyValueStore, ns: str) -> None:
    await kv.set(f"{ns}:t", b"v", ttl_s=0.3)
    entry = await kv.get_entry(f"{ns}:t")
    assert entry is not None and entry.ttl_remaining_s is not None
    assert 0 < entry.ttl_remaining_s <= 0.3
    await asyncio.sleep(0.45)
    assert await kv.get(f"{ns}:t") is None
    assert await kv.scan(f"{ns}:*") == []


async def test_set_if_absent_only_stores_once(kv: KeyValueStore, ns: str) -> None:
    assert await kv.set_if_absent(f"{ns}:once", b"1") is True
    assert await kv.set_if_absent(f"{ns}:once", b"2") is False
    assert await kv.get(f"{ns}:once") == b"1"


async def test_mget_and_mset_keep_order(kv: KeyValueStore, ns: str) -> None:
    await kv.mset({f"{ns}:1": b"one", f"{ns}:2": b"two"}, ttl_s=60)
    assert await kv.mget([f"{ns}:2", f"{ns}:none", f"{ns}:1"]) == [b"two", None, b"one"]
    entry = await kv.get_entry(f"{ns}:1")
    assert entry is not None and entry.ttl_remaining_s is not None and entry.ttl_remaining_s > 50


async def test_delete_counts_existing_keys(kv: KeyValueStore, ns: str) -> None:
    await kv.set(f"{ns}:a", b"1")
    await kv.set(f"{ns}:b", b"2")
    assert await kv.delete(f"{ns}:a", f"{ns}:b", f"{ns}:c") == 2
    assert await kv.get(f"{ns}:a") is None


async def test_scan_and_delete_matching_use_glob_patterns(kv: KeyValueStore, ns: str) -> None:
    for key in ("user:1", "user:2", "order:1", "user-x"):
        await kv.set(f"{ns}:{key}", b"v")
    assert sorted(await kv.scan(f"{ns}:user:*")) == [f"{ns}:user:1", f"{ns}:user:2"]
    assert sorted(await kv.scan(f"{ns}:user?1")) == [f"{ns}:user:1"]
    assert await kv.delete_matching(f"{ns}:user*") == 3
    assert await kv.scan(f"{ns}:*") == [f"{ns}:order:1"]


async def test_usage_counts_keys_and_value_bytes(kv: KeyValueStore, ns: str) -> None:
    await kv.set(f"{ns}:a", b"12345")
    await kv.set(f"{ns}:b", b"123")
    usage = await kv.usage(f"{ns}:*")
    assert (usage.keys, usage.bytes) == (2, 8)


async def test_usage_counts_values_only_not_sets(kv: KeyValueStore, ns: str) -> None:
    """A set beside the values (the gateway's semantic-cache index) is neither counted nor an
    error (Redis refuses STRLEN of a set)."""
    await kv.set(f"{ns}:a", b"12345")
    await kv.sadd(f"{ns}:index", "a", "b")
    usage = await kv.usage(f"{ns}:*")
    assert (usage.keys, usage.bytes) == (1, 5)


async def test_incr_counts_and_reads_back_as_decimal_bytes(kv: KeyValueStore, ns: str) -> None:
    assert await kv.incr(f"{ns}:c") == 1
    assert await kv.incr(f"{ns}:c", 41) == 42
    assert await kv.get(f"{ns}:c") == b"42"


async def test_sets_add_list_and_remove_members(kv: KeyValueStore, ns: str) -> None:
    await kv.sadd(f"{ns}:s", "a", "b")
    await kv.sadd(f"{ns}:s", "b", "c")
    assert await kv.smembers(f"{ns}:s") == {"a", "b", "c"}
    await kv.srem(f"{ns}:s", "a", "c")
    assert await kv.smembers(f"{ns}:s") == {"b"}
    await kv.srem(f"{ns}:s", "b")
    assert await kv.smembers(f"{ns}:s") == set()


async def test_ping_answers(kv: KeyValueStore) -> None:
    assert await kv.ping() is True


async def test_memory_store_evicts_least_recently_used_by_entries() -> None:
    store = MemoryKeyValueStore(max_entries=2)
    await store.set("a", b"1")
    await store.set("b", b"2")
    await store.get("a")  # a is now the most recently used
    await store.set("c", b"3")
    assert await store.get("b") is None
    assert await store.get("a") == b"1"
    assert store.evictions == 1


async def test_memory_store_evicts_to_stay_within_bytes() -> None:
    store = MemoryKeyValueStore(max_bytes=100)
    for i in range(10):
        await store.set(f"k{i}", b"x" * 30)
    assert store.bytes_used <= 100
    assert await store.get("k9") == b"x" * 30
    assert await store.get("k0") is None


async def test_memory_store_byte_accounting_returns_to_zero() -> None:
    store = MemoryKeyValueStore()
    await store.set("a", b"x" * 10)
    await store.set("a", b"x" * 20)
    await store.sadd("s", "m1")
    await store.delete("a", "s")
    assert store.bytes_used == 0
