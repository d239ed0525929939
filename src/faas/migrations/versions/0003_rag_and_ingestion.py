"""rag collections, documents and chunks; ingestion files

Revision ID: 0003_rag_ingestion
Revises: 0002_gateway_limits
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_rag_ingestion"
down_revision = "0002_gateway_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rag_collections",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_rag_collections_tenant_name"),
    )
    op.create_table(
        "rag_documents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column(
            "collection_id",
            sa.String(64),
            sa.ForeignKey("rag_collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("token_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "tenant_id", "collection_id", "content_hash", name="uq_rag_documents_content"
        ),
    )
    op.create_index("ix_rag_documents_tenant", "rag_documents", ["tenant_id", "collection_id"])
    op.create_table(
        "rag_chunks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column(
            "document_id",
            sa.String(64),
            sa.ForeignKey("rag_documents.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("token_count", sa.Integer, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("embedding_model", sa.String(128), nullable=False),
    )
    op.create_index("ix_rag_chunks_document", "rag_chunks", ["document_id", "ordinal"])
    op.create_table(
        "ingestion_files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("job_id", sa.String(64)),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("source_url", sa.Text),
        sa.Column("content_type", sa.String(128)),
        sa.Column("format", sa.String(16)),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("collection", sa.String(128), nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("auto_ingest", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("pages", sa.Integer),
        sa.Column("chars", sa.Integer),
        sa.Column("chunks", sa.Integer),
        sa.Column("document_id", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ingestion_files_tenant", "ingestion_files", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_table("ingestion_files")
    op.drop_table("rag_chunks")
    op.drop_table("rag_documents")
    op.drop_table("rag_collections")
