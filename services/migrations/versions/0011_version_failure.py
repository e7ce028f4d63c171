"""adapter_versions.failure: why a version is FAILED (e.g. the engine refused to load it)

A version an engine refuses to load (a 4xx from the engine: incompatible weights, a blob missing
from or corrupt in the artifact store) becomes FAILED with the engine's reason, so requests get
a 4xx naming it instead of a 503 retried forever.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 15:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN: batch mode would copy the table, which other tables reference.
    op.add_column('adapter_versions', sa.Column('failure', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('adapter_versions', schema=None) as batch_op:
        batch_op.drop_column('failure')
