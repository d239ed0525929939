"""agents: the MCP servers a tenant registers (their headers sealed)

Revision ID: 0014_agent_mcp_servers
Revises: 0009_agent_origin
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_agent_mcp_servers"
down_revision = "0009_agent_origin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_mcp_servers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("sealed_headers", sa.LargeBinary),
        sa.Column("header_names", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_agent_mcp_servers_tenant_name"),
    )


def downgrade() -> None:
    op.drop_table("agent_mcp_servers")
