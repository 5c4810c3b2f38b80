"""folder: strikes of messages the server cannot read

Revision ID: dc81c68728b9
Revises: 5e49060616fe
Create Date: 2026-11-27 00:41:44.217257
"""
from alembic import op
import sqlalchemy as sa


revision = 'dc81c68728b9'
down_revision = '5e49060616fe'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('imap_folder', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unreadable', sa.JSON(), nullable=True))



def downgrade():
    with op.batch_alter_table('imap_folder', schema=None) as batch_op:
        batch_op.drop_column('unreadable')

