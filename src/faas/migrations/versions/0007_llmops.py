"""llmops: append-only operations log and hourly rollups (with latency histogram buckets)

Revision ID: 0007_llmops
Revises: 0005_agents
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_llmops"
down_revision = "0005_agents"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# Must match faas.services.llmops_service.tables.LATENCY_BOUNDS_MS (18 bounds → 19 buckets).
BUCKETS = 19


def upgrade() -> None:
    op.create_table(
        "llmops_operations",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("deployment", sa.String(128)),
        sa.Column("provider", sa.String(64)),
        sa.Column("upstream_model", sa.String(128)),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("total_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("cached", sa.Boolean, nullable=False),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("agent_id", sa.String(128)),
        sa.Column("correlation_id", sa.String(128)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("metadata", sa.JSON),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_llmops_operations"),
    )
    op.create_index(
        "ix_llmops_operations_tenant_time", "llmops_operations", ["tenant_id", "occurred_at"]
    )
    op.create_table(
        "llmops_rollups_hourly",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("hour", TS, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("error_count", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("total_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("latency_sum_ms", sa.Float, nullable=False),
        *(
            sa.Column(f"lat_b{i:02d}", sa.Integer, nullable=False, server_default="0")
            for i in range(BUCKETS)
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "hour", "model", "operation", "status", name="pk_llmops_rollups_hourly"
        ),
    )


def downgrade() -> None:
    op.drop_table("llmops_rollups_hourly")
    op.drop_index("ix_llmops_operations_tenant_time", table_name="llmops_operations")
    op.drop_table("llmops_operations")
