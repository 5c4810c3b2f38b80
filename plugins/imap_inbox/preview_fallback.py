"""Text for the timeline when the server's PREVIEW gives none.

Some servers advertise PREVIEW (RFC 8970) and answer ``PREVIEW NIL`` for
every message (Cyrus IMAP 3.6 in its default setup), others an empty string
for some. The messages of a batch left without a preview get the start of
their body in one more FETCH for the whole batch (never one per message), and
a server that gave no preview for a whole batch is asked for the body's start
instead of PREVIEW for the rest of the run, so it costs no extra round trip
after the first batch.
"""
from __future__ import annotations

import logging

from imapclient import IMAPClient

from .fetch import BODY_START_ITEM, FetchedMessage, FetchFailed, parse_groups, read_fetch_answer, sequence_set

log = logging.getLogger(__name__)


def without_preview(fetched: dict[int, FetchedMessage]) -> list[int]:
    """UIDs of the messages the server gave neither a preview nor the start of their body."""
    return [uid for uid, message in fetched.items()
            if message.complete and message.text is None and not (message.preview or "").strip()]


def server_makes_no_previews(fetched: dict[int, FetchedMessage]) -> bool:
    """Whether the server answered PREVIEW NIL for every message of a batch: it will not for the next ones either."""
    return bool(fetched) and all(message.preview is None for message in fetched.values())


def fill_missing_previews(client: IMAPClient, fetched: dict[int, FetchedMessage]) -> int:
    """Fetch the start of the body of the messages of ``fetched`` that have no preview, in one FETCH (BODY.PEEK).

    Returns how many got one. A server that refuses the FETCH leaves them without a preview: the messages
    themselves are stored as they are.
    """
    uids = without_preview(fetched)
    if not uids:
        return 0
    tag = client._imap._command("UID", "FETCH", sequence_set(uids), f"(UID {BODY_START_ITEM})")
    status, text, groups = read_fetch_answer(client._imap, tag)
    if status != "OK":
        log.info("the server refused the body start of %s messages without a preview: %s", len(uids),
                 FetchFailed(text.decode("utf-8", "replace")[:300]))
        return 0
    filled = 0
    for uid, answer in parse_groups(groups).items():
        message = fetched.get(uid)
        if message is not None and answer.text is not None:
            message.text = answer.text
            filled += 1
    return filled
