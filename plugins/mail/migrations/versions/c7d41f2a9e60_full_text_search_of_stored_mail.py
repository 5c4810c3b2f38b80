"""full-text search of stored mail: subject and stored text, indexed by the database itself

PostgreSQL: a generated ``search_vector`` column (the subject weighted above
the text) with a GIN index. Adding the column computes it for every stored
message, so existing mail is searchable once the upgrade is done.

SQLite: an FTS5 table over ``mail_message`` (external content: the text is
not stored twice) with triggers that keep it in step with every insert,
delete and change of subject or text, whichever code path writes them;
'rebuild' indexes the mail already stored. A later migration that rebuilds
``mail_message`` with ``batch_alter_table`` on SQLite drops these triggers
and must create them again (``create_sqlite_triggers``).

Words are stemmed as English (PostgreSQL's 'english' configuration, SQLite's
porter tokenizer), accents ignored on SQLite (remove_diacritics).

Revision ID: c7d41f2a9e60
Revises: 4c7d2e9a1b30
Create Date: 2026-12-04 15:40:00
"""
from alembic import op


revision = 'c7d41f2a9e60'
down_revision = '4c7d2e9a1b30'
branch_labels = None
depends_on = None

SQLITE_TRIGGERS = {
    'mail_message_search_insert': """
        CREATE TRIGGER mail_message_search_insert AFTER INSERT ON mail_message BEGIN
          INSERT INTO mail_message_search (rowid, subject, preview) VALUES (new.id, new.subject, new.preview);
        END""",
    'mail_message_search_delete': """
        CREATE TRIGGER mail_message_search_delete AFTER DELETE ON mail_message BEGIN
          INSERT INTO mail_message_search (mail_message_search, rowid, subject, preview)
          VALUES ('delete', old.id, old.subject, old.preview);
        END""",
    'mail_message_search_update': """
        CREATE TRIGGER mail_message_search_update AFTER UPDATE OF subject, preview ON mail_message BEGIN
          INSERT INTO mail_message_search (mail_message_search, rowid, subject, preview)
          VALUES ('delete', old.id, old.subject, old.preview);
          INSERT INTO mail_message_search (rowid, subject, preview) VALUES (new.id, new.subject, new.preview);
        END""",
}


def create_sqlite_triggers():
    for sql in SQLITE_TRIGGERS.values():
        op.execute(sql)


def upgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("""
            ALTER TABLE mail_message ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
              setweight(to_tsvector('english', coalesce(subject, '')), 'A')
              || setweight(to_tsvector('english', coalesce(preview, '')), 'B')
            ) STORED""")
        op.execute('CREATE INDEX ix_mail_message_search_vector ON mail_message USING gin (search_vector)')
    else:
        op.execute("""
            CREATE VIRTUAL TABLE mail_message_search USING fts5 (
              subject, preview, content='mail_message', content_rowid='id',
              tokenize='porter unicode61 remove_diacritics 2'
            )""")
        create_sqlite_triggers()
        op.execute("INSERT INTO mail_message_search (mail_message_search) VALUES ('rebuild')")


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP INDEX ix_mail_message_search_vector')
        op.execute('ALTER TABLE mail_message DROP COLUMN search_vector')
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f'DROP TRIGGER {name}')
        op.execute('DROP TABLE mail_message_search')
