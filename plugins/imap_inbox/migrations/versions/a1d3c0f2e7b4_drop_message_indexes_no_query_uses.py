"""drop the imap_message indexes no query uses (message_id, from_email, in_reply_to)

Each was a B-tree on a long random string, maintained on every insert of a
first sync: measured on 110k rows, the inserts took 17.6 s with them and about
half without (bench/README.md). Message-ID lookups go through dedup_key.

Revision ID: a1d3c0f2e7b4
Revises: dc81c68728b9
Create Date: 2026-11-27 02:50:00
"""
from alembic import op


revision = 'a1d3c0f2e7b4'
down_revision = 'dc81c68728b9'
branch_labels = None
depends_on = None

DROPPED = ('message_id', 'from_email', 'in_reply_to')


def upgrade():
    with op.batch_alter_table('imap_message', schema=None) as batch_op:
        for column in DROPPED:
            batch_op.drop_index(f'ix_imap_message_{column}')


def downgrade():
    with op.batch_alter_table('imap_message', schema=None) as batch_op:
        for column in DROPPED:
            batch_op.create_index(f'ix_imap_message_{column}', [column], unique=False)
