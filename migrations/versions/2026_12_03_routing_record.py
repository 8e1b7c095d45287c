"""routing record: lapses count against an agent, quarantine, task types, minimum versions, fallback models

Revision ID: 0005_routing_record
Revises: 0004_a2a_agents
Create Date: 2026-12-03 09:00:00

Every new column is nullable or has a constant default, so adding them rewrites no row. `agents.status` admits
`quarantined`, and no longer `registering` (never written by any version) (an agent whose leases lapsed too often in a row: routing skips it until `quarantined_until`).
`agents.task_types` is NULL for "any type" (every agent registered before this revision). The values of the
status check are written out here, not imported: a migration states the schema as it was at its revision.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_routing_record"
down_revision: str | None = "0004_a2a_agents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = ("registering", "active", "draining", "unhealthy", "offline", "error")
# `registering` goes: registration is one transaction, so no row ever held it (docs/decisions.md).
_AFTER = ("active", "draining", "unhealthy", "offline", "error", "quarantined")


def _status_check(statuses: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_agents_status"), "agents", type_="check")
    values = ", ".join(f"'{status}'" for status in statuses)
    op.create_check_constraint(op.f("ck_agents_status"), "agents", f"status IN ({values})")


def upgrade() -> None:
    op.add_column("agents", sa.Column("task_types", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column(
        "agents", sa.Column("consecutive_lapses", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("agents", sa.Column("quarantined_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("agents", sa.Column("last_health_check_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("tasks", sa.Column("min_versions", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("tasks", sa.Column("fallback_models", postgresql.ARRAY(sa.Text()), nullable=True))
    _status_check(_AFTER)


def downgrade() -> None:
    # A quarantined agent goes back to active: the older schema has no such status.
    op.execute("UPDATE agents SET status = 'active' WHERE status = 'quarantined'")
    _status_check(_BEFORE)
    op.drop_column("tasks", "fallback_models")
    op.drop_column("tasks", "min_versions")
    op.drop_column("agents", "last_health_check_at")
    op.drop_column("agents", "quarantined_until")
    op.drop_column("agents", "consecutive_lapses")
    op.drop_column("agents", "task_types")
