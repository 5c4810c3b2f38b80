"""The benchmark mailbox: N INBOX + N/10 Sent messages written straight into Dovecot's Maildir.

The bulk comes from ``mailgen.generate_mailbox`` (realistic headers, about
20,000 correspondents, encoded subjects, threads). One extra correspondent, the
"timeline contact", gets ``min(5000, N/4)`` messages of their own (their mail
to us in INBOX, ours to them in Sent, as threads), so the timeline page is
measured on a contact with a long history.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator

from plugins.imap_inbox.testing.dovecot import DovecotServer
from plugins.imap_inbox.testing.mailgen import encode_words, generate_mailbox

OWNER = "alice@example.com"
OWNER_NAME = "Alice Example"
SENT_FOLDER = "Sent"
TIMELINE_CONTACT = "karin.grosskunde@grosskunde.example.de"
TIMELINE_CONTACT_NAME = "Karin Großkunde"
START = dt.datetime(2023, 1, 2, 8, 0, tzinfo=dt.UTC)
END = dt.datetime(2025, 1, 1, 8, 0, tzinfo=dt.UTC)
WRITE_BATCH = 5000  # messages per write_maildir call (bounded memory, few directory opens)


@dataclasses.dataclass
class MailboxFacts:
    """What was written, for the report and for sanity checks against what the sync stored."""

    inbox: int = 0
    sent: int = 0
    correspondent_pool: int = 0
    timeline_contact: str = TIMELINE_CONTACT
    timeline_contact_messages: int = 0
    bytes: int = 0
    build_seconds: float = 0.0
    warm_seconds: float = 0.0  # doveadm index
    cache_warm_seconds: float = 0.0  # the first FETCH of the sync's items (Dovecot fills its cache)

    @property
    def total(self) -> int:
        return self.inbox + self.sent


def correspondent_pool(n: int) -> int:
    """20,000 correspondents for big mailboxes, fewer for small ones (so each still gets mail)."""
    return max(20, min(20000, n // 5))


def timeline_share(n_inbox: int, n_sent: int) -> tuple[int, int]:
    """(INBOX, Sent) messages of the timeline contact: ``min(5000, N/4)`` in all, a fifth of them ours."""
    total = min(5000, n_inbox // 4)
    sent = min(total // 5, n_sent // 4)
    return total - sent, sent


class _TimelineContactMail:
    """Threads between the mailbox owner and the timeline contact: we write, they answer."""

    def __init__(self) -> None:
        self.seq = 0
        self.last_ours: list[str] = []  # recent Message-IDs of ours they may answer
        self.name = f"{encode_words(TIMELINE_CONTACT_NAME, 'iso-8859-1', 'Q')} <{TIMELINE_CONTACT}>"

    def _date(self, ts: float) -> str:
        return time.strftime("%a, %d %b %Y %H:%M:%S +0100", time.gmtime(ts + 3600))

    def message(self, ts: float, ours: bool) -> bytes:
        self.seq += 1
        domain = "example.com" if ours else "grosskunde.example.de"
        msgid = f"<tl{self.seq}.{int(ts)}@{domain}>"
        topic = encode_words(f"Auftrag Nr. {4000 + self.seq // 7} – Lieferung Größe {self.seq % 40}", "utf-8")
        head = [
            f"From: {OWNER_NAME} <{OWNER}>" if ours else f"From: {self.name}",
            f"To: {self.name}" if ours else f"To: {OWNER_NAME} <{OWNER}>",
            f"Date: {self._date(ts)}",
            f"Message-ID: {msgid}",
        ]
        parent = None if ours or not self.last_ours else self.last_ours[self.seq % len(self.last_ours)]
        if parent:
            head += [f"Subject: AW: {topic}", f"In-Reply-To: {parent}", f"References: {parent}"]
        else:
            head.append(f"Subject: {topic}")
        head += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                 "Content-Transfer-Encoding: 8bit"]
        if ours:
            self.last_ours = (self.last_ours + [msgid])[-20:]
        body = "Guten Tag,\r\n\r\nanbei die Bestätigung.\r\n\r\nMit freundlichen Grüßen\r\n".encode()
        return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def bench_messages(n_inbox: int, n_sent: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``(folder, raw)`` in date order: the generated mailbox with the timeline contact's mail mixed in."""
    heavy_in, heavy_sent = timeline_share(n_inbox, n_sent)
    bulk = generate_mailbox(
        n_inbox - heavy_in, n_sent - heavy_sent, owner=OWNER, owner_name=OWNER_NAME,
        correspondents=correspondent_pool(n_inbox), seed=seed, start=START, end=END, sent_folder=SENT_FOLDER,
    )
    total = n_inbox + n_sent
    heavy_total = heavy_in + heavy_sent
    mail = _TimelineContactMail()
    sent_left = heavy_sent
    t0, span = START.timestamp(), (END - START).total_seconds()
    # Spread the heavy contact's messages evenly: position i of ``total`` gets one when the count crosses.
    placed = 0
    for i in range(total):
        due = (i + 1) * heavy_total // total if total else 0
        if placed < due:
            placed += 1
            # Every fifth is ours, while we have Sent messages left to give.
            ours = sent_left > 0 and (placed % 5 == 1 or heavy_total - placed < sent_left)
            sent_left -= ours
            yield (SENT_FOLDER if ours else "INBOX"), mail.message(t0 + span * i / total, ours)
        else:
            yield next(bulk)


def write_mailbox(server: DovecotServer, username: str, messages: Iterator[tuple[str, bytes]],
                  facts: MailboxFacts) -> None:
    """Write ``messages`` into the user's Maildir folders in batches (never one APPEND per message)."""
    batches: dict[str, list[bytes]] = {"INBOX": [], SENT_FOLDER: []}

    def flush(folder: str) -> None:
        if batches[folder]:
            server.write_maildir(username, folder, batches[folder])
            batches[folder] = []

    for folder, raw in messages:
        batches[folder].append(raw)
        facts.bytes += len(raw)
        if folder == "INBOX":
            facts.inbox += 1
        else:
            facts.sent += 1
        if len(batches[folder]) >= WRITE_BATCH:
            flush(folder)
    for folder in batches:
        flush(folder)


def build_mailbox(server: DovecotServer, username: str, n: int, seed: int = 0) -> MailboxFacts:
    """N INBOX + N/10 Sent messages for ``username``, then Dovecot's index warmed once."""
    n_sent = n // 10
    heavy_in, heavy_sent = timeline_share(n, n_sent)
    facts = MailboxFacts(correspondent_pool=correspondent_pool(n), timeline_contact_messages=heavy_in + heavy_sent)
    started = time.perf_counter()
    server.create_folder(username, SENT_FOLDER)
    write_mailbox(server, username, bench_messages(n, n_sent, seed), facts)
    facts.build_seconds = time.perf_counter() - started
    started = time.perf_counter()
    server.warm(username)
    facts.warm_seconds = time.perf_counter() - started
    return facts


def drop_server_cache(server: DovecotServer, username: str) -> int:
    """Make Dovecot forget what it cached of the user's messages: header fields, PREVIEW snippets.

    Stops the server, deletes each folder's ``dovecot.index.cache`` and starts it
    again; the indexes (UIDs, flags, UIDVALIDITY) stay, so clients see the same
    mailbox, and the next FETCH of the sync's items pays the server's parsing
    again, as a first sync does. Returns the number of cache files deleted.
    """
    server.stop()
    caches = sorted(server.maildir(username).rglob("dovecot.index.cache"))
    for path in caches:
        path.unlink()
    server.start()
    return len(caches)


def add_new_mail(server: DovecotServer, username: str, count: int = 1000, seed: int = 1) -> MailboxFacts:
    """``count`` newer messages (nine tenths INBOX, one tenth Sent) for the incremental sync, then warm."""
    n_sent = count // 10
    facts = MailboxFacts(correspondent_pool=correspondent_pool(count))
    later = generate_mailbox(
        count - n_sent, n_sent, owner=OWNER, owner_name=OWNER_NAME, correspondents=20000, seed=seed,
        start=END, end=END + dt.timedelta(days=7), sent_folder=SENT_FOLDER,
    )
    started = time.perf_counter()
    write_mailbox(server, username, later, facts)
    facts.build_seconds = time.perf_counter() - started
    started = time.perf_counter()
    server.warm(username)
    facts.warm_seconds = time.perf_counter() - started
    return facts
