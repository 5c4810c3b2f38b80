"""imap_folder.announced_uid: what "inboxes resync" must not announce again

`manage.py inboxes resync` forgets an inbox's stored mail and reads the
mailbox again. The UIDs up to this one were announced (email_received /
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
    with op.batch_alter_table('imap_folder', schema=None) as batch_op:
        batch_op.add_column(sa.Column('announced_uid', sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table('imap_folder', schema=None) as batch_op:
        batch_op.drop_column('announced_uid')
