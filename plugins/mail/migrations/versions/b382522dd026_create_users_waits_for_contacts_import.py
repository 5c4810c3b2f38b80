"""mail_inbox.create_users gets a default while it waits for contacts_import to take it

"Create users" is contacts_import's setting now: its revision ea013be41c7c
copies every inbox's value into its own table and drops this column. It
cannot happen here: `manage.py db upgrade` runs the host's revisions, then
each plugin's in load order, which puts a plugin after those it depends on
(host_app/migrating.py, `owners`). The mail core comes first, so dropping the
column here would lose the values before contacts_import read them.

The column therefore stays until contacts_import's revision runs, which is
never while contacts_import is disabled. The model no longer writes it, so
inboxes connected meanwhile get false from the database.

Revision ID: b382522dd026
Revises: 2e5a044214fe
Create Date: 2026-12-03 18:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'b382522dd026'
down_revision = '2e5a044214fe'
branch_labels = None
depends_on = None


def _has_create_users(bind) -> bool:
    return 'create_users' in {column['name'] for column in sa.inspect(bind).get_columns('mail_inbox')}


def upgrade():
    if _has_create_users(op.get_bind()):  # contacts_import may have taken it already
        with op.batch_alter_table('mail_inbox') as batch_op:
            batch_op.alter_column('create_users', existing_type=sa.Boolean(), existing_nullable=False,
                                  server_default=sa.false())


def downgrade():
    if not _has_create_users(op.get_bind()):
        raise RuntimeError('contacts_import holds "Create users" now: downgrade contacts_import to b40b9424aa45 '
                           'first, which puts the column back')
    with op.batch_alter_table('mail_inbox') as batch_op:
        batch_op.alter_column('create_users', existing_type=sa.Boolean(), existing_nullable=False,
                              server_default=None)
