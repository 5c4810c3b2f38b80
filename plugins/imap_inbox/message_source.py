"""A stored message read from its IMAP folder when somebody opens it or downloads an attachment (the mail
core's ``fetch_message_source`` and ``open_message_part`` hooks).

Read-only like the sync: EXAMINE, then UID FETCH BODY.PEEK (the \\Seen flag
is never set). The folder's UIDVALIDITY must still be the one the message was
stored under, else its UID may name another message now. A part is read in
slices (``BODY.PEEK[2]<offset.length>``), each sent on before the next is
asked for, so a large attachment never sits whole in memory.
"""
from __future__ import annotations

import contextlib
import imaplib
import re
from collections.abc import Iterator

from imapclient import IMAPClient
from imapclient import exceptions as imap_exceptions

from host_app.api import db
from plugins.mail.models import Message
from plugins.mail.source import MessageGone, SourceUnavailable

from .account import settings_for
from .connection import ConnectionSettings, ImapConnectError, classify_error, close, connect
from .crypto import EncryptionKeyError
from .models import ImapFolder, ImapInbox

SERVER_ERRORS = (OSError, EOFError, imaplib.IMAP4.error, imap_exceptions.IMAPClientError)
PART_SLICE_BYTES = 1024 * 1024
_SECTION_RE = re.compile(r"^[1-9][0-9]{0,3}(\.[1-9][0-9]{0,3}){0,20}$")


@contextlib.contextmanager
def examined_folder(settings: ConnectionSettings, folder_name: str, uidvalidity: int | None) -> Iterator[IMAPClient]:
    """A connection with the message's folder open read-only; server trouble becomes SourceUnavailable."""
    try:
        client = connect(settings)
    except ImapConnectError as exc:
        raise SourceUnavailable(f"The mail server could not be reached: {exc.message}") from None
    try:
        try:
            selected = client.select_folder(folder_name, readonly=True)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            raise MessageGone() from None  # the folder is gone or renamed
        current = selected.get(b"UIDVALIDITY")
        if isinstance(current, (list, tuple)):
            current = current[0] if current else None
        if current is not None and uidvalidity is not None and int(current) != uidvalidity:
            raise MessageGone()
        yield client
    except SERVER_ERRORS as exc:
        problem = classify_error(exc, settings)
        raise SourceUnavailable(f"The mail server stopped answering: {problem.message}") from None
    finally:
        close(client)


def _where(message: Message) -> tuple[ConnectionSettings, str, int | None] | None:
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
    return settings, folder.name, folder.uidvalidity


def _literal(data, item: bytes) -> bytes | None:
    # One UID asked for: its one literal is the answer (a message gone from the server sends none).
    for entry in data or ():
        if isinstance(entry, tuple) and item in entry[0]:
            return entry[1]
    return None


def fetch_source(message: Message) -> bytes | None:
    """The message's source from its server; None when the message is not in an IMAP inbox."""
    where = _where(message)
    if where is None:
        return None
    with examined_folder(*where) as client:
        typ, data = client._imap.uid("FETCH", str(int(message.uid)), "(UID BODY.PEEK[])")
        if typ != "OK":
            raise SourceUnavailable("The mail server refused to send this e-mail; try again later.")
        source = _literal(data, b"BODY[]")
        if source is None:
            raise MessageGone()
        return source


def stream_part(message: Message, section: str) -> Iterator[bytes] | None:
    """The chunks of one part of the message as the server holds it (transfer-encoded), slice by slice."""
    if not _SECTION_RE.match(section):
        raise ValueError(f"not an IMAP section number: {section[:40]!r}")
    where = _where(message)
    if where is None:
        return None
    return _slices(where, int(message.uid), section)


def _slices(where, uid: int, section: str) -> Iterator[bytes]:
    with examined_folder(*where) as client:
        offset = 0
        while True:
            typ, data = client._imap.uid("FETCH", str(uid), f"(UID BODY.PEEK[{section}]<{offset}.{PART_SLICE_BYTES}>)")
            if typ != "OK":
                raise SourceUnavailable("The mail server refused to send this attachment; try again later.")
            piece = _literal(data, f"BODY[{section}]".encode())
            if piece is None:
                if offset == 0:
                    raise MessageGone()
                return
            if piece:
                yield piece
            if len(piece) < PART_SLICE_BYTES:
                return
            offset += len(piece)
