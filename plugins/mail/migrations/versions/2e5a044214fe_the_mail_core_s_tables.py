"""the mail core's tables

A fresh database gets them here. A database that predates the mail core keeps
its stored mail in imap_inbox's tables (imap_inbox at revision e5c2a7f4b8d1):
they are renamed, not copied, so every id, sequence and row pointing at them
(reply_condition's responses, contacts_import's states) stays as it was. The
connection columns left on mail_inbox and mail_folder move to imap_inbox's
own tables in its next revision (f3a9d6c1b2e8).

On PostgreSQL the renamed tables' indexes, constraints and sequences are
renamed too; on SQLite the indexes are, while constraint names stay inside
the table definitions (SQLite cannot rename them without rebuilding every
table, and nothing reads them).

Revision ID: 2e5a044214fe
Revises:
Create Date: 2026-12-03 14:22:49.572194
"""
import re

from alembic import op
import sqlalchemy as sa


revision = '2e5a044214fe'
down_revision = None
branch_labels = None
depends_on = None

# imap_inbox's last revision before the mail core: the shape of the tables adopted here.
IMAP_INBOX_BEFORE_MAIL_CORE = 'e5c2a7f4b8d1'
ADOPTED = {
    'imap_message_address': 'mail_message_address',
    'imap_message': 'mail_message',
    'imap_sync_run': 'mail_sync_run',
    'imap_folder': 'mail_folder',
    'imap_inbox': 'mail_inbox',
}
_ADOPTED_NAME = re.compile('|'.join(ADOPTED))  # longest first: imap_message_address before imap_message


def _new_name(name):
    return _ADOPTED_NAME.sub(lambda m: ADOPTED[m.group(0)], name)


def upgrade():
    bind = op.get_bind()
    if sa.inspect(bind).has_table('imap_message'):
        _adopt_imap_inbox_tables(bind)
    else:
        _create_tables()


def _adopt_imap_inbox_tables(bind):
    version = bind.execute(sa.text('SELECT version_num FROM alembic_version_imap_inbox')).scalar()
    if version != IMAP_INBOX_BEFORE_MAIL_CORE:
        raise RuntimeError(f'imap_inbox is at revision {version}, not {IMAP_INBOX_BEFORE_MAIL_CORE}: upgrade with '
                           'the release before the mail core first, then run manage.py db upgrade again')
    for old, new in ADOPTED.items():
        op.rename_table(old, new)
    if bind.dialect.name == 'postgresql':
        _rename_postgres_names(bind)
    else:
        _rename_sqlite_indexes(bind)
    for table in ('mail_inbox', 'mail_folder'):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column('transport', sa.String(length=20), nullable=True))
        op.execute(sa.text(f"UPDATE {table} SET transport = 'imap'"))
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column('transport', existing_type=sa.String(length=20), nullable=False)


def _rename_postgres_names(bind):
    tables = list(ADOPTED.values())
    # Constraints on the adopted tables and those of other tables pointing at them (named after them).
    constraints = bind.execute(sa.text(
        'SELECT conrelid::regclass::text, conname FROM pg_constraint '
        'WHERE conrelid::regclass::text = ANY(:t) OR confrelid::regclass::text = ANY(:t)'), {'t': tables}).all()
    for table, name in constraints:
        if _new_name(name) != name:
            op.execute(sa.text(f'ALTER TABLE "{table}" RENAME CONSTRAINT "{name}" TO "{_new_name(name)}"'))
    indexes = bind.execute(sa.text('SELECT indexname FROM pg_indexes WHERE tablename = ANY(:t)'),
                           {'t': tables}).scalars().all()
    for name in indexes:
        if _new_name(name) != name:
            op.execute(sa.text(f'ALTER INDEX "{name}" RENAME TO "{_new_name(name)}"'))
    sequences = bind.execute(sa.text(
        "SELECT s.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid JOIN pg_class t ON t.oid = d.refobjid "
        "WHERE s.relkind = 'S' AND t.relname = ANY(:t)"), {'t': tables}).scalars().all()
    for name in sequences:
        if _new_name(name) != name:
            op.execute(sa.text(f'ALTER SEQUENCE "{name}" RENAME TO "{_new_name(name)}"'))


def _rename_sqlite_indexes(bind):
    rows = bind.execute(sa.text(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
        f"({', '.join(repr(t) for t in ADOPTED.values())})")).all()
    for name, sql in rows:
        if _new_name(name) != name:
            op.execute(sa.text(f'DROP INDEX "{name}"'))
            op.execute(sa.text(sql.replace(name, _new_name(name), 1)))


def _create_tables():

    op.create_table('mail_inbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('transport', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('username', sa.String(length=320), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('create_users', sa.Boolean(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('error_hint', sa.Text(), nullable=True),
    sa.Column('progress_done', sa.Integer(), nullable=False),
    sa.Column('progress_total', sa.Integer(), nullable=False),
    sa.Column('message_count', sa.Integer(), nullable=False),
    sa.Column('last_synced_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['agent.id'], name=op.f('fk_mail_inbox_owner_id_agent'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mail_inbox'))
    )
    with op.batch_alter_table('mail_inbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mail_inbox_email'), ['email'], unique=False)
        batch_op.create_index(batch_op.f('ix_mail_inbox_owner_id'), ['owner_id'], unique=False)

    op.create_table('mail_folder',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('transport', sa.String(length=20), nullable=False),
    sa.Column('inbox_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=1000), nullable=False),
    sa.Column('role', sa.String(length=10), nullable=False),
    sa.Column('message_count', sa.Integer(), nullable=False),
    sa.Column('last_synced_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['inbox_id'], ['mail_inbox.id'], name=op.f('fk_mail_folder_inbox_id_mail_inbox'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mail_folder')),
    sa.UniqueConstraint('id', 'inbox_id', name='uq_mail_folder_id_inbox_id'),
    sa.UniqueConstraint('inbox_id', 'name', name='uq_mail_folder_inbox_name')
    )
    with op.batch_alter_table('mail_folder', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mail_folder_inbox_id'), ['inbox_id'], unique=False)

    op.create_table('mail_sync_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('inbox_id', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('new_messages', sa.Integer(), nullable=False),
    sa.Column('removed_messages', sa.Integer(), nullable=False),
    sa.Column('flagged_messages', sa.Integer(), nullable=False),
    sa.Column('updated_messages', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['inbox_id'], ['mail_inbox.id'], name=op.f('fk_mail_sync_run_inbox_id_mail_inbox'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mail_sync_run'))
    )
    with op.batch_alter_table('mail_sync_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mail_sync_run_inbox_id'), ['inbox_id'], unique=False)

    op.create_table('mail_message',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('inbox_id', sa.Integer(), nullable=False),
    sa.Column('folder_id', sa.Integer(), nullable=False),
    sa.Column('uid', sa.BigInteger(), nullable=False),
    sa.Column('message_id', sa.String(length=998), nullable=True),
    sa.Column('dedup_key', sa.String(length=998), nullable=False),
    sa.Column('direction', sa.String(length=3), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('from_email', sa.String(length=320), nullable=True),
    sa.Column('from_name', sa.String(length=300), nullable=False),
    sa.Column('date', sa.DateTime(timezone=True), nullable=False),
    sa.Column('internal_date', sa.DateTime(timezone=True), nullable=True),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('flags', sa.String(length=500), nullable=False),
    sa.Column('in_reply_to', sa.String(length=998), nullable=True),
    sa.Column('references', sa.Text(), nullable=True),
    sa.Column('auto_submitted', sa.String(length=100), nullable=True),
    sa.Column('precedence', sa.String(length=50), nullable=True),
    sa.Column('list_id', sa.String(length=500), nullable=True),
    sa.Column('list_unsubscribe', sa.Boolean(), nullable=False),
    sa.Column('x_autoreply', sa.Boolean(), nullable=False),
    sa.Column('content_type', sa.String(length=200), nullable=True),
    sa.Column('automated', sa.Boolean(), nullable=False),
    sa.Column('preview', sa.Text(), nullable=True),
    sa.Column('parse_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['folder_id', 'inbox_id'], ['mail_folder.id', 'mail_folder.inbox_id'], name='fk_mail_message_folder_id_inbox_id_mail_folder', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mail_message')),
    sa.UniqueConstraint('folder_id', 'uid', name='uq_mail_message_folder_uid'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('mail_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mail_message_dedup_key'), ['dedup_key'], unique=False)
        batch_op.create_index('ix_mail_message_inbox_date', ['inbox_id', 'date'], unique=False)

    op.create_table('mail_message_address',
    sa.Column('message_pk', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=10), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('inbox_id', sa.Integer(), nullable=False),
    sa.Column('date', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['message_pk'], ['mail_message.id'], name=op.f('fk_mail_message_address_message_pk_mail_message'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('message_pk', 'role', 'email', name=op.f('pk_mail_message_address'))
    )
    with op.batch_alter_table('mail_message_address', schema=None) as batch_op:
        batch_op.create_index('ix_mail_message_address_email_role_date', ['email', 'role', 'date'], unique=False)




def downgrade():

    with op.batch_alter_table('mail_message_address', schema=None) as batch_op:
        batch_op.drop_index('ix_mail_message_address_email_role_date')

    op.drop_table('mail_message_address')
    with op.batch_alter_table('mail_message', schema=None) as batch_op:
        batch_op.drop_index('ix_mail_message_inbox_date')
        batch_op.drop_index(batch_op.f('ix_mail_message_dedup_key'))

    op.drop_table('mail_message')
    with op.batch_alter_table('mail_sync_run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mail_sync_run_inbox_id'))

    op.drop_table('mail_sync_run')
    with op.batch_alter_table('mail_folder', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mail_folder_inbox_id'))

    op.drop_table('mail_folder')
    with op.batch_alter_table('mail_inbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mail_inbox_owner_id'))
        batch_op.drop_index(batch_op.f('ix_mail_inbox_email'))

    op.drop_table('mail_inbox')

