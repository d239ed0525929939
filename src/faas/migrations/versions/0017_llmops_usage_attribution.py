"""llmops: spend attribution on operations (the API key, the team and the request's tags)

Revision ID: 0017_llmops_attribution
Revises: 0016_llmops_traces
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_llmops_attribution"
down_revision = "0016_llmops_traces"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("llmops_operations", sa.Column("key_id", sa.String(64)))
    op.add_column("llmops_operations", sa.Column("team", sa.String(128)))
    op.add_column("llmops_operations", sa.Column("tags", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("llmops_operations") as batch:
        batch.drop_column("tags")
        batch.drop_column("team")
        batch.drop_column("key_id")
