"""gateway: tenants' own provider keys (bring your own key), sealed with FAAS_SECRETS_KEY

Revision ID: 0016_gateway_provider_keys
Revises: 0015_gateway_teams
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_gateway_provider_keys"
down_revision = "0015_gateway_teams"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_provider_keys",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(160), primary_key=True),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("suffix", sa.String(8), nullable=False),
        sa.Column("created_by", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_provider_keys")
