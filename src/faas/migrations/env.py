"""Alembic environment: runs on the connection handed in by faas.shared.database."""

from __future__ import annotations

from alembic import context

from faas.shared.database import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `faas migrate` (it provides the connection)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
