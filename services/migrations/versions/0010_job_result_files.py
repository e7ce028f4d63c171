"""fine_tuning_jobs.result_files: the ids of a succeeded job's result files (OpenAI result_files)

A succeeded job's step metrics are published as a tenant file (purpose fine-tune-results); the
job keeps naming it after the file is deleted, as OpenAI's jobs do.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN: batch mode would copy the table, which job events reference.
    op.add_column('fine_tuning_jobs', sa.Column('result_files', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('fine_tuning_jobs', schema=None) as batch_op:
        batch_op.drop_column('result_files')
