"""Hooks the mail core declares for the plugins that read mail (added through the host's ``add_hookspecs``).

Transports call them through :mod:`plugins.mail.notify` once what they
describe is committed; readers such as ``contacts_import`` and
``reply_condition`` implement them with ``host_app.hookimpl`` and name
``mail`` in their manifest's ``depends``. As with the host's hooks, calls use
keyword arguments, an implementation takes only those it needs, and
arguments are only ever added. The ``mailbox_*`` hooks are announcements:
return values are ignored, and an implementation that raises is logged and
never fails the sync. ``fetch_message_source`` and ``open_message_part`` are
the other way round: the mail core asks, and the one transport holding the
message answers (``firstresult``). Each is documented with a runnable example in
``docs/plugins.md``.
"""
from __future__ import annotations

from host_app.hookspecs import hookspec


@hookspec
def mailbox_synced(app, inbox_id, run_id, status, new_messages, removed_messages):
    """Called after a sync run of an inbox ended, its mail committed.

    ``inbox_id`` names the inbox, ``run_id`` its ``SyncRun``; ``status`` is
    ``"ok"`` or ``"failed"`` (a failed run may still have stored batches);
    ``new_messages`` and ``removed_messages`` count what the run stored and
    removed. Called in the worker that ran the sync: heavy work belongs on a
    job of its own.
    """


@hookspec
def mailbox_settings_changed(app, inbox_id, changed):
    """Called after a change to an inbox's settings was saved.

    ``changed`` is the sorted list of the names of the settings that changed
    (``create_users``, ``username``, ``email``, ``enabled``, ``password`` ...),
    never their values.
    """


@hookspec(firstresult=True)
def fetch_message_source(app, message):
    """Return the full RFC 5322 source (``bytes``) of a stored message, read from its mailbox; ``None`` when
    the message belongs to another transport.

    ``message`` is a ``plugins.mail.models.Message`` (``inbox_id``, ``folder_id``, ``uid``). Called when
    somebody opens an e-mail (the result is cached for a few minutes by ``plugins.mail.source``). The
    mailbox stays untouched: read with the transport's read-only means (IMAP: EXAMINE and BODY.PEEK).
    Raise ``plugins.mail.source.MessageGone`` when the mailbox no longer has it and
    ``plugins.mail.source.SourceUnavailable`` with plain words when it cannot be read now.
    """


@hookspec(firstresult=True)
def open_message_part(app, message, section):
    """Return the bytes of one MIME part of a stored message, as an iterator of chunks read from the mailbox
    while they are sent on (never the whole part in memory); ``None`` when the message belongs to another
    transport.

    ``section`` is the part's IMAP section number ("2", "1.3"; ``plugins.mail.rendering.leaf_parts``
    names them the same way for any message). The chunks are the part's body as it is in the message, still
    in its Content-Transfer-Encoding: the mail core decodes them. Called when somebody downloads an
    attachment; raises like ``fetch_message_source``.
    """
