"""fine-tuning files and jobs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 11:45:09.105258
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dataset_files',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=256), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('task', sa.String(length=16), nullable=False),
    sa.Column('format', sa.String(length=8), nullable=False),
    sa.Column('stats', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('dataset_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_files_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('fine_tuning_jobs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('parent_version_id', sa.Integer(), nullable=True),
    sa.Column('adapter_name', sa.String(length=64), nullable=False),
    sa.Column('task', sa.String(length=16), nullable=False),
    sa.Column('training_file', sa.String(length=64), nullable=False),
    sa.Column('validation_file', sa.String(length=64), nullable=True),
    sa.Column('hyperparameters', sa.JSON(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=True),
    sa.Column('prompt_template', sa.Text(), nullable=True),
    sa.Column('auto_promote', sa.Boolean(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('run_name', sa.String(length=64), nullable=False),
    sa.Column('runner', sa.String(length=16), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('fine_tuned_model', sa.String(length=128), nullable=True),
    sa.Column('result_version_id', sa.Integer(), nullable=True),
    sa.Column('trained_tokens', sa.BigInteger(), nullable=True),
    sa.Column('progress', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['parent_version_id'], ['adapter_versions.id'], ),
    sa.ForeignKeyConstraint(['result_version_id'], ['adapter_versions.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.ForeignKeyConstraint(['training_file'], ['dataset_files.id'], ),
    sa.ForeignKeyConstraint(['validation_file'], ['dataset_files.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('fine_tuning_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fine_tuning_jobs_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_fine_tuning_jobs_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_fine_tuning_jobs_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('fine_tuning_checkpoints',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['fine_tuning_jobs.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'step')
    )
    with op.batch_alter_table('fine_tuning_checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fine_tuning_checkpoints_job_id'), ['job_id'], unique=False)

    op.create_table('fine_tuning_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=24), nullable=False),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['fine_tuning_jobs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('fine_tuning_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fine_tuning_events_job_id'), ['job_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('fine_tuning_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fine_tuning_events_job_id'))

    op.drop_table('fine_tuning_events')
    with op.batch_alter_table('fine_tuning_checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fine_tuning_checkpoints_job_id'))

    op.drop_table('fine_tuning_checkpoints')
    with op.batch_alter_table('fine_tuning_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fine_tuning_jobs_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_fine_tuning_jobs_status'))
        batch_op.drop_index(batch_op.f('ix_fine_tuning_jobs_created_at'))

    op.drop_table('fine_tuning_jobs')
    with op.batch_alter_table('dataset_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_files_tenant_id'))

    op.drop_table('dataset_files')
