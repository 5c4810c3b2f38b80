"""An uploaded CA certificate for an inbox: imap_inbox.ca_pem

An inbox trusts a CA certificate from a PEM file inside the CA directory (IMAP_CA_DIR) or one uploaded
with its settings, kept here. Existing CA file paths stay as they are: one inside the CA directory keeps
working, any other makes the inbox need attention at its next connection (connection._tls_context).

Revision ID: 4c7e1a9b2d35
Revises: 7b3e9c2d4a61
Create Date: 2026-12-04 15:50:00
"""
import sqlalchemy as sa
from alembic import op


revision = '4c7e1a9b2d35'
down_revision = '7b3e9c2d4a61'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('imap_inbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ca_pem', sa.Text(), nullable=True))


def downgrade():
    # An inbox trusting an uploaded certificate would silently stop trusting it: refuse rather than lose it.
    uploaded = op.get_bind().scalar(sa.text("SELECT count(*) FROM imap_inbox WHERE ca_pem IS NOT NULL"))
    if uploaded:
        raise RuntimeError(f"{uploaded} inbox(es) trust an uploaded CA certificate, which the older version "
                           "cannot keep: put it in a file and enter its path instead before downgrading.")
    with op.batch_alter_table('imap_inbox', schema=None) as batch_op:
        batch_op.drop_column('ca_pem')
