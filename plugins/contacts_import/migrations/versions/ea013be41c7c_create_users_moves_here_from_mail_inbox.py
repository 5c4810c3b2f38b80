"""Create users moves here from the mail core's mail_inbox, beside the inbox's policy

Each inbox's value is copied, nothing lost: into its existing import state,
or a new one (the policy and status the model defaults to) for an inbox
never imported yet.

This revision, not one of the mail core, drops mail_inbox.create_users:
`manage.py db upgrade` runs each plugin's revisions in load order, the mail
core before the plugins that depend on it (host_app/migrating.py, `owners`),
so only here are the values read before the column goes. Until then the
mail core's revision b382522dd026 gives the column a default, for a
database whose contacts_import is disabled and so never gets here.

Revision ID: ea013be41c7c
Revises: b40b9424aa45
Create Date: 2026-12-03 18:20:00
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = 'ea013be41c7c'
down_revision = 'b40b9424aa45'
branch_labels = None
depends_on = None

# The model's defaults for a new import state (models.py), as of this revision.
NEW_STATE_POLICY = 'any'
NEW_STATE_STATUS = 'idle'


def _mail_inbox_has_create_users(bind) -> bool:
    return 'create_users' in {column['name'] for column in sa.inspect(bind).get_columns('mail_inbox')}


def upgrade():
    bind = op.get_bind()
    with op.batch_alter_table('contacts_import_inbox') as batch_op:
        batch_op.add_column(sa.Column('create_users', sa.Boolean(), nullable=False, server_default=sa.false()))
    if not _mail_inbox_has_create_users(bind):
        return
    op.execute(sa.text(
        'UPDATE contacts_import_inbox SET create_users = '
        '(SELECT m.create_users FROM mail_inbox m WHERE m.id = contacts_import_inbox.inbox_id)'))
    op.execute(sa.text(
        'INSERT INTO contacts_import_inbox (inbox_id, create_users, policy, status, progress_done, progress_total, '
        'last_created, total_created, updated_at) '
        'SELECT m.id, m.create_users, :policy, :status, 0, 0, 0, 0, :now FROM mail_inbox m '
        'WHERE m.create_users AND NOT EXISTS (SELECT 1 FROM contacts_import_inbox s WHERE s.inbox_id = m.id)'
    ).bindparams(sa.bindparam('policy', NEW_STATE_POLICY), sa.bindparam('status', NEW_STATE_STATUS),
                 sa.bindparam('now', datetime.now(timezone.utc), type_=sa.DateTime(timezone=True))))
    with op.batch_alter_table('mail_inbox') as batch_op:
        batch_op.drop_column('create_users')


def downgrade():
    with op.batch_alter_table('mail_inbox') as batch_op:
        batch_op.add_column(sa.Column('create_users', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(sa.text(
        'UPDATE mail_inbox SET create_users = true WHERE id IN '
        '(SELECT inbox_id FROM contacts_import_inbox WHERE create_users)'))
    with op.batch_alter_table('contacts_import_inbox') as batch_op:
        batch_op.drop_column('create_users')
