"""initial schema

Revision ID: 0001_initial
Revises: 
Create Date: 2026-11-26 12:57:21.048668
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001_initial'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('agents',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('capabilities', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'"), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('max_concurrency', sa.Integer(), nullable=False),
    sa.Column('replica_id', sa.Text(), nullable=True),
    sa.Column('owner_key_id', sa.Uuid(), nullable=True),
    sa.Column('connected_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('health_failures', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('tasks_completed', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('tasks_failed', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('avg_latency_ms', sa.Double(), server_default=sa.text('0'), nullable=False),
    sa.Column('tokens_processed', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('cost_incurred', sa.Double(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('version', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agents'))
    )
    op.create_index(op.f('ix_agents_model'), 'agents', ['model'], unique=False)
    op.create_index(op.f('ix_agents_replica_id'), 'agents', ['replica_id'], unique=False)
    op.create_index(op.f('ix_agents_status'), 'agents', ['status'], unique=False)
    op.create_table('api_keys',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('prefix', sa.Text(), nullable=False),
    sa.Column('secret_hash', sa.Text(), nullable=False),
    sa.Column('scopes', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_api_keys_secret_hash'))
    )
    op.create_table('collab_sessions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('strategy', sa.Text(), nullable=False),
    sa.Column('spec', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('state', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('round', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('budget', sa.Double(), nullable=True),
    sa.Column('cost', sa.Double(), server_default=sa.text('0'), nullable=False),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('deadline', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_collab_sessions'))
    )
    op.create_index(op.f('ix_collab_sessions_status'), 'collab_sessions', ['status'], unique=False)
    op.create_table('replicas',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_replicas'))
    )
    op.create_table('agent_capabilities',
    sa.Column('agent_id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('version', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_agent_capabilities_agent_id_agents'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_id', 'name', name=op.f('pk_agent_capabilities'))
    )
    op.create_index(op.f('ix_agent_capabilities_name'), 'agent_capabilities', ['name'], unique=False)
    op.create_table('agent_health_checks',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('agent_id', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('duration_ms', sa.Double(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_agent_health_checks_agent_id_agents'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_health_checks'))
    )
    op.create_index('ix_agent_health_checks_agent_id_at', 'agent_health_checks', ['agent_id', 'at'], unique=False)
    op.create_table('session_events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('session_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['collab_sessions.id'], name=op.f('fk_session_events_session_id_collab_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_session_events'))
    )
    op.create_index('ix_session_events_session_id_id', 'session_events', ['session_id', 'id'], unique=False)
    op.create_table('tasks',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('required_capabilities', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('priority', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('attempt', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('timeout', sa.Double(), nullable=False),
    sa.Column('queue_timeout', sa.Double(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('available_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('model', sa.Text(), nullable=True),
    sa.Column('strategy', sa.Text(), nullable=True),
    sa.Column('max_cost', sa.Double(), nullable=True),
    sa.Column('estimated_tokens', sa.Integer(), nullable=True),
    sa.Column('agent_ids', postgresql.ARRAY(sa.Text()), nullable=True),
    sa.Column('agent_id', sa.Text(), nullable=True),
    sa.Column('assignment_id', sa.Uuid(), nullable=True),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('input_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('cost', sa.Double(), server_default=sa.text('0'), nullable=False),
    sa.Column('idempotency_key', sa.Text(), nullable=True),
    sa.Column('session_id', sa.Uuid(), nullable=True),
    sa.Column('session_key', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['collab_sessions.id'], name=op.f('fk_tasks_session_id_collab_sessions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_tasks_idempotency_key')),
    sa.UniqueConstraint('session_id', 'session_key', name='uq_tasks_session_id_session_key')
    )
    op.create_index(op.f('ix_tasks_agent_id'), 'tasks', ['agent_id'], unique=False)
    op.create_index('ix_tasks_open_lease', 'tasks', ['lease_expires_at'], unique=False, postgresql_where=sa.text("status IN ('assigned', 'running')"))
    op.create_index('ix_tasks_pending_queue', 'tasks', [sa.literal_column('priority DESC'), 'available_at'], unique=False, postgresql_where=sa.text("status = 'pending'"))
    op.create_index(op.f('ix_tasks_session_id'), 'tasks', ['session_id'], unique=False)
    op.create_index('ix_tasks_status_created_at', 'tasks', ['status', 'created_at'], unique=False)
    op.create_table('assignments',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('task_id', sa.Uuid(), nullable=False),
    sa.Column('agent_id', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('replica_id', sa.Text(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('assigned_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('latency_ms', sa.Double(), nullable=True),
    sa.Column('input_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('cost', sa.Double(), server_default=sa.text('0'), nullable=False),
    sa.Column('output', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_assignments_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assignments'))
    )
    op.create_index('ix_assignments_finished_at', 'assignments', ['finished_at'], unique=False)
    op.create_index('ix_assignments_open_by_agent', 'assignments', ['agent_id'], unique=False, postgresql_where=sa.text("status IN ('assigned', 'running')"))
    op.create_index(op.f('ix_assignments_task_id'), 'assignments', ['task_id'], unique=False)
    op.create_table('task_events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('from_status', sa.Text(), nullable=True),
    sa.Column('to_status', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_task_events_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_events'))
    )
    op.create_index('ix_task_events_task_id_id', 'task_events', ['task_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_task_events_task_id_id', table_name='task_events')
    op.drop_table('task_events')
    op.drop_index(op.f('ix_assignments_task_id'), table_name='assignments')
    op.drop_index('ix_assignments_open_by_agent', table_name='assignments', postgresql_where=sa.text("status IN ('assigned', 'running')"))
    op.drop_index('ix_assignments_finished_at', table_name='assignments')
    op.drop_table('assignments')
    op.drop_index('ix_tasks_status_created_at', table_name='tasks')
    op.drop_index(op.f('ix_tasks_session_id'), table_name='tasks')
    op.drop_index('ix_tasks_pending_queue', table_name='tasks', postgresql_where=sa.text("status = 'pending'"))
    op.drop_index('ix_tasks_open_lease', table_name='tasks', postgresql_where=sa.text("status IN ('assigned', 'running')"))
    op.drop_index(op.f('ix_tasks_agent_id'), table_name='tasks')
    op.drop_table('tasks')
    op.drop_index('ix_session_events_session_id_id', table_name='session_events')
    op.drop_table('session_events')
    op.drop_index('ix_agent_health_checks_agent_id_at', table_name='agent_health_checks')
    op.drop_table('agent_health_checks')
    op.drop_index(op.f('ix_agent_capabilities_name'), table_name='agent_capabilities')
    op.drop_table('agent_capabilities')
    op.drop_table('replicas')
    op.drop_index(op.f('ix_collab_sessions_status'), table_name='collab_sessions')
    op.drop_table('collab_sessions')
    op.drop_table('api_keys')
    op.drop_index(op.f('ix_agents_status'), table_name='agents')
    op.drop_index(op.f('ix_agents_replica_id'), table_name='agents')
    op.drop_index(op.f('ix_agents_model'), table_name='agents')
    op.drop_table('agents')
