"""trace context: the W3C `traceparent` a task and a session continue, and its trace id

Revision ID: 0006_trace_context
Revises: 0005_routing_record
Create Date: 2026-12-03 12:00:00

`traceparent` is the parent of the server's spans for the row (docs/operations.md, Tracing): the submit span
when the server traces, else the client's own `traceparent`, else NULL. `trace_id` is derived from it by the
database (a stored generated column), so the API returns it as a column and nothing writes it twice. Both
are nullable and NULL for every existing row, so adding them rewrites no row.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_trace_context"
down_revision: str | None = "0005_routing_record"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("tasks", "collab_sessions")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("traceparent", sa.Text(), nullable=True))
        op.add_column(
            table,
            sa.Column(
                "trace_id", sa.Text(), sa.Computed("substr(traceparent, 4, 32)", persisted=True), nullable=True
            ),
        )


def downgrade() -> None:
    for table in _TABLES:
        op.drop_column(table, "trace_id")
        op.drop_column(table, "traceparent")
