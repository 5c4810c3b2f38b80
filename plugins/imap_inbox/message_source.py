"""A stored message's source read from its IMAP folder when somebody opens it (the mail core's
``fetch_message_source`` hook).

Read-only like the sync: EXAMINE, then UID FETCH BODY.PEEK[] (the \\Seen flag
is never set). The folder's UIDVALIDITY must still be the one the message was
stored under, else its UID may name another message now.
"""
from __future__ import annotations

import imaplib

from imapclient import exceptions as imap_exceptions

from host_app.api import db
from plugins.mail.models import Message
from plugins.mail.source import MessageGone, SourceUnavailable

from .account import settings_for
from .connection import ImapConnectError, classify_error, close, connect
from .crypto import EncryptionKeyError
from .models import ImapFolder, ImapInbox

SERVER_ERRORS = (OSError, EOFError, imaplib.IMAP4.error, imap_exceptions.IMAPClientError)
_SOURCE_ITEM = b"BODY[]"


def fetch_source(message: Message) -> bytes | None:
    """The message's source from its server; None when the message is not in an IMAP inbox."""
    inbox = db.session.get(ImapInbox, message.inbox_id)
    folder = db.session.get(ImapFolder, message.folder_id)
    if inbox is None or folder is None:
        return None
    if message.uid <= 0:  # parked while its folder is read again after a UIDVALIDITY change
        raise MessageGone()
    try:
        settings = settings_for(inbox)
    except EncryptionKeyError:
        raise SourceUnavailable("The inbox's password cannot be decrypted with the configured keys; an admin "
                                "must enter it again.") from None
    try:
        client = connect(settings)
    except ImapConnectError as exc:
        raise SourceUnavailable(f"The mail server could not be reached to open this e-mail: {exc.message}") from None
    try:
        try:
            selected = client.select_folder(folder.name, readonly=True)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            raise MessageGone() from None  # the folder is gone or renamed
        uidvalidity = selected.get(b"UIDVALIDITY")
        if isinstance(uidvalidity, (list, tuple)):
            uidvalidity = uidvalidity[0] if uidvalidity else None
        if uidvalidity is not None and folder.uidvalidity is not None and int(uidvalidity) != folder.uidvalidity:
            raise MessageGone()
        typ, data = client._imap.uid("FETCH", str(int(message.uid)), "(UID BODY.PEEK[])")
        if typ != "OK":
            raise SourceUnavailable("The mail server refused to send this e-mail; try again later.")
        for item in data or ():
            # One UID asked for: its one literal is the source (a message gone from the server sends none).
            if isinstance(item, tuple) and _SOURCE_ITEM in item[0]:
                return item[1]
        raise MessageGone()
    except SERVER_ERRORS as exc:
        problem = classify_error(exc, settings)
        raise SourceUnavailable(f"The mail server stopped answering while sending this e-mail: {problem.message}") \
            from None
    finally:
        close(client)
