"""Message-IDs: read from Message-ID, In-Reply-To and References, and the key that identifies a message."""
from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

MAX_ID = 998
MAX_REFERENCES = 200  # ids kept: the first and the most recent, as mailers trim them

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_ANGLE_ID_RE = re.compile(r"<([^<>]+)>")
_PLAIN_ID_RE = re.compile(r"<([^<>\s]+)>")


def _clean_id(token: str) -> str | None:
    token = "".join(token.split())  # "< spaced id @x >" -> "spacedid@x": stable, and what mailers match
    token = token.strip("<>")
    if not token:
        return None
    return token[:MAX_ID]


def parse_message_id(value: str) -> str | None:
    match = _ANGLE_ID_RE.search(value)
    if match is not None:
        return _clean_id(match.group(1))
    token = value.strip()
    if token and "@" in token and not any(c.isspace() for c in token):
        return _clean_id(token)
    return None


def parse_references(value: str) -> list[str]:
    ids = _PLAIN_ID_RE.findall(value)
    if len(ids) == value.count("<"):  # the usual "<a@b> <c@d>": nothing to clean
        ids = [i[:MAX_ID] for i in ids]
    else:
        ids = [i for i in (_clean_id(t) for t in _ANGLE_ID_RE.findall(value)) if i]
    ids = list(dict.fromkeys(ids))
    if len(ids) > MAX_REFERENCES:
        ids = [ids[0], *ids[-(MAX_REFERENCES - 1):]]
    return ids


def dedup_key(message_id: str | None, from_email: str | None, date: datetime, subject: str, size: int) -> str:
    """The Message-ID, or a stable hash of what identifies a message without one."""
    if message_id:
        return message_id
    seconds = int((date - _EPOCH).total_seconds()) if date.tzinfo else int(date.timestamp())
    basis = f"{from_email or ''}\x1f{seconds}\x1f{subject}\x1f{size}"
    return "sha1:" + hashlib.sha1(basis.encode("utf-8", "replace")).hexdigest()
