"""rag: the embedding model and dimension each collection was indexed with

A query embedded by another model than a collection's documents ranks noise (hash vectors next
to MiniLM queries scored 0.003 instead of 0.43), so each collection records its model; existing
collections take the model and dimension of their chunks.

Revision ID: 0012_rag_embedding
Revises: 0003_rag_ingestion
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_rag_embedding"
down_revision = "0003_rag_ingestion"
branch_labels = None
depends_on = None

_FIRST_CHUNK = (
    "FROM rag_chunks c JOIN rag_documents d ON d.id = c.document_id "
    "WHERE d.collection_id = rag_collections.id ORDER BY c.id LIMIT 1"
)


def upgrade() -> None:
    with op.batch_alter_table("rag_collections") as batch:
        batch.add_column(sa.Column("embedding_model", sa.String(256), nullable=True))
        batch.add_column(sa.Column("embedding_dimensions", sa.Integer, nullable=True))
    op.execute(
        f"UPDATE rag_collections SET embedding_model = (SELECT c.embedding_model {_FIRST_CHUNK}), "
        f"embedding_dimensions = (SELECT length(c.embedding) / 4 {_FIRST_CHUNK})"
    )


def downgrade() -> None:
    with op.batch_alter_table("rag_collections") as batch:
        batch.drop_column("embedding_dimensions")
        batch.drop_column("embedding_model")
