"""Hook implementations of contacts_import (see host_app/hookspecs.py)."""
from __future__ import annotations

from host_app import hookimpl
from host_app.api import SettingsPage

from . import models  # noqa: F401  (registers the plugin's tables)


@hookimpl
def contact_providers(app):
    from .provider import MailboxProvider

    return [MailboxProvider()]


@hookimpl(tryfirst=True)
def event_emitted(app, event):
    """Before other listeners and automations act on a sync, its new correspondents are contacts;
    switching Create users on (wherever it happens) imports the whole mailbox."""
    from .jobs import INBOX_SETTINGS_CHANGED, INBOX_SYNCED, on_inbox_settings_changed, on_inbox_synced

    if event.type == INBOX_SYNCED:
        on_inbox_synced(event)
    elif event.type == INBOX_SETTINGS_CHANGED:
        on_inbox_settings_changed(event)


@hookimpl
def settings_pages(app):
    return [SettingsPage("Contacts import", "contacts_import.settings",
                         "Create users: turn the people in connected inboxes into contacts, without junk.")]


@hookimpl
def register_blueprints(app):
    from .views import bp

    return [bp]


@hookimpl
def register_commands(cli, app):
    from .cli import import_command

    cli.commands["contacts"].add_command(import_command)
