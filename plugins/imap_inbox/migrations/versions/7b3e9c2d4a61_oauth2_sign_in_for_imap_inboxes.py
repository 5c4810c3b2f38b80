"""OAuth 2.0 mailboxes: imap_inbox.auth, oauth_provider and refresh_token_encrypted

An inbox logs in with a password (as before: every existing inbox is "password") or with OAuth 2.0
("oauth2": SASL XOAUTH2 / OAUTHBEARER with access tokens got from its encrypted refresh token). Such an
inbox has no password, so password_encrypted may be empty.

Revision ID: 7b3e9c2d4a61
Revises: f3a9d6c1b2e8
Create Date: 2026-12-03 18:10:00
"""
import sqlalchemy as sa
from alembic import op


revision = '7b3e9c2d4a61'
down_revision = 'f3a9d6c1b2e8'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('imap_inbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth', sa.String(length=10), nullable=False, server_default='password'))
        batch_op.add_column(sa.Column('oauth_provider', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('refresh_token_encrypted', sa.LargeBinary(), nullable=True))
        batch_op.alter_column('password_encrypted', existing_type=sa.LargeBinary(), nullable=True)


def downgrade():
    # An OAuth 2.0 inbox has no password the older schema could keep: refuse rather than lose it.
    oauth_inboxes = op.get_bind().scalar(sa.text("SELECT count(*) FROM imap_inbox WHERE auth = 'oauth2'"))
    if oauth_inboxes:
        raise RuntimeError(f"{oauth_inboxes} inbox(es) sign in with OAuth 2.0, which the older version cannot "
                           "keep: remove them (manage.py inboxes delete) before downgrading.")
    with op.batch_alter_table('imap_inbox', schema=None) as batch_op:
        batch_op.alter_column('password_encrypted', existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column('refresh_token_encrypted')
        batch_op.drop_column('oauth_provider')
        batch_op.drop_column('auth')
