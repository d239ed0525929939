"""llmops: daily cost rollup per agent (cost analysis no longer scans the operations log)

Revision ID: 0010_llmops_agent_rollup
Revises: 0007_llmops
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_llmops_agent_rollup"
down_revision = "0007_llmops"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "llmops_rollups_agent_daily",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("agent", sa.String(128), nullable=False),  # "" = no agent and no user
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("total_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", "agent", name="pk_llmops_rollups_agent_daily"),
    )
    # Operations logged before this revision: fold them in once.
    agent = "COALESCE(agent_id, user_id, '')"
    if op.get_bind().dialect.name == "postgresql":
        day = "date_trunc('day', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    else:  # SQLite keeps 'YYYY-MM-DD HH:MM:SS[.ffffff]' text
        day = "substr(occurred_at, 1, 10) || ' 00:00:00.000000'"
    op.execute(
        "INSERT INTO llmops_rollups_agent_daily "
        "(tenant_id, day, agent, count, total_tokens, cost_usd) "
        f"SELECT tenant_id, {day}, {agent}, COUNT(*), SUM(total_tokens), SUM(cost_usd) "
        f"FROM llmops_operations GROUP BY tenant_id, {day}, {agent}"
    )


def downgrade() -> None:
    op.drop_table("llmops_rollups_agent_daily")
