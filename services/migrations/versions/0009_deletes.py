"""deletes: file ids of jobs and retrain runs lose their foreign keys; adapters.last_version

A dataset file can be deleted once the jobs that used it finished: the job keeps naming the
file (as OpenAI's jobs do), so fine_tuning_jobs.training_file / validation_file and
retrain_runs.training_file / validation_file become plain ids. adapters.last_version keeps
version numbers (and the engine-side names made of them) from being reused after a delete.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

FILE_COLUMNS = {'fine_tuning_jobs': ('training_file', 'validation_file'),
                'retrain_runs': ('training_file', 'validation_file')}
# SQLite's foreign keys have no names: batch mode names them by this convention to drop them
# (the table is rebuilt; env.py turns SQLite's foreign key checks off for that).
NAMING = {'fk': 'fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s'}


def _file_foreign_keys(table: str) -> list[str]:
    inspector = sa.inspect(op.get_bind())
    return [str(fk['name']) for fk in inspector.get_foreign_keys(table)
            if fk['referred_table'] == 'dataset_files' and fk.get('name')]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    for table, columns in FILE_COLUMNS.items():
        if sqlite:
            with op.batch_alter_table(table, naming_convention=NAMING,
                                      recreate='always') as batch_op:
                for column in columns:
                    batch_op.drop_constraint(f'fk_{table}_{column}_dataset_files',
                                             type_='foreignkey')
        else:
            for name in _file_foreign_keys(table):
                op.drop_constraint(name, table, type_='foreignkey')
    op.add_column('adapters', sa.Column('last_version', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.drop_column('last_version')
    for table, columns in FILE_COLUMNS.items():
        # Jobs may name deleted files by now: the constraint is not checked against them
        # (PostgreSQL: NOT VALID; SQLite checks only new writes).
        with op.batch_alter_table(table, naming_convention=NAMING) as batch_op:
            for column in columns:
                batch_op.create_foreign_key(f'fk_{table}_{column}_dataset_files',
                                            'dataset_files', [column], ['id'],
                                            postgresql_not_valid=True)
