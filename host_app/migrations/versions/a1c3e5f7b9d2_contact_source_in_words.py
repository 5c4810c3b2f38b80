"""a contact added by hand reads so: its source 'manual' becomes 'added by hand'

What agents read on the contact page, the contacts list and `contacts list
--json`. Downgrading writes 'manual' back.

Revision ID: a1c3e5f7b9d2
Revises: 9768618c5b70
Create Date: 2026-12-04 22:10:00
"""
from alembic import op


revision = 'a1c3e5f7b9d2'
down_revision = '9768618c5b70'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("UPDATE contact SET source = 'added by hand' WHERE source = 'manual'")


def downgrade():
    op.execute("UPDATE contact SET source = 'manual' WHERE source = 'added by hand'")
