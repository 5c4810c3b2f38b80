"""message ids never handed out twice on SQLite (AUTOINCREMENT)

Without AUTOINCREMENT, SQLite gives a new row the highest rowid plus one, so
deleting the newest messages (expunged on the server) made the next ones reuse
their ids. reply_condition and contacts_import remember the last message id
they processed, and skipped the mail that reused it. The table is rebuilt
with its rows and ids; PostgreSQL's sequences never reuse an id, so nothing
changes there.

Revision ID: c4a8e1d2f6b9
Revises: b7e2f91c4d05
Create Date: 2026-11-27 06:00:00
"""
from alembic import op


revision = 'c4a8e1d2f6b9'
down_revision = 'b7e2f91c4d05'
branch_labels = None
depends_on = None


def upgrade():
    _rebuild_on_sqlite(autoincrement=True)


def downgrade():
    _rebuild_on_sqlite(autoincrement=False)


def _rebuild_on_sqlite(autoincrement: bool):
    if op.get_bind().dialect.name != 'sqlite':
        return
    with op.batch_alter_table('imap_message', recreate='always',
                              table_kwargs={'sqlite_autoincrement': autoincrement}) as batch_op:
        batch_op.alter_column('id', autoincrement=True)
