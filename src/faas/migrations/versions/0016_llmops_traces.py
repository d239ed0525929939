"""llmops_trace_spans: spans LLMOps receives over OTLP/HTTP, per tenant

Revision ID: 0016_llmops_traces
Revises: 0015_llmops_alerts
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_llmops_traces"
down_revision = "0015_llmops_alerts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "llmops_trace_spans",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column("parent_id", sa.String(16)),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("service", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(128)),
        sa.Column("model", sa.String(128)),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
    )
    op.create_index(
        "ix_llmops_trace_spans_tenant_time", "llmops_trace_spans", ["tenant_id", "started_at"]
    )
    op.create_index(
        "ix_llmops_trace_spans_tenant_session", "llmops_trace_spans", ["tenant_id", "session_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_llmops_trace_spans_tenant_session", table_name="llmops_trace_spans")
    op.drop_index("ix_llmops_trace_spans_tenant_time", table_name="llmops_trace_spans")
    op.drop_table("llmops_trace_spans")
