"""ownership: tasks and sessions belong to the key (and project) that created them

Revision ID: 0002_ownership
Revises: 0001_initial
Create Date: 2026-12-01 10:00:00

Existing rows get no owner (owner_key_id and project NULL): only admin keys see them, as before ownership
every task was everyone's and there is no telling whose it was. An operator may hand them to a project
afterwards (`UPDATE tasks SET project = '...' WHERE owner_key_id IS NULL AND project IS NULL`, the same for
collab_sessions). Their idempotency keys were unique across the whole table, so they all fit the index for
rows without an owner. The columns are nullable without a default, so adding them rewrites nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_ownership"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PROJECT_KEYED = "project IS NOT NULL AND idempotency_key IS NOT NULL"
_OWNER_KEYED = "project IS NULL AND owner_key_id IS NOT NULL AND idempotency_key IS NOT NULL"
_UNOWNED_KEYED = "project IS NULL AND owner_key_id IS NULL AND idempotency_key IS NOT NULL"


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("project", sa.Text(), nullable=True))
    op.add_column("collab_sessions", sa.Column("owner_key_id", sa.Uuid(), nullable=True))
    op.add_column("collab_sessions", sa.Column("project", sa.Text(), nullable=True))
    op.add_column("tasks", sa.Column("owner_key_id", sa.Uuid(), nullable=True))
    op.add_column("tasks", sa.Column("project", sa.Text(), nullable=True))
    # The old rule (one idempotency key per whole table) becomes one per owner.
    op.drop_constraint("uq_tasks_idempotency_key", "tasks", type_="unique")
    op.create_index(
        "uq_tasks_project_idempotency_key",
        "tasks",
        ["project", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text(_PROJECT_KEYED),
    )
    op.create_index(
        "uq_tasks_owner_key_id_idempotency_key",
        "tasks",
        ["owner_key_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text(_OWNER_KEYED),
    )
    op.create_index(
        "uq_tasks_unowned_idempotency_key",
        "tasks",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text(_UNOWNED_KEYED),
    )
    op.create_index(
        "ix_tasks_project_created_at",
        "tasks",
        ["project", "created_at"],
        postgresql_where=sa.text("project IS NOT NULL"),
    )
    op.create_index(
        "ix_tasks_owner_key_id_created_at",
        "tasks",
        ["owner_key_id", "created_at"],
        postgresql_where=sa.text("project IS NULL AND owner_key_id IS NOT NULL"),
    )


def downgrade() -> None:
    # Fails if two owners used the same idempotency key: which of their tasks would keep it is not ours to say.
    op.drop_index("ix_tasks_owner_key_id_created_at", table_name="tasks")
    op.drop_index("ix_tasks_project_created_at", table_name="tasks")
    op.drop_index("uq_tasks_unowned_idempotency_key", table_name="tasks")
    op.drop_index("uq_tasks_owner_key_id_idempotency_key", table_name="tasks")
    op.drop_index("uq_tasks_project_idempotency_key", table_name="tasks")
    op.create_unique_constraint("uq_tasks_idempotency_key", "tasks", ["idempotency_key"])
    op.drop_column("tasks", "project")
    op.drop_column("tasks", "owner_key_id")
    op.drop_column("collab_sessions", "project")
    op.drop_column("collab_sessions", "owner_key_id")
    op.drop_column("api_keys", "project")
