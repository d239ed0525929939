"""prompt generator: generations (agents and tools made from prompts), feedback, permissions

Revision ID: 0008_prompt_generator
Revises: 0005_agents
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_prompt_generator"
down_revision = "0005_agents"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "prompt_generations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("resource_id", sa.String(128), nullable=False),
        sa.Column("owner_user_id", sa.String(128)),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index(
        "ix_prompt_generations_resource",
        "prompt_generations",
        ["tenant_id", "kind", "resource_id"],
    )
    op.create_table(
        "prompt_feedback",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("generation_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("resource_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("rating", sa.Integer, nullable=False),
        sa.Column("feedback", sa.Text),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index(
        "ix_prompt_feedback_resource", "prompt_feedback", ["tenant_id", "kind", "resource_id"]
    )
    op.create_table(
        "prompt_permissions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("resource_type", sa.String(16), nullable=False),
        sa.Column("resource_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("permission", sa.String(16), nullable=False),
        sa.Column("granted_by", sa.String(128)),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint(
            "tenant_id",
            "resource_type",
            "resource_id",
            "user_id",
            "permission",
            name="uq_prompt_permissions_grant",
        ),
    )


def downgrade() -> None:
    op.drop_index("ix_prompt_feedback_resource", table_name="prompt_feedback")
    op.drop_index("ix_prompt_generations_resource", table_name="prompt_generations")
    for table in ("prompt_permissions", "prompt_feedback", "prompt_generations"):
        op.drop_table(table)
