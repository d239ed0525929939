"""llmops: hourly rollups keyed without status (error_count already counts the errors)

Half the rollup rows wherever an hour has both successes and errors, which is what a metrics
query over a month aggregates.

Revision ID: 0011_llmops_rollup_key
Revises: 0010_llmops_agent_rollup
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_llmops_rollup_key"
down_revision = "0010_llmops_agent_rollup"
branch_labels = None
depends_on = None

TABLE = "llmops_rollups_hourly"
BUCKETS = 19  # faas.services.llmops_service.tables.BUCKETS
SUMS = (
    "count",
    "error_count",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "latency_sum_ms",
    *(f"lat_b{i:02d}" for i in range(BUCKETS)),
)


def _create(name: str, key: tuple[str, ...]) -> None:
    op.create_table(
        name,
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        *([sa.Column("status", sa.String(32), nullable=False)] if "status" in key else []),
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
        sa.PrimaryKeyConstraint(*key, name=f"pk_{name}"),
    )


def _swap(key: tuple[str, ...], select_key: str) -> None:
    """Rebuild the table under `key`, folding (or splitting) the rows, keep its name."""
    new = f"{TABLE}_new"
    _create(new, key)
    columns = ", ".join((*key, *SUMS))
    sums = ", ".join(f"SUM({c})" for c in SUMS)
    group = "tenant_id, hour, model, operation"
    op.execute(
        f"INSERT INTO {new} ({columns}) SELECT {select_key}, {sums} FROM {TABLE} GROUP BY {group}"
    )
    op.drop_table(TABLE)
    op.rename_table(new, TABLE)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {TABLE} RENAME CONSTRAINT pk_{new} TO pk_{TABLE}")


def upgrade() -> None:
    _swap(("tenant_id", "hour", "model", "operation"), "tenant_id, hour, model, operation")


def downgrade() -> None:
    # Lossy in one respect: every folded row comes back as status 'ok' (its error_count kept).
    _swap(
        ("tenant_id", "hour", "model", "operation", "status"),
        "tenant_id, hour, model, operation, 'ok'",
    )
