"""Create users on every transport's inbox form, ``connect`` command and listing, through the mail core's hooks.

The setting is kept in this plugin's table (``ImportState.create_users``), so
the checkbox, the ``--create-users`` flag and the ``create_users`` key of
``inboxes list --json`` exist exactly while this plugin is enabled.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
import sqlalchemy as sa
from wtforms import BooleanField

from host_app.api import db, member_of
from plugins.mail.mailbox_settings import MailboxDetail, MailboxField

from .models import ImportState

CREATE_USERS = "create_users"
CREATE_USERS_WARNING = (
    "Contacts will be created from the people in this mailbox (senders and recipients), "
    "skipping no-reply addresses, mailing lists and your own team."
)


def create_users_on(inbox_id: int) -> bool:
    state = db.session.get(ImportState, inbox_id)
    return bool(state and state.create_users)


def form_fields(inbox_id: int | None) -> list[MailboxField]:
    current = inbox_id is not None and create_users_on(inbox_id)
    return [MailboxField(CREATE_USERS, BooleanField("Create users", description=CREATE_USERS_WARNING,
                                                    default=current))]


def cli_options() -> list[click.Option]:
    return [click.Option(["--create-users"], is_flag=True,
                         help="Create contacts from the mailbox's correspondents.")]


def save(inbox_id: int, values: Mapping[str, Any]) -> list[str]:
    """Store Create users when ``values`` has it (uncommitted); ``["create_users"]`` when it changed."""
    if CREATE_USERS not in values:
        return []
    on = bool(values[CREATE_USERS])
    state = db.session.get(ImportState, inbox_id)
    if state is None:
        if not on:
            return []  # off is what an inbox without a state means
        db.session.add(ImportState(inbox_id=inbox_id, create_users=True))
        return [CREATE_USERS]
    if state.create_users == on:
        return []
    state.create_users = on
    return [CREATE_USERS]


def details(inbox_ids: list[int]) -> list[MailboxDetail]:
    on = set(db.session.scalars(
        sa.select(ImportState.inbox_id).where(member_of(ImportState.inbox_id, inbox_ids), ImportState.create_users)))
    return [MailboxDetail(inbox_id, CREATE_USERS, inbox_id in on, note="creates contacts" if inbox_id in on else None)
            for inbox_id in inbox_ids]
