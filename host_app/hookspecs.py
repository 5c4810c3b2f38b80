"""The whole plugin contract of the CRM host.

Every hook a plugin can implement is declared here, grouped by what it is for.
Plugins implement hooks with :data:`hookimpl` (also exported as
``host_app.hookimpl``)::

    from host_app import hookimpl

    @hookimpl
    def settings_pages(app):
        return [SettingsPage("Connected inboxes", "imap_inbox.inbox_list")]

Rules that keep plugins working across host versions:

* Hooks are always called with keyword arguments; an implementation may take
  fewer arguments than the spec, so new arguments may be added later, never
  removed or renamed.
* Hooks returning lists are called on every plugin and the results are
  concatenated (``None`` is ignored). Only hooks marked ``firstresult`` stop at
  the first non-``None`` answer, and they say so.
* The value types (``SettingsPage``, ``TimelineEntry``, ``Condition`` ...) live
  in :mod:`host_app.api`.

Each hook is documented with a runnable example in ``docs/plugins.md``; the
test suite fails when a hook here is missing there or has no test.
"""
from __future__ import annotations

import pluggy

PROJECT_NAME = "host_app"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# ---------------------------------------------------------------------------
# Plumbing: routes, commands, jobs
# ---------------------------------------------------------------------------


@hookspec
def register_blueprints(app):
    """Return Flask blueprints (a list, or one) that the host registers on ``app``.

    Called once while the app is built, after the plugin's models are imported.
    Returns ``list[flask.Blueprint]``. The routes vanish when the plugin is
    disabled because the blueprint is then never registered.
    """


@hookspec
def register_commands(cli, app):
    """Add click commands or groups to the ``manage.py`` command group ``cli``.

    Called once while the app is built. ``cli`` is ``app.cli`` (a
    ``flask.cli.AppGroup``); return value is ignored.
    """


@hookspec
def recurring_jobs(app):
    """Return jobs the host must run on a schedule: ``list[RecurringJob]``.

    Called by the scheduler (``manage.py scheduler``/``manage.py run``) when it
    starts. Each job is an importable module-level function taking no
    arguments, run inside an app context on an RQ worker.
    """


@hookspec
def background_commands(app):
    """Return ``manage.py`` commands that ``manage.py run`` starts beside the worker: ``list[str]``.

    Each name is a command the plugin registers (``register_commands``) that
    runs until SIGTERM, e.g. a process holding connections open. Production
    deployments run them as services of their own (docs/deployment.md).
    """


@hookspec(historic=True)
def add_hookspecs(pluginmanager):
    """Declare hooks of the plugin's own, for the plugins that depend on it (as pytest's ``pytest_addhooks``).

    Called once for each plugin as it is registered, before the plugins that
    depend on it. Call ``pluginmanager.add_hookspecs(module)`` with a module of
    functions marked ``@hookspec`` (:data:`hookspec`); the plugin documents
    them and calls them, and the plugins implementing them name it in their
    manifest's ``depends``. The same rules hold as for the host's hooks:
    keyword arguments, only ever added. Return value is ignored.
    """


@hookspec
def app_ready(app):
    """Called once when the app is fully built (all plugins registered).

    Use it for set-up that needs other plugins or configuration, e.g. template
    filters or context processors. Return value is ignored.
    """


# ---------------------------------------------------------------------------
# User interface
# ---------------------------------------------------------------------------


@hookspec
def settings_pages(app):
    """Return pages the plugin adds under Settings: ``list[SettingsPage]``.

    Called on every request that renders the Settings menu. Pages are
    admin-only unless ``SettingsPage.admin_only`` is ``False``.
    """


@hookspec
def page_notices(app, agent):
    """Return notices shown at the top of every page for the signed-in ``agent``: ``list[PageNotice]``.

    Called once per page an agent sees signed in (never for JSON or files), so
    answer with one small query at most. ``agent`` is a
    :class:`host_app.models.Agent`; show each agent only what they may see
    (``agent.is_admin``). Text is plain and escaped by the host.
    """


@hookspec
def contact_panels(app, contact):
    """Return extra HTML panels for a contact page: ``list[ContactPanel]``.

    Called when a contact page is rendered. ``contact`` is a
    :class:`host_app.models.Contact`. HTML must already be escaped.
    """


# ---------------------------------------------------------------------------
# Contacts and their timeline
# ---------------------------------------------------------------------------


@hookspec
def timeline_entries(app, contact, before, limit, filters):
    """Return up to ``limit`` timeline entries of ``contact`` older than ``before``.

    ``before`` is a timezone-aware ``datetime`` or ``None`` for the newest
    page. Returns ``list[TimelineEntry]``, newest first. The host merges the
    answers of every enabled plugin, newest first, and pages through them
    by date. ``filters`` maps the chosen ``timeline_filters`` (``direction``:
    ``"in"`` or ``"out"``, and the plugins' own) to their values; leave out
    what does not match so a page stays full (the host drops it anyway).
    """


@hookspec
def timeline_filters(app, contact):
    """Return choices shown above ``contact``'s timeline: ``list[TimelineFilter]``.

    The host always offers ``direction`` (all / received / sent). A filter's
    ``name`` is a key of the ``details`` of the entries it selects.
    """


@hookspec
def contact_search_matches(app, query):
    """Return ids of contacts that the contacts list's search ``query`` finds in the plugin's own data: ``list[int]``.

    Called when the contacts list is searched (the page and ``manage.py
    contacts list --search``), beside the host's own match on name and
    e-mail; the list shows the contacts either finds. ``query`` is what the
    user typed, unparsed. Return at most a few thousand ids, best matches
    first (the mail core: contacts with an e-mail containing every word).
    """


@hookspec
def contact_providers(app):
    """Return sources of people the CRM may turn into contacts: ``list[ContactProvider]``.

    Called by importers (e.g. the contacts_import plugin). A provider lists its
    sources (one per mailbox, address book ...) and the people found in each.
    """


@hookspec
def contact_created(app, contacts):
    """Called after contacts were created (by the UI, the CLI or an importer).

    ``contacts`` is a list of :class:`host_app.models.Contact`. Return value
    is ignored.
    """


# ---------------------------------------------------------------------------
# Automations: events, conditions, actions
# ---------------------------------------------------------------------------


@hookspec
def event_types(app):
    """Return the events (automation triggers) this plugin emits: ``list[EventType]``.

    Called when the automation builder is shown and when an event is emitted;
    only declared event types can be emitted.
    """


@hookspec
def automation_conditions(app):
    """Return automation conditions this plugin offers: ``list[Condition]``.

    A condition has a unique ``key``, a ``label``, a WTForms parameter form,
    ``evaluate(contact, params)`` for one contact and optionally
    ``evaluate_bulk(contact_ids, params)`` for many. The engine only calls
    ``evaluate_bulk``: with an event's contacts, with the contacts whose wait
    is over (plus ``occurrences=`` when it declares that parameter), and with
    a whole audience, up to every contact, in runs by hand and on a schedule;
    so write it as one set-based query (docs/writing-condition-plugins.md).
    """


@hookspec
def automation_actions(app):
    """Return automation actions this plugin offers: ``list[Action]``.

    An action has a unique ``key``, a ``label``, a WTForms parameter form and
    ``run(contact, params)``. The host ships add tag, remove tag and set
    attribute.
    """


@hookspec
def automation_audiences(app):
    """Return the groups of contacts an automation can be run over by hand: ``list[Audience]``.

    Called when the "Run now" page is shown and when a run starts. The host
    offers all contacts, a tag and an owner; a plugin adds groups only it
    knows about (the mail core: the correspondents of one inbox).
    """


@hookspec
def event_emitted(app, event):
    """Called for every emitted event, before the automations it triggers run.

    ``event`` is a :class:`host_app.api.Event`. Listeners may create the
    contacts that automations then act on (use ``tryfirst=True`` to run before
    other listeners). Return value is ignored; exceptions are logged, never
    raised to the emitter.
    """
