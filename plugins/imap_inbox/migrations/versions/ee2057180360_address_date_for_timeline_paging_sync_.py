"""address date for timeline paging, sync run details

Revision ID: ee2057180360
Revises: 5bce430deb5b
Create Date: 2026-11-26 23:17:05.896118
"""
from alembic import op
import sqlalchemy as sa


revision = 'ee2057180360'
down_revision = '5bce430deb5b'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('imap_message_address', schema=None) as batch_op:
        batch_op.add_column(sa.Column('date', sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index(batch_op.f('ix_imap_message_address_email_role'))
        batch_op.create_index('ix_imap_message_address_email_role_date', ['email', 'role', 'date'], unique=False)
    # Rows stored before this revision take their message's date.
    op.execute(
        "UPDATE imap_message_address SET date = "
        "(SELECT imap_message.date FROM imap_message WHERE imap_message.id = imap_message_address.message_pk)"
    )

    with op.batch_alter_table('imap_sync_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('updated_messages', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('details', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('imap_sync_run', schema=None) as batch_op:
        batch_op.drop_column('details')
        batch_op.drop_column('updated_messages')

    with op.batch_alter_table('imap_message_address', schema=None) as batch_op:
        batch_op.drop_index('ix_imap_message_address_email_role_date')
        batch_op.create_index(batch_op.f('ix_imap_message_address_email_role'), ['email', 'role'], unique=False)
        batch_op.drop_column('date')
