"""full-text index (SQLite): the sync's bulk insert fills it with one statement per batch

FTS5 writes its pending terms out as a new index segment at the end of every
statement, so the per-row trigger of c7d41f2a9e60 made one segment per
statement of the sync's bulk insert (100 rows each). Now that insert marks its
transaction with a row in ``mail_search_bulk_insert`` (deleted before the
commit, so no other connection ever sees it), the insert trigger leaves those
rows alone, and ``plugins.mail.store`` indexes the batch with one
``INSERT ... SELECT``: a micro-benchmark of 110,000 messages (bench/README.md)
took 0.9-1.0 s of CPU for the index with the trigger, 0.45 s per batch.
Every other path that inserts a message is indexed by the trigger as before.
Deleting and changing messages keep their triggers.

A later migration that rebuilds ``mail_message`` with ``batch_alter_table``
on SQLite must create the three triggers again, this one's insert trigger
included (``SQLITE_INSERT_TRIGGER``). Nothing changes on PostgreSQL (its
index is a generated column).

Revision ID: e3b9d7f1a5c2
Revises: c7d41f2a9e60
Create Date: 2026-12-05 00:55:00
"""
from alembic import op


revision = 'e3b9d7f1a5c2'
down_revision = 'c7d41f2a9e60'
branch_labels = None
depends_on = None

SQLITE_INSERT_TRIGGER = """
    CREATE TRIGGER mail_message_search_insert AFTER INSERT ON mail_message
    WHEN NOT EXISTS (SELECT 1 FROM mail_search_bulk_insert) BEGIN
      INSERT INTO mail_message_search (rowid, subject, preview) VALUES (new.id, new.subject, new.preview);
    END"""

PREVIOUS_INSERT_TRIGGER = """
    CREATE TRIGGER mail_message_search_insert AFTER INSERT ON mail_message BEGIN
      INSERT INTO mail_message_search (rowid, subject, preview) VALUES (new.id, new.subject, new.preview);
    END"""


def upgrade():
    if op.get_bind().dialect.name != 'sqlite':
        return
    op.execute('CREATE TABLE mail_search_bulk_insert (id INTEGER NOT NULL PRIMARY KEY)')
    op.execute('DROP TRIGGER mail_message_search_insert')
    op.execute(SQLITE_INSERT_TRIGGER)


def downgrade():
    if op.get_bind().dialect.name != 'sqlite':
        return
    op.execute('DROP TRIGGER mail_message_search_insert')
    op.execute(PREVIOUS_INSERT_TRIGGER)
    op.execute('DROP TABLE mail_search_bulk_insert')
