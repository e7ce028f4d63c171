"""monitor loop: retrain policies, drift/quality reports, monitor events, retrain runs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 11:58:23.068124
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('monitor_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('monitor_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_monitor_events_adapter_id'), ['adapter_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_monitor_events_created_at'), ['created_at'], unique=False)

    op.create_table('monitor_reports',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('new_window', sa.Boolean(), nullable=False),
    sa.Column('drifted', sa.Boolean(), nullable=True),
    sa.Column('n_window', sa.Integer(), nullable=False),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('input_drift', sa.JSON(), nullable=True),
    sa.Column('prediction_drift', sa.JSON(), nullable=True),
    sa.Column('quality', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('monitor_reports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_monitor_reports_adapter_id'), ['adapter_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_monitor_reports_created_at'), ['created_at'], unique=False)

    op.create_table('retrain_policies',
    sa.Column('adapter_id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('policy', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('adapter_id')
    )
    with op.batch_alter_table('retrain_policies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_retrain_policies_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('retrain_runs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('trigger', sa.String(length=32), nullable=False),
    sa.Column('champion_version', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('dataset_version', sa.String(length=64), nullable=False),
    sa.Column('dataset', sa.JSON(), nullable=False),
    sa.Column('training_file', sa.String(length=64), nullable=False),
    sa.Column('validation_file', sa.String(length=64), nullable=False),
    sa.Column('candidate_version', sa.Integer(), nullable=True),
    sa.Column('evaluation', sa.JSON(), nullable=True),
    sa.Column('gate', sa.JSON(), nullable=True),
    sa.Column('baseline', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('promoted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], ),
    sa.ForeignKeyConstraint(['job_id'], ['fine_tuning_jobs.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.ForeignKeyConstraint(['training_file'], ['dataset_files.id'], ),
    sa.ForeignKeyConstraint(['validation_file'], ['dataset_files.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('retrain_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_retrain_runs_adapter_id'), ['adapter_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_retrain_runs_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_retrain_runs_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_retrain_runs_tenant_id'), ['tenant_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('retrain_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_retrain_runs_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_retrain_runs_status'))
        batch_op.drop_index(batch_op.f('ix_retrain_runs_created_at'))
        batch_op.drop_index(batch_op.f('ix_retrain_runs_adapter_id'))

    op.drop_table('retrain_runs')
    with op.batch_alter_table('retrain_policies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_retrain_policies_tenant_id'))

    op.drop_table('retrain_policies')
    with op.batch_alter_table('monitor_reports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_monitor_reports_created_at'))
        batch_op.drop_index(batch_op.f('ix_monitor_reports_adapter_id'))

    op.drop_table('monitor_reports')
    with op.batch_alter_table('monitor_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_monitor_events_created_at'))
        batch_op.drop_index(batch_op.f('ix_monitor_events_adapter_id'))

    op.drop_table('monitor_events')
