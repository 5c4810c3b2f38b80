"""The peer: imap-tools, a popular IMAP library, reading the same folders' headers and storing nothing.

``fetch(headers_only=True, bulk=True, mark_seen=False)`` is imap-tools' fastest
way to read headers: one SEARCH, then one UID FETCH of ``BODY.PEEK[HEADER]``
for every UID. Each message's fields that the sync also keeps are read (and
thereby decoded), so the peer does comparable work minus the database.

imap-tools sends the UIDs as one comma-separated list, which Dovecot refuses
("Too long argument") beyond roughly 10,000 messages; the peer then falls
back to ``bulk=FALLBACK_BULK`` (chunks of that many UIDs) and says so.
"""
from __future__ import annotations

import imaplib
import ssl
import time

# imap-tools SEARCHes every UID first: one line of ~7 bytes per message, more than imaplib allows.
imaplib._MAXLINE = max(imaplib._MAXLINE, 50_000_000)
FALLBACK_BULK = 5000


def _touch(msg) -> int:
    """Read what a sync stores, so imap-tools decodes it; returns a number so nothing is optimised away."""
    headers = msg.headers
    values = (
        msg.uid, msg.flags, msg.size_rfc822, msg.from_, msg.from_values, msg.to_values, msg.cc_values,
        msg.reply_to_values, msg.bcc_values, msg.subject, msg.date,
        headers.get("message-id"), headers.get("in-reply-to"), headers.get("references"),
        headers.get("list-id"), headers.get("auto-submitted"), headers.get("precedence"),
    )
    return len(values)


def _read_all(box, bulk: bool | int) -> int:
    count = 0
    for msg in box.fetch(headers_only=True, bulk=bulk, mark_seen=False):
        _touch(msg)
        count += 1
    return count


def imap_tools_fetch(host: str, port: int, ca_file: str, username: str, password: str, folders: list[str]) -> dict:
    """Time imap-tools reading every message's headers of ``folders`` (read-only selects)."""
    from imap_tools import MailBox
    from imap_tools.errors import MailboxFetchError

    context = ssl.create_default_context(cafile=ca_file)
    result: dict = {"library": "imap-tools", "folders": {}}
    started_all = time.perf_counter()
    with MailBox(host, port=port, ssl_context=context).login(username, password, initial_folder=None) as box:
        import imap_tools

        result["version"] = imap_tools.__version__
        for folder in folders:
            box.folder.set(folder, readonly=True)
            started = time.perf_counter()
            bulk: bool | int = True
            try:
                count = _read_all(box, bulk)
            except (MailboxFetchError, imaplib.IMAP4.error) as exc:
                if "too long" not in str(exc).lower():
                    raise
                bulk = FALLBACK_BULK
                result["note"] = (f"imap-tools bulk=True failed on {folder} (Dovecot: too long argument); "
                                  f"the peer used bulk={FALLBACK_BULK} there")
                started = time.perf_counter()
                count = _read_all(box, bulk)
            result["folders"][folder] = {"messages": count, "seconds": time.perf_counter() - started,
                                         "bulk": bulk}
    result["messages"] = sum(f["messages"] for f in result["folders"].values())
    result["seconds"] = sum(f["seconds"] for f in result["folders"].values())
    result["seconds_with_login"] = time.perf_counter() - started_all
    result["messages_per_second"] = result["messages"] / result["seconds"] if result["seconds"] else None
    return result
