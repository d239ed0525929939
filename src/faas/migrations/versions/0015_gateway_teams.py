"""gateway_teams: teams inside a tenant, with their members, caps and model rules

Revision ID: 0015_gateway_teams
Revises: 0013_api_keys
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_gateway_teams"
down_revision = "0013_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_teams",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("members", sa.JSON, nullable=False),
        sa.Column("limits", sa.JSON, nullable=False),
        sa.Column("allowed_models", sa.JSON),
        sa.Column("denied_models", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_gateway_teams_tenant_name"),
    )


def downgrade() -> None:
    op.drop_table("gateway_teams")
