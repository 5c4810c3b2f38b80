"""Hook implementations of reply_condition (see host_app/hookspecs.py)."""
from __future__ import annotations

import click
from flask.cli import AppGroup

from host_app import hookimpl
from host_app.api import EventType

from . import models  # noqa: F401  (registers the plugin's tables)
from .condition import RepliedCondition
from .jobs import on_mailbox_synced
from .matcher import rebuild
from .replied import CONTACT_REPLIED


@hookimpl
def event_types(app):
    return [EventType(CONTACT_REPLIED, "Contact replied to our e-mail")]


@hookimpl
def automation_conditions(app):
    return [RepliedCondition()]


@hookimpl
def mailbox_synced(app, inbox_id, run_id, new_messages, removed_messages):
    """After each sync, enqueue the matching of the responses it brought (a job of its own)."""
    on_mailbox_synced(inbox_id, run_id, new_messages, removed_messages)


@hookimpl
def register_commands(cli):
    group = AppGroup("reply-condition", help="Responses to our e-mails (the 'IMAP email' condition).")

    @group.command("rebuild")
    def rebuild_command():
        """Forget the stored responses and find them again in every synced message (no events)."""
        count = rebuild()
        click.echo(f"{count} responses stored", err=True)

    cli.add_command(group)
