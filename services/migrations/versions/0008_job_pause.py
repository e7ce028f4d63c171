"""fine_tuning_jobs.pause_requested: a running job asked to pause (its owner stops the run)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 03:15:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite supports NOT NULL with a default): batch mode would copy the
    # table, which the foreign keys of job events and checkpoints forbid.
    op.add_column('fine_tuning_jobs', sa.Column('pause_requested', sa.Boolean(), nullable=False,
                                                server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('fine_tuning_jobs', schema=None) as batch_op:
        batch_op.drop_column('pause_requested')
