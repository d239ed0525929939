"""agents and agent tools: origin (the Prompt Generator marks what it made), tools' creator

Revision ID: 0009_agent_origin
Revises: 0005_agents
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_agent_origin"
down_revision = "0005_agents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable): SQLite does it in place, no table rebuild that would fire
    # the ON DELETE CASCADE of runs, sessions and memories.
    op.add_column("agents", sa.Column("origin", sa.String(32)))
    op.add_column("agent_tools", sa.Column("origin", sa.String(32)))
    op.add_column("agent_tools", sa.Column("created_by", sa.String(128)))


def downgrade() -> None:
    # ALTER TABLE DROP COLUMN (SQLite 3.35+), again without a rebuild.
    op.drop_column("agent_tools", "created_by")
    op.drop_column("agent_tools", "origin")
    op.drop_column("agents", "origin")
