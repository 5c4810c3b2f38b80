"""Hook implementations of imap_inbox (see host_app/hookspecs.py)."""
from __future__ import annotations

from host_app import hookimpl
from host_app.api import RecurringJob, SettingsPage

from . import (
    models,  # noqa: F401  (registers the plugin's tables)
    )
from .attachment_listing import on_mailbox_synced
from .cli import inboxes_group
from .events import EVENT_TYPES
from .jobs import schedule_due_syncs
from .message_source import fetch_source, stream_part
from .notices import page_notices as inbox_notices
from .oauth_views import bp as oauth_bp
from .owner_views import bp as owner_bp
from .views import bp
from .watcher.command import watch_command


@hookimpl
def register_blueprints(app):
    return [bp, oauth_bp, owner_bp]


@hookimpl
def settings_pages(app):
    return [SettingsPage("Connected inboxes", "imap_inbox.inbox_list",
                         "Team mailboxes synced read-only over IMAP onto contact timelines.")]


@hookimpl
def page_notices(app, agent):
    return inbox_notices(agent)


@hookimpl
def register_commands(cli, app):
    cli.add_command(inboxes_group(app))
    cli.add_command(watch_command)


@hookimpl
def recurring_jobs(app):
    return [RecurringJob("imap_inbox: enqueue due inbox syncs", schedule_due_syncs, 60,
                         "Enqueues a sync of every enabled inbox whose next sync time has come.")]


@hookimpl
def background_commands(app):
    return ["watch"]  # live inboxes: new mail synced within seconds (IMAP IDLE)


@hookimpl
def event_types(app):
    return list(EVENT_TYPES)


@hookimpl
def mailbox_synced(app, inbox_id, run_id):
    # Attachments are listed after the sync, so the metadata sync stays as fast (attachment_listing.py).
    on_mailbox_synced(inbox_id, run_id)


@hookimpl
def fetch_message_source(app, message):
    return fetch_source(message)


@hookimpl
def open_message_part(app, message, section):
    return stream_part(message, section)
