"""imap_inbox.attachments_listed_id: how far the follow-up job listed attachments (BODYSTRUCTURE)

Existing inboxes start at 0: their next sync's follow-up lists the attachments of the mail already stored.

Revision ID: 8e1f4a6c2d57
Revises: 4c7e1a9b2d35
Create Date: 2026-12-04 16:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '8e1f4a6c2d57'
down_revision = '4c7e1a9b2d35'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('imap_inbox') as batch_op:
        batch_op.add_column(sa.Column('attachments_listed_id', sa.BigInteger(), nullable=False, server_default='0'))


def downgrade():
    with op.batch_alter_table('imap_inbox') as batch_op:
        batch_op.drop_column('attachments_listed_id')
