"""Which e-mails make one conversation, by the rules every reader of mail shares (the reply condition's
matcher, the timeline's threads): References / In-Reply-To first, the subject when a message names no
other (subjects.py).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from .subjects import reply_subject_key, subject_key

MAX_REFERENCES = 200  # the newest Message-IDs of References kept per reply (threads rarely go deeper)
MAX_REF_LENGTH = 998  # RFC 5322 line limit; longer "ids" are garbage and would not fit an index
_MESSAGE_ID = re.compile(r"<?\s*([^<>\s]+)\s*>?")


class Threadable(Protocol):
    id: int
    message_id: str | None
    dedup_key: str
    subject: str
    in_reply_to: str | None
    references: str | None
    date: datetime


def referenced_ids(in_reply_to: str | None, references: str | None) -> list[str]:
    """The Message-IDs a message names, In-Reply-To first, without <> and duplicates."""
    found: list[str] = []
    refs = _MESSAGE_ID.findall(references or "")[-MAX_REFERENCES:]
    for value in _MESSAGE_ID.findall(in_reply_to or "")[:1] + refs[::-1]:
        if len(value) <= MAX_REF_LENGTH and value.isascii() and value not in found:
            found.append(value)
    return found


def _root(message: Threadable) -> str | None:
    # The first id of References is the conversation's first message (headers.py keeps it when trimming);
    # a reply that names only its parent (In-Reply-To) starts from there.
    first = _MESSAGE_ID.search(message.references or "")
    if first is not None:
        return first.group(1)
    named = referenced_ids(message.in_reply_to, None)
    return named[0] if named else None


def _thread_id(root: str) -> str:
    return hashlib.sha1(root.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def thread_ids(messages: Iterable[Threadable]) -> dict[int, str]:
    """A conversation id per message (by ``id``): the same for the messages of one thread.

    A message that names others belongs to the thread of the first one it names, and one that names none
    starts its own, unless its subject is a reply prefix followed by the subject of an earlier message of
    ``messages`` (then it joins the newest such one's thread).
    """
    ids: dict[int, str] = {}
    latest_by_subject: dict[str, str] = {}
    for message in sorted(messages, key=lambda m: (m.date, m.id)):
        root = _root(message)
        if root is not None:
            thread = _thread_id(root)
        else:
            asked = reply_subject_key(message.subject)
            thread = latest_by_subject.get(asked) if asked else None
            if thread is None:
                thread = _thread_id(message.message_id or message.dedup_key)
        ids[message.id] = thread
        key = subject_key(message.subject)
        if key:
            latest_by_subject[key] = thread
    return ids
