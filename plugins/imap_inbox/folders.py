"""Which folders of a mailbox to sync: INBOX, the Sent folder, and the admin's extra folders.

The Sent folder is the one flagged ``\\Sent`` (RFC 6154 SPECIAL-USE); servers
without the flag are matched by the usual names, localized ones included.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from imapclient import IMAPClient

from plugins.mail.models import ROLE_INBOX, ROLE_OTHER, ROLE_SENT

SENT_NAMES = (
    "Sent", "Sent Items", "Sent Messages", "Sent Mail", "Sent Mails", "Sent-Mail", "[Gmail]/Sent Mail",
    "[Google Mail]/Sent Mail", "Sent Items (Outlook)",
    # Localized
    "Gesendet", "Gesendete Objekte", "Gesendete Elemente", "Gesendete Nachrichten",
    "Envoyés", "Éléments envoyés", "Messages envoyés", "Envoyé",
    "Enviados", "Elementos enviados", "Mensajes enviados", "Itens Enviados", "Itens enviados",
    "Posta inviata", "Inviati", "Elementi inviati",
    "Verzonden", "Verzonden items", "Verzonden berichten",
    "Wysłane", "Elementy wysłane",
    "Отправленные", "Надіслані", "Odeslané", "Odeslaná pošta", "Elküldött", "Elküldött elemek",
    "Skickat", "Skickade objekt", "Sendt", "Sendte elementer", "Sendt post", "Lähetetyt", "Lähetetyt viestit",
    "Gönderilenler", "Gönderilmiş Öğeler", "Απεσταλμένα", "送信済み", "送信済みアイテム", "已发送", "已發送",
    "已发送邮件", "보낸편지함", "Trimise", "Poslano", "Poslané", "Išsiųsti", "Nosūtītie",
)
_SENT_KEYS = {name.casefold(): rank for rank, name in enumerate(SENT_NAMES)}
_UNSELECTABLE = {b"\\noselect", b"\\nonexistent"}


@dataclasses.dataclass(frozen=True)
class FolderChoice:
    name: str
    role: str


@dataclasses.dataclass
class FolderPlan:
    """The folders to sync, and configured extra folders the server does not have."""

    folders: list[FolderChoice]
    missing: list[str]
    sent_found: bool


def _flags(flags: Iterable) -> set[bytes]:
    return {f.lower() if isinstance(f, bytes) else str(f).lower().encode() for f in flags}


def _sent_rank(name: str, delimiter: str) -> int | None:
    """How well ``name`` looks like a Sent folder (lower is better), or None."""
    key = name.casefold()
    if key in _SENT_KEYS:
        return _SENT_KEYS[key]
    # Under a personal namespace: "INBOX.Sent", "INBOX/Gesendet".
    for prefix in ("inbox" + (delimiter or "."), "inbox.", "inbox/"):
        if key.startswith(prefix) and key[len(prefix):] in _SENT_KEYS:
            return len(SENT_NAMES) + _SENT_KEYS[key[len(prefix):]]
    return None


def plan_folders(client: IMAPClient, extra_folders: Iterable[str] = ()) -> FolderPlan:
    """List the mailbox once and pick INBOX, Sent and the extra folders that exist."""
    listing = []
    for flags, delimiter, name in client.list_folders():
        if isinstance(delimiter, bytes):
            delimiter = delimiter.decode("ascii", "replace")
        flag_set = _flags(flags)
        if flag_set & _UNSELECTABLE:
            continue
        listing.append((flag_set, delimiter or "", name))
    by_key = {name.casefold(): name for _, _, name in listing}

    folders = [FolderChoice(by_key.get("inbox", "INBOX"), ROLE_INBOX)]
    chosen = {folders[0].name.casefold()}

    sent = next((name for flags, _, name in listing if b"\\sent" in flags and name.casefold() not in chosen), None)
    if sent is None:
        ranked = sorted(
            (rank, name) for _, delimiter, name in listing
            if (rank := _sent_rank(name, delimiter)) is not None and name.casefold() not in chosen
        )
        sent = ranked[0][1] if ranked else None
    if sent is not None:
        folders.append(FolderChoice(sent, ROLE_SENT))
        chosen.add(sent.casefold())

    missing = []
    for wanted in extra_folders or ():
        name = by_key.get(wanted.casefold())
        if name is None:
            missing.append(wanted)
        elif name.casefold() not in chosen:
            folders.append(FolderChoice(name, ROLE_OTHER))
            chosen.add(name.casefold())
    return FolderPlan(folders=folders, missing=missing, sent_found=sent is not None)
