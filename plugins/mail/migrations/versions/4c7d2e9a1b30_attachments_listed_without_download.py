"""mail_message_attachment: attachments listed from the server's BODYSTRUCTURE, without downloading mail

Revision ID: 4c7d2e9a1b30
Revises: b382522dd026
Create Date: 2026-12-04 16:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '4c7d2e9a1b30'
down_revision = 'b382522dd026'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'mail_message_attachment',
        sa.Column('message_pk', sa.Integer(), nullable=False),
        sa.Column('section', sa.String(length=100), nullable=False),
        sa.Column('filename', sa.String(length=300), nullable=False),
        sa.Column('content_type', sa.String(length=200), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('encoding', sa.String(length=50), nullable=False),
        sa.ForeignKeyConstraint(['message_pk'], ['mail_message.id'], ondelete='CASCADE',
                                name=op.f('fk_mail_message_attachment_message_pk_mail_message')),
        sa.PrimaryKeyConstraint('message_pk', 'section', name=op.f('pk_mail_message_attachment')),
    )


def downgrade():
    op.drop_table('mail_message_attachment')
