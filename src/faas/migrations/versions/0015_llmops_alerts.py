"""llmops_alerts: the gateway's budget and spend-anomaly alerts, per tenant

Revision ID: 0015_llmops_alerts
Revises: 0011_llmops_rollup_key
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_llmops_alerts"
down_revision = "0011_llmops_rollup_key"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "llmops_alerts",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("level", sa.String(32), nullable=False),
        sa.Column("budget", sa.String(16)),
        sa.Column("window", sa.String(32), nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("limit_usd", sa.Float, nullable=False),
        sa.Column("spent_usd", sa.Float, nullable=False),
        sa.Column("baseline_usd", sa.Float),
        sa.Column("message", sa.String(512), nullable=False),
    )
    op.create_index("ix_llmops_alerts_tenant_time", "llmops_alerts", ["tenant_id", "occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_llmops_alerts_tenant_time", table_name="llmops_alerts")
    op.drop_table("llmops_alerts")
