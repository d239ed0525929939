"""prompt templates, versions and labels

Revision ID: 0004_prompts
Revises: 0003_rag_ingestion
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_prompts"
down_revision = "0003_rag_ingestion"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prompt_templates",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_prompt_templates_tenant_name"),
    )
    op.create_table(
        "prompt_versions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column(
            "template_id",
            sa.String(64),
            sa.ForeignKey("prompt_templates.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("variables_schema", sa.JSON, nullable=True),
        sa.Column("created_by", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("template_id", "version", name="uq_prompt_versions_template_version"),
    )
    op.create_index("ix_prompt_versions_tenant", "prompt_versions", ["tenant_id", "template_id"])
    op.create_table(
        "prompt_labels",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column(
            "template_id",
            sa.String(64),
            sa.ForeignKey("prompt_templates.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("prompt_labels")
    op.drop_table("prompt_versions")
    op.drop_table("prompt_templates")
