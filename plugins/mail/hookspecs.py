"""Hooks the mail core declares for the plugins that read mail (added through the host's ``add_hookspecs``).

Transports call them through :mod:`plugins.mail.notify` once what they
describe is committed; readers such as ``contacts_import`` and
``reply_condition`` implement them with ``host_app.hookimpl`` and name
``mail`` in their manifest's ``depends``. As with the host's hooks, calls use
keyword arguments, an implementation takes only those it needs, and
arguments are only ever added. No hook here is ``firstresult``; return values
are ignored, and an implementation that raises is logged and never fails the
sync. Each is documented with a runnable example in ``docs/plugins.md``.
"""
from __future__ import annotations

from host_app.hookspecs import hookspec


@hookspec
def mailbox_synced(app, inbox_id, run_id, status, new_messages, removed_messages):
    """Called after a sync run of an inbox ended, its mail committed.

    ``inbox_id`` names the inbox, ``run_id`` its ``SyncRun``; ``status`` is
    ``"ok"`` or ``"failed"`` (a failed run may still have stored batches);
    ``new_messages`` and ``removed_messages`` count what the run stored and
    removed. Called inside the sync's job, before the inbox's next run can
    start: an implementation only decides whether there is work and enqueues
    a follow-up job of its own (``plugins.mail.followups.enqueue_follow_up``),
    so the sync ends at once and a reader's failure is its job's, not the sync's.
    """


@hookspec
def mailbox_settings_changed(app, inbox_id, changed):
    """Called after a change to an inbox's settings was saved.

    ``changed`` is the sorted list of the names of the settings that changed
    (``create_users``, ``username``, ``email``, ``enabled``, ``password`` ...),
    never their values.
    """
