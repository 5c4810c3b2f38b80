"""Hook implementations of contacts_import (see host_app/hookspecs.py)."""
from __future__ import annotations

from host_app import hookimpl
from host_app.api import SettingsPage

from . import (
    mailbox_setting,
    models,  # noqa: F401  (registers the plugin's tables)
)
from .cli import import_command
from .jobs import on_mailbox_settings_changed, on_mailbox_synced
from .views import bp


@hookimpl(tryfirst=True)
def mailbox_synced(app, inbox_id, run_id, new_messages):
    """Enqueue the import of the sync's new correspondents; tryfirst, so the other readers' jobs wait for it."""
    on_mailbox_synced(inbox_id, run_id, new_messages)


@hookimpl
def mailbox_settings_changed(app, inbox_id, changed):
    """Create users switched on (wherever it happens): import the whole mailbox."""
    on_mailbox_settings_changed(inbox_id, changed)


@hookimpl
def mailbox_form_fields(app, inbox_id):
    return mailbox_setting.form_fields(inbox_id)


@hookimpl
def mailbox_cli_options(app):
    return mailbox_setting.cli_options()


@hookimpl
def save_mailbox_settings(app, inbox_id, values):
    return mailbox_setting.save(inbox_id, values)


@hookimpl
def mailbox_details(app, inbox_ids):
    return mailbox_setting.details(inbox_ids)


@hookimpl
def settings_pages(app):
    return [SettingsPage("Contacts import", "contacts_import.settings",
                         "Create users: turn the people in connected inboxes into contacts, without junk.")]


@hookimpl
def register_blueprints(app):
    return [bp]


@hookimpl
def register_commands(cli, app):
    cli.commands["contacts"].add_command(import_command)
