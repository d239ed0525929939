"""api_keys: opaque API keys (`fk-…`) per tenant, stored as a SHA-256 hash and a display prefix

Revision ID: 0013_api_keys
Revises: 0001_jobs
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_api_keys"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("team", sa.String(128)),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("models", sa.JSON),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("budget_usd", sa.Float),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_tenant", "api_keys")
    op.drop_table("api_keys")
