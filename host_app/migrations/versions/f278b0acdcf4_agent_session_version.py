"""agent.session_version: signing out everywhere ends every session and remember-me cookie

Revision ID: f278b0acdcf4
Revises: da6bc0ec6bc8
Create Date: 2026-12-03 18:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'f278b0acdcf4'
down_revision = 'da6bc0ec6bc8'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('agent') as batch_op:
        batch_op.add_column(sa.Column('session_version', sa.Integer(), nullable=False, server_default='0'))


def downgrade():
    with op.batch_alter_table('agent') as batch_op:
        batch_op.drop_column('session_version')
