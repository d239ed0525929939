"""jobs: long-running work (ingestion, training, agent tasks) tracked per tenant

Revision ID: 0001_jobs
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_jobs"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(64)),
        sa.Column("progress", sa.Float, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("callback_url", sa.Text),
        sa.Column("correlation_id", sa.String(128)),
        sa.Column("traceparent", sa.String(128)),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_jobs_tenant_status", "jobs", ["tenant_id", "status", "created_at"])
    op.create_index("ix_jobs_tenant_kind", "jobs", ["tenant_id", "kind", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_kind", "jobs")
    op.drop_index("ix_jobs_tenant_status", "jobs")
    op.drop_table("jobs")
