"""Hooks the mail core declares for the plugins that read mail (added through the host's ``add_hookspecs``).

Three kinds. Transports call ``mailbox_synced`` and ``mailbox_settings_changed``
through :mod:`plugins.mail.notify` once what they describe is committed; their
return values are ignored, and an implementation that raises is logged and
never fails the sync. The ``mailbox_form_fields`` ... ``mailbox_details``
hooks let a plugin keep settings of its own per mailbox, on any transport's
connect and edit form and command line; transports call them through
:mod:`plugins.mail.mailbox_settings`, and they return lists, concatenated over
the plugins. Readers such as ``contacts_import`` and ``reply_condition``
implement them with ``host_app.hookimpl`` and name ``mail`` in their
manifest's ``depends``. As with the host's hooks, calls use keyword arguments,
an implementation takes only those it needs, and arguments are only ever
added. ``fetch_message_source`` and ``open_message_part`` are the other way
round: the mail core asks, and the one transport holding the message answers
(``firstresult``). Each is documented with a runnable example in
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
    never their values: the transport's own and those ``save_mailbox_settings``
    reported.
    """


@hookspec
def mailbox_form_fields(app, inbox_id):
    """Return settings this plugin keeps per mailbox, as fields of a transport's connect and edit form.

    Returns ``list[MailboxField]`` (:mod:`plugins.mail.mailbox_settings`): a
    name and an unbound WTForms field with its label, description (the help
    shown under it) and validators. ``inbox_id`` is the mailbox being edited,
    or ``None`` on the connect form; the field's ``default`` is what the form
    shows, so give it the mailbox's current value. What is submitted reaches
    ``save_mailbox_settings`` under the field's name.
    """


@hookspec
def mailbox_cli_options(app):
    """Return the same settings as ``click.Option`` objects for a transport's ``connect`` command.

    Returns ``list[click.Option]``; the option's name (``--create-users``
    gives ``create_users``) is the setting's name in ``save_mailbox_settings``.
    Called once while the app's commands are built.
    """


@hookspec
def save_mailbox_settings(app, inbox_id, values):
    """Store this plugin's settings of mailbox ``inbox_id`` from a submitted form or command.

    ``values`` maps every contributed setting's name to its value, other
    plugins' too: take yours and leave a setting that is absent as it is.
    Called after the transport saved the mailbox (``inbox_id`` exists) and
    before it commits: add and change rows in ``db.session`` without
    committing, so the mailbox and its settings are saved together or not at
    all (an exception here fails the save). Returns ``list[str]``, the names of the settings that changed; on an
    edit the transport passes them on to ``mailbox_settings_changed``.
    """


@hookspec
def mailbox_details(app, inbox_ids):
    """Return what this plugin keeps about these mailboxes, for listings such as ``inboxes list --json``.

    Returns ``list[MailboxDetail]`` (:mod:`plugins.mail.mailbox_settings`):
    an inbox id, a key and a JSON-ready value, and optionally a ``note``, a
    few words a transport's list page shows beside the mailbox. One call for
    all the listed mailboxes, so answer with one query. Never a secret.
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
