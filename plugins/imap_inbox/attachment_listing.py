"""Attachments listed from the server's BODYSTRUCTURE, in a follow-up job of each sync, never by the sync itself.

Why a follow-up and not an item of the sync's FETCH: BODYSTRUCTURE of every
message would lengthen each answer of the metadata sync and need a full
IMAP parser where the sync reads its items with one regex (fetch.py), while
most mail has no attachment at all. The sync already stores each message's
top-level Content-Type, so this job asks only about the messages that can
carry files (not ``text/*``, not ``multipart/alternative``), in batches of
``BATCH`` UIDs, with the same read-only means as the sync (EXAMINE, FETCH
BODYSTRUCTURE, which reads no body). Its place is ``ImapInbox.attachments_listed_id``:
every stored message up to that id was looked at. The mail core keeps the
list (``plugins.mail.attachments``); no message is downloaded to list it.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from imapclient import IMAPClient
from imapclient.response_parser import parse_fetch_response

from host_app.api import app_job, db
from plugins.mail.attachments import listed_attachment, store_listed
from plugins.mail.followups import enqueue_follow_up, newest_message_id
from plugins.mail.models import Message
from plugins.mail.source import MessageGone, SourceUnavailable

from .account import settings_for
from .crypto import EncryptionKeyError
from .fetch import sequence_set
from .message_source import examined_folder
from .models import ImapFolder, ImapInbox

log = logging.getLogger(__name__)

BATCH = 500
MAX_PARTS = 500  # like rendering.MAX_PARTS: a message with more is listed no further


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _pairs(params) -> list[tuple[str, str]]:
    """(name, value) pairs of a BODYSTRUCTURE parameter list (a flat tuple, or NIL)."""
    if not isinstance(params, (list, tuple)):
        return []
    flat = [_text(p) for p in params]
    return list(zip(flat[0::2], flat[1::2], strict=False))


def _size(value) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


def leaf_parts(structure, section: str = "") -> Iterator[tuple[str, Any]]:
    """(IMAP section number, body) of each part that is not a multipart, numbered as RFC 3501 6.4.5 (and
    ``plugins.mail.rendering.leaf_parts``) does: a message without parts is "1"; a forwarded e-mail is one part."""
    if structure and isinstance(structure[0], list):  # a multipart: its parts, then its subtype
        for index, child in enumerate(structure[0], start=1):
            yield from leaf_parts(child, f"{section}.{index}" if section else str(index))
    else:
        yield section or "1", structure


def _disposition(body, maintype: str, subtype: str):
    # The disposition's place after the fields every body has (7) depends on the type (RFC 3501 7.4.2).
    if maintype == "text":
        where = 9
    elif (maintype, subtype) == ("message", "rfc822"):
        where = 11
    else:
        where = 8
    value = body[where] if len(body) > where else None
    if isinstance(value, (list, tuple)) and value:
        return _text(value[0]), _pairs(value[1] if len(value) > 1 else None)
    return "", []


def attachments_of(structure) -> list[dict]:
    """The attachments of one BODYSTRUCTURE, as ``plugins.mail.attachments.listed_attachment`` describes them."""
    found = []
    for index, (section, body) in enumerate(leaf_parts(structure)):
        if index >= MAX_PARTS or not isinstance(body, (list, tuple)) or len(body) < 7:
            break
        maintype, subtype = _text(body[0]).lower(), _text(body[1]).lower()
        disposition, disposition_params = _disposition(body, maintype, subtype)
        attachment = listed_attachment(
            section, f"{maintype}/{subtype}", _pairs(body[2]), _text(body[3]), disposition, disposition_params,
            _text(body[5]), _size(body[6]))
        if attachment is not None:
            found.append(attachment)
    return found


def _bodystructures(client: IMAPClient, uids: list[int]) -> Iterator[dict[int, dict]]:
    """The FETCH BODYSTRUCTURE answers for ``uids``, BATCH at a time, as ``IMAPClient.fetch`` gives them.

    The next batch's FETCH is sent before a batch is handed out, so the server
    reads those messages while this one is parsed and stored (it has to open
    each message: BODYSTRUCTURE is not in its cache after a sync). One command
    in flight at a time, so answers never interleave.
    """
    imap = client._imap

    def send(batch: list[int]) -> str:
        return imap._command("UID", "FETCH", sequence_set(batch), "(BODYSTRUCTURE)")

    batches = [uids[start:start + BATCH] for start in range(0, len(uids), BATCH)]
    tag = send(batches[0]) if batches else None
    for index, batch in enumerate(batches):
        typ, data = imap._command_complete("FETCH", tag)
        client._checkok("fetch", typ, data)
        typ, data = imap._untagged_response(typ, data, "FETCH")
        if index + 1 < len(batches):
            tag = send(batches[index + 1])
        answers = parse_fetch_response(data, client.normalise_times, True)
        wanted = set(batch)
        yield {uid: items for uid, items in answers.items() if uid in wanted}


def _may_carry_files():
    content_type = sa.func.coalesce(Message.content_type, "text/plain")
    return sa.and_(~content_type.like("text/%"), content_type != "multipart/alternative")


def on_mailbox_synced(inbox_id: int, run_id: int) -> bool:
    """Enqueue the listing of what the run stored when the inbox is an IMAP one with messages not yet looked at."""
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is None:
        return False
    upto = newest_message_id(inbox_id)
    if upto <= inbox.attachments_listed_id:
        return False
    return enqueue_follow_up(list_attachments, inbox_id, run_id, upto,
                             description=f"attachment listing of inbox {inbox_id} after sync run {run_id}") is not None


@app_job
def list_attachments(inbox_id: int, run_id: int, upto: int) -> dict[str, Any]:
    """RQ job: list the attachments of the inbox's messages stored up to id ``upto``."""
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is None:
        return {"inbox_id": inbox_id, "messages": 0, "attachments": 0}
    start = inbox.attachments_listed_id
    try:
        settings = settings_for(inbox)
    except EncryptionKeyError:
        return {"inbox_id": inbox_id, "messages": 0, "attachments": 0, "problem": "password cannot be decrypted"}
    rows = db.session.execute(
        sa.select(Message.id, Message.folder_id, Message.uid)
        .where(Message.inbox_id == inbox_id, Message.id > start, Message.id <= upto, Message.uid > 0,
               _may_carry_files())
        .order_by(Message.folder_id, Message.uid)
    ).all()
    by_folder: dict[int, dict[int, int]] = {}
    for message_pk, folder_id, uid in rows:
        by_folder.setdefault(folder_id, {})[uid] = message_pk
    looked_at = listed = 0
    for folder_id, ids_by_uid in by_folder.items():
        folder = db.session.get(ImapFolder, folder_id)
        if folder is None:
            continue
        try:
            with examined_folder(settings, folder.name, folder.uidvalidity) as client:
                for answers in _bodystructures(client, sorted(ids_by_uid)):
                    found: dict[int, list[dict]] = {}
                    for uid, items in answers.items():
                        message_pk = ids_by_uid.get(uid)
                        structure = items.get(b"BODYSTRUCTURE")
                        if message_pk is None or structure is None:
                            continue  # deleted on the server since the sync: the next sync removes it
                        looked_at += 1
                        found[message_pk] = attachments_of(structure)
                        listed += len(found[message_pk])
                    store_listed(found)
                    db.session.commit()
        except MessageGone:
            continue  # the folder is gone or was renumbered: its next sync stores it anew
        except SourceUnavailable:
            db.session.rollback()
            log.warning("inbox %s: attachment listing stopped, the server could not be read", inbox_id)
            raise
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is not None and inbox.attachments_listed_id < upto:
        inbox.attachments_listed_id = upto
        db.session.commit()
    return {"inbox_id": inbox_id, "run_id": run_id, "messages": looked_at, "attachments": listed}
