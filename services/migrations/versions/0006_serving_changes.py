"""serving_changes: a counter of changes to tenants, keys, adapters and versions, so every
gateway drops its caches when another process changes them

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 02:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table('serving_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('counter', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(table, [{'id': 1, 'counter': 0}])


def downgrade() -> None:
    op.drop_table('serving_changes')
