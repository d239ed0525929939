"""FAAS_VECTOR_URL chooses RAG's vector store on its own; `vector_store_problem` (for `faas
doctor`) says in one line why a PostgreSQL cannot hold the vectors."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from faas.backends.vectors import (
    SqliteVectorIndex,
    build_vector_index,
    vector_store_problem,
    vector_url,
)
from faas.backends.vectors.pgvector import PgVectorIndex
from faas.shared.config import ConfigError, Settings
from tests.support.pgvector import fresh_database

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/faas"


def test_sqlite_names_the_data_dirs_vectors_file_next_to_a_postgresql_database(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(database_url=PG, vector_url="sqlite")
    assert vector_url(settings) == f"sqlite:///{settings.data_dir / 'vectors.db'}"
    index = build_vector_index(settings)
    assert isinstance(index, SqliteVectorIndex)
    assert index.path == settings.data_dir / "vectors.db"


def test_a_sqlite_url_names_its_file(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(database_url=PG, vector_url=f"sqlite:///{tmp_path}/v.db")
    index = build_vector_index(settings)
    assert isinstance(index, SqliteVectorIndex) and index.path == tmp_path / "v.db"


def test_unset_follows_the_database(make_settings: Callable[..., Settings]) -> None:
    assert isinstance(build_vector_index(make_settings(database_url=PG)), PgVectorIndex)
    assert isinstance(build_vector_index(make_settings()), SqliteVectorIndex)


def test_anything_else_is_refused_naming_the_spellings(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ConfigError, match=r"FAAS_VECTOR_URL='redis://x'.*'sqlite'"):
        vector_url(make_settings(vector_url="redis://x"))


async def test_sqlite_has_no_problem(make_settings: Callable[..., Settings]) -> None:
    assert await vector_store_problem(make_settings(database_url=PG, vector_url="sqlite")) is None


async def test_postgresql_without_pgvector_is_a_problem_with_the_way_out(
    postgres_url: str, make_settings: Callable[..., Settings]
) -> None:
    async with fresh_database(postgres_url, prefix=f"faas_vec_{uuid.uuid4().hex[:4]}") as url:
        problem = await vector_store_problem(make_settings(database_url=url))
    assert problem is not None
    assert "has no pgvector extension" in problem
    assert "FAAS_VECTOR_URL=sqlite" in problem and "pgvector/pgvector" in problem


async def test_an_unreachable_postgresql_is_a_problem(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(vector_url="postgresql://postgres@127.0.0.1:1/x")
    problem = await vector_store_problem(settings)
    assert problem is not None and "is unreachable" in problem
