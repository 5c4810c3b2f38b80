"""reading a mailbox again: imap_inbox.resync_requested and imap_folder.announced_uid

"Read the mailbox again" (`manage.py inboxes resync`, the inbox page) sets
resync_requested; the next sync forgets the stored mail, then reads the whole
mailbox. The UIDs up to announced_uid were announced (email_received /
email_sent) when first stored, so reading them again announces nothing.

Revision ID: d9f3b6a1c7e2
Revises: c4a8e1d2f6b9
Create Date: 2026-11-27 06:10:00
"""
import sqlalchemy as sa
from alembic import op


revision = 'd9f3b6a1c7e2'
down_revision = 'c4a8e1d2f6b9'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('imap_inbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resync_requested', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('imap_folder', schema=None) as batch_op:
        batch_op.add_column(sa.Column('announced_uid', sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table('imap_folder', schema=None) as batch_op:
        batch_op.drop_column('announced_uid')
    with op.batch_alter_table('imap_inbox', schema=None) as batch_op:
        batch_op.drop_column('resync_requested')
