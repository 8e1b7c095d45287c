"""drain requested: a drain survives the agent's socket and its replica until the agent says goodbye

Revision ID: 0007_drain_requested
Revises: 0006_trace_context
Create Date: 2026-12-04 09:00:00

A constant default: adding the column rewrites no row. Agents draining at upgrade keep their status; the flag is
set for them so their drain survives a reconnect as a new one does.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_drain_requested"
down_revision: str | None = "0006_trace_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "agents", sa.Column("drain_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )
    op.execute("UPDATE agents SET drain_requested = true WHERE status = 'draining'")


def downgrade() -> None:
    op.drop_column("agents", "drain_requested")
