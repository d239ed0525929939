"""gateway_tenant_limits: per-tenant overrides of the gateway's rate limits and budgets

Revision ID: 0002_gateway_limits
Revises: 0001_jobs
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_gateway_limits"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_tenant_limits",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("limits", sa.JSON, nullable=False),
        sa.Column("updated_by", sa.String(128)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_tenant_limits")
