"""Hook implementations of the mail core (see host_app/hookspecs.py)."""
from __future__ import annotations

from host_app import hookimpl

from . import (
    audience,
    hookspecs,
    models,  # noqa: F401  (registers the plugin's tables)
    people,
    search,
    search_views,
    timeline,
)
from .cli import messages_cli
from .views import bp


@hookimpl
def add_hookspecs(pluginmanager):
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def timeline_entries(app, contact, before, limit, filters):
    return timeline.timeline_entries(contact, before, limit, filters)


@hookimpl
def timeline_filters(app, contact):
    return [timeline.inbox_filter()]


@hookimpl
def contact_search_matches(app, query):
    return search.contact_ids_matching(query)


@hookimpl
def contact_panels(app, contact):
    return [search_views.contact_search_panel(contact)]


@hookimpl
def contact_providers(app):
    return [people.MailboxProvider()]


@hookimpl
def automation_audiences(app):
    return [audience.InboxCorrespondents()]


@hookimpl
def register_blueprints(app):
    return [bp, search_views.bp]


@hookimpl
def register_commands(cli, app):
    cli.add_command(messages_cli)
