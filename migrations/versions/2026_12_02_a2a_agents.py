"""a2a agents: an agent's transport, and what reaches an A2A agent again after a restart

Revision ID: 0004_a2a_agents
Revises: 0003_status_checks
Create Date: 2026-12-02 09:00:00

`agents.transport` is `websocket` for every existing row (all of them connected over our WebSocket); the
column has a constant default, so adding it rewrites nothing. `a2a_agents` holds, per A2A agent, its card URL,
its headers (each encrypted or naming an environment variable, never in clear) and the replica that owns its
"connection"; rows go with their agent (ON DELETE CASCADE).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_a2a_agents"
down_revision: str | None = "0003_status_checks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "agents", sa.Column("transport", sa.Text(), server_default=sa.text("'websocket'"), nullable=False)
    )
    op.create_check_constraint(op.f("ck_agents_transport"), "agents", "transport IN ('websocket', 'a2a')")
    op.create_table(
        "a2a_agents",
        sa.Column("agent_id", sa.Text(), nullable=False),
        sa.Column("card_url", sa.Text(), nullable=False),
        sa.Column(
            "headers", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column("replica_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_a2a_agents_agent_id_agents"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_a2a_agents")),
        sa.UniqueConstraint("card_url", name=op.f("uq_a2a_agents_card_url")),
    )
    op.create_index(op.f("ix_a2a_agents_replica_id"), "a2a_agents", ["replica_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_a2a_agents_replica_id"), table_name="a2a_agents")
    op.drop_table("a2a_agents")
    op.drop_constraint("ck_agents_transport", "agents", type_="check")
    op.drop_column("agents", "transport")
