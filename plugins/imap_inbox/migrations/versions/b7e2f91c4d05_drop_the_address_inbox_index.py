"""drop the imap_message_address inbox_id index

A B-tree over a column with one value per inbox, maintained on every address
row of a first sync (two to three per message). PostgreSQL inserted the
243,576 address rows of the 110k benchmark mailbox in 1.14 s with it and
0.87 s without (three runs each, bench/README.md).
Its two readers do as well without it: deleting an inbox goes through the
messages' (inbox_id, date) index, and the contacts import reads the whole
inbox anyway.

Revision ID: b7e2f91c4d05
Revises: a1d3c0f2e7b4
Create Date: 2026-11-27 05:40:00
"""
from alembic import op


revision = 'b7e2f91c4d05'
down_revision = 'a1d3c0f2e7b4'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('imap_message_address', schema=None) as batch_op:
        batch_op.drop_index('ix_imap_message_address_inbox_id')


def downgrade():
    with op.batch_alter_table('imap_message_address', schema=None) as batch_op:
        batch_op.create_index('ix_imap_message_address_inbox_id', ['inbox_id'], unique=False)
