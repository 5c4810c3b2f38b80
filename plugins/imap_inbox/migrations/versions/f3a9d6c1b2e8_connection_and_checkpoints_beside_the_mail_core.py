"""the connection and the checkpoints beside the mail core's inboxes and folders

Stored mail belongs to the mail core now (its revision 2e5a044214fe). What
stays here extends its rows, one for one and with the same ids: imap_inbox
holds an inbox's server, encrypted password and schedule, imap_folder a
folder's UID checkpoint.

Two ways in:
* a database that predates the mail core: the mail core adopted this
  plugin's old tables as its own, columns and all; the IMAP columns move
  here and leave mail_inbox and mail_folder.
* a fresh database: the revisions before this one built the old tables
  (empty, since the mail core already stores the mail); they are dropped.

There is no way back: the old shape is gone with the tables the mail core
owns now.

Revision ID: f3a9d6c1b2e8
Revises: e5c2a7f4b8d1
Create Date: 2026-12-03 15:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = 'f3a9d6c1b2e8'
down_revision = 'e5c2a7f4b8d1'
branch_labels = None
depends_on = None

INBOX_COLUMNS = ('host', 'port', 'security', 'password_encrypted', 'ca_file', 'extra_folders', 'failures',
                 'resync_requested', 'next_sync_at')
FOLDER_COLUMNS = ('uidvalidity', 'uidnext', 'highestmodseq', 'low_uid', 'high_uid', 'announced_uid',
                  'initial_done', 'unreadable')
OLD_TABLES = ('imap_message_address', 'imap_message', 'imap_sync_run', 'imap_folder', 'imap_inbox')


def upgrade():
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if inspector.has_table('imap_message'):
        _drop_empty_old_tables(bind)
    adopted = 'host' in {column['name'] for column in inspector.get_columns('mail_inbox')}
    _create_tables()
    if adopted:
        with op.batch_alter_table('mail_inbox') as batch_op:
            batch_op.drop_index('ix_mail_inbox_next_sync_at')
        _move_columns(bind, 'mail_inbox', 'imap_inbox', INBOX_COLUMNS)
        _move_columns(bind, 'mail_folder', 'imap_folder', FOLDER_COLUMNS)


def downgrade():
    raise RuntimeError('imap_inbox cannot go back before the mail core: its old tables are the mail core\'s now')


def _drop_empty_old_tables(bind):
    for table in OLD_TABLES:
        if bind.execute(sa.text(f'SELECT count(*) FROM {table}')).scalar():
            raise RuntimeError(f'{table} holds rows the mail core did not adopt: nothing was changed')
    for table in OLD_TABLES:
        op.drop_table(table)


def _move_columns(bind, source, target, columns):
    names = ', '.join(('id',) + columns)
    op.execute(sa.text(f'INSERT INTO {target} ({names}) SELECT {names} FROM {source}'))
    with op.batch_alter_table(source) as batch_op:
        for column in columns:
            batch_op.drop_column(column)


def _create_tables():
    op.create_table('imap_inbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('security', sa.String(length=10), nullable=False),
    sa.Column('password_encrypted', sa.LargeBinary(), nullable=False),
    sa.Column('ca_file', sa.String(length=1000), nullable=True),
    sa.Column('extra_folders', sa.JSON(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('resync_requested', sa.Boolean(), nullable=False),
    sa.Column('next_sync_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['id'], ['mail_inbox.id'], name=op.f('fk_imap_inbox_id_mail_inbox'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_imap_inbox'))
    )
    with op.batch_alter_table('imap_inbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_imap_inbox_next_sync_at'), ['next_sync_at'], unique=False)

    op.create_table('imap_folder',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=True),
    sa.Column('uidnext', sa.BigInteger(), nullable=True),
    sa.Column('highestmodseq', sa.BigInteger(), nullable=True),
    sa.Column('low_uid', sa.BigInteger(), nullable=True),
    sa.Column('high_uid', sa.BigInteger(), nullable=False),
    sa.Column('announced_uid', sa.BigInteger(), nullable=True),
    sa.Column('initial_done', sa.Boolean(), nullable=False),
    sa.Column('unreadable', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['id'], ['mail_folder.id'], name=op.f('fk_imap_folder_id_mail_folder'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_imap_folder'))
    )
