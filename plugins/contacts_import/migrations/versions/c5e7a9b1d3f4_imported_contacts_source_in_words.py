"""imported contacts' source in words: 'imap_inbox:3 (mailbox of Sam)' becomes "from Sam's mailbox"

The label named the inbox by its id, which means nothing to an agent and
nothing at all once that inbox is deleted. Labels are rewritten as
plugins.mail.people.source_label now writes them: "from <owner>'s mailbox",
or "from the mailbox <address>" for an inbox without an owner. A bare
'imap_inbox:<id>' (no name kept) becomes 'from a connected mailbox'.
Downgrading leaves the words: the ids they came from are not kept.

Revision ID: c5e7a9b1d3f4
Revises: ea013be41c7c
Create Date: 2026-12-04 22:10:00
"""
import re

from alembic import op
import sqlalchemy as sa


revision = 'c5e7a9b1d3f4'
down_revision = 'ea013be41c7c'
branch_labels = None
depends_on = None

OWNED = re.compile(r"^imap_inbox:\d+ \(mailbox of (.+)\)$", re.DOTALL)
ADDRESSED = re.compile(r"^imap_inbox:\d+ \((.+)\)$", re.DOTALL)
BARE = re.compile(r"^imap_inbox:\d+$")


def in_words(label):
    match = OWNED.match(label)
    if match:
        return f"from {match.group(1)}'s mailbox"[:200]
    match = ADDRESSED.match(label)
    if match:
        return f"from the mailbox {match.group(1)}"[:200]
    if BARE.match(label):
        return "from a connected mailbox"
    return None


def upgrade():
    connection = op.get_bind()
    contact = sa.table('contact', sa.column('source', sa.String))
    labels = connection.execute(
        sa.select(contact.c.source).where(contact.c.source.like('imap\\_inbox:%', escape='\\')).distinct()
    ).scalars().all()
    for label in labels:  # one UPDATE per distinct label: a few per inbox, however many contacts
        words = in_words(label)
        if words is not None:
            connection.execute(sa.update(contact).where(contact.c.source == label).values(source=words))


def downgrade():
    pass
