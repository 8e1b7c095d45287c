"""status checks: every status column admits exactly its enum's values (app/statuses.py)

Revision ID: 0003_status_checks
Revises: 0002_ownership
Create Date: 2026-12-01 13:00:00

The values are written out here, not imported: a migration states the schema as it was at its revision.
Existing rows already hold only these values (every writer used them); a row that did not would make the
upgrade fail loudly rather than keep a status no code understands.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_status_checks"
down_revision: str | None = "0002_ownership"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHECKS = {
    "tasks": ("pending", "assigned", "running", "succeeded", "failed", "cancelled", "timed_out"),
    "assignments": (
        "assigned", "running", "succeeded", "failed", "rejected", "lost", "timed_out", "superseded", "cancelled",
    ),
    "agents": ("registering", "active", "draining", "unhealthy", "offline", "error"),
    "collab_sessions": ("running", "succeeded", "failed", "cancelled"),
}  # fmt: skip


def upgrade() -> None:
    for table, statuses in _CHECKS.items():
        values = ", ".join(f"'{status}'" for status in statuses)
        op.create_check_constraint(op.f(f"ck_{table}_status"), table, f"status IN ({values})")


def downgrade() -> None:
    for table in _CHECKS:
        op.drop_constraint(f"ck_{table}_status", table, type_="check")
