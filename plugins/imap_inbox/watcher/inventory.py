"""What the watcher reads from and writes to the database (always in an app context, off the event loop)."""
from __future__ import annotations

import hashlib
import logging
import sys

from host_app.api import db
from plugins.mail import models as mail_models

from ..account import settings_for
from ..connection import ConnectionSettings, ImapConnectError
from ..models import ImapFolder, ImapInbox

log = logging.getLogger(__name__)

# An inbox that needs an admin (wrong password...) or is disabled is not watched: logging in again and
# again would only hammer the server. Saving new settings changes its status, and the watch starts again.
NOT_WATCHED = (mail_models.NEEDS_ATTENTION, mail_models.DISABLED)


def watchable() -> dict[int, str]:
    """{inbox id: fingerprint of its connection settings} of every inbox to watch.

    The fingerprint changes when the server, the user name, the (encrypted) password, the sign-in method
    or the Sent folder (found by the first sync) does, so a watch runs with what is saved now; no password
    is decrypted here. A refresh token the service rotated is not in it: a watch reads the stored one
    whenever it renews its access token (account.settings_for).
    """
    rows = db.session.execute(
        db.select(ImapInbox.id, ImapInbox.host, ImapInbox.port, ImapInbox.security, ImapInbox.username,
                  ImapInbox.ca_file, ImapInbox.password_encrypted, ImapInbox.auth, ImapInbox.oauth_provider)
        .where(ImapInbox.enabled.is_(True), ImapInbox.status.notin_(NOT_WATCHED))
    ).all()
    sent = sent_folders()
    found = {}
    for inbox_id, *fields in rows:
        digest = hashlib.sha256()
        for field in (*fields, sent.get(inbox_id)):
            digest.update(field if isinstance(field, bytes) else str(field).encode())
            digest.update(b"\0")
        found[inbox_id] = digest.hexdigest()[:16]
    return found


def sent_folders() -> dict[int, str]:
    """{inbox id: name of its Sent folder} for the inboxes whose sync found one."""
    return dict(db.session.execute(
        db.select(ImapFolder.inbox_id, ImapFolder.name).where(ImapFolder.role == mail_models.ROLE_SENT)).all())


def connection_settings(inbox_ids: list[int], timeout: float) -> dict[int, ConnectionSettings]:
    """The inboxes' settings with their passwords decrypted, in this process only; gone ones left out.

    One query for all: a watcher starting a thousand watches must not spend a heartbeat on it.
    """
    found = {}
    for start in range(0, len(inbox_ids), 500):
        chunk = inbox_ids[start:start + 500]
        for inbox in db.session.scalars(db.select(ImapInbox).where(ImapInbox.id.in_(chunk))):
            if inbox.enabled:
                try:
                    settings = settings_for(inbox, timeout=timeout)
                except ImapConnectError as exc:  # its sign-in service is no longer set up: its sync says so
                    log.warning("inbox %s is not watched: %s", inbox.id, exc.message)
                    continue
                # Held for as long as the watch runs: inboxes on one server with one uploaded CA share one
                # copy of each (a PEM is about a kilobyte a watch otherwise).
                settings.host = sys.intern(settings.host)
                if settings.ca_pem:
                    settings.ca_pem = sys.intern(settings.ca_pem)
                found[inbox.id] = settings
    return found


def mark_needs_attention(inbox_id: int, error: ImapConnectError) -> None:
    """What a sync would do with the same refusal: the admin sees why; no retries until settings change."""
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is None or not inbox.enabled or inbox.status in NOT_WATCHED:
        return
    inbox.status = mail_models.NEEDS_ATTENTION
    inbox.error = error.message
    inbox.error_hint = error.hint
    inbox.next_sync_at = None
    db.session.commit()
