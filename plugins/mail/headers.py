"""Reading the metadata of real-world mail from its raw header block, robustly and fast.

Never raises on bad input: whatever cannot be read is left out and described
in ``ParsedHeaders.errors`` (stored as ``Message.parse_error``). This module
splits the block into fields and fills ``ParsedHeaders``; each kind of value
has its own reader: text and RFC 2047 encoded words in ``decoding.py``,
address lists in ``addresses.py``, dates in ``dates.py``, Message-IDs and
References in ``message_ids.py``, and whether the mail is automated in
``automated.py``.

Common shapes take fast paths (simple address lists, RFC 5322 dates); the
standard library's parsers handle the rest.
"""
from __future__ import annotations

import re
from datetime import datetime

from .addresses import parse_addresses
from .automated import is_automated
from .dates import parse_date, plausible_date
from .decoding import clean_text, decode_raw, header_text
from .message_ids import parse_message_id, parse_references

# What the sync fetches with BODY.PEEK[HEADER.FIELDS (...)].
HEADER_FIELDS = (
    "FROM", "TO", "CC", "REPLY-TO", "BCC", "DATE", "SUBJECT", "MESSAGE-ID", "IN-REPLY-TO", "REFERENCES",
    "AUTO-SUBMITTED", "X-AUTOREPLY", "X-AUTORESPOND", "PRECEDENCE", "LIST-ID", "LIST-UNSUBSCRIBE",
    "CONTENT-TYPE", "CONTENT-TRANSFER-ENCODING",
)

# Column limits (PostgreSQL enforces VARCHAR lengths).
MAX_SUBJECT = 1000
MAX_LIST_ID = 500
MAX_AUTO_SUBMITTED = 100
MAX_PRECEDENCE = 50
MAX_CONTENT_TYPE = 200
MAX_ADDRESSES = 5000  # per message, all roles together; more are noted in parse_error
MAX_ERROR = 1000

# Bcc comes last so that it never takes MAX_ADDRESSES room from the others: the parser reports every
# role alike, and the row builder keeps Bcc only for our own e-mails (rows.py).
ADDRESS_ROLES = (("from", "from"), ("to", "to"), ("cc", "cc"), ("reply-to", "reply_to"), ("bcc", "bcc"))


class ParsedHeaders:
    """The metadata the sync stores about one message."""

    __slots__ = ("subject", "from_email", "from_name", "addresses", "date", "message_id", "in_reply_to",
                 "references", "auto_submitted", "precedence", "list_id", "list_unsubscribe", "x_autoreply",
                 "content_type", "content_type_raw", "transfer_encoding", "automated", "errors")

    def __init__(self) -> None:
        self.subject = ""
        self.from_email: str | None = None
        self.from_name = ""
        self.addresses: list[tuple[str, str, str]] = []  # (role, email, name), unique per (role, email)
        self.date: datetime | None = None  # None: unreadable or missing; the caller uses INTERNALDATE
        self.message_id: str | None = None
        self.in_reply_to: str | None = None
        self.references: str | None = None
        self.auto_submitted: str | None = None
        self.precedence: str | None = None
        self.list_id: str | None = None
        self.list_unsubscribe = False
        self.x_autoreply = False
        self.content_type: str | None = None
        self.content_type_raw = ""  # with parameters (boundary, charset), for previews
        self.transfer_encoding = ""
        self.automated = False
        self.errors: list[str] = []

    @property
    def parse_error(self) -> str | None:
        if not self.errors:
            return None
        text = "; ".join(dict.fromkeys(self.errors))
        return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


# --------------------------------------------------------------------------- splitting


_HEADER_END_RE = re.compile(rb"\n[ \t]*\n")
# One field: a name and a colon, the rest of its line, and the folded lines after it (they start with
# whitespace, so they never match a name themselves). A line without a name (an mbox "From " line) and
# its folded lines match nothing and are skipped. One findall per header: a third faster than splitting
# into lines and matching each (bench/README.md).
_FIELD_RE = re.compile(rb"^([^\s:]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.MULTILINE)


def split_fields(raw: bytes) -> dict[str, list[bytes]]:
    """Header fields by lower-case name, each value unfolded, in order of appearance."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    raw = raw.lstrip(b"\n")
    end = _HEADER_END_RE.search(raw)
    if end is not None:
        raw = raw[:end.start()]
    fields: dict[str, list[bytes]] = {}
    for name, value in _FIELD_RE.findall(raw):
        if b"\n" in value:
            value = value.replace(b"\n", b"")  # unfolding removes just the line breaks
        key = name.decode("latin-1").lower()
        values = fields.get(key)
        if values is None:
            fields[key] = [value]
        else:
            values.append(value)
    return fields


# --------------------------------------------------------------------------- the whole header


_MIME_TYPE_RE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


def parse_headers(raw: bytes | None, internal_date: datetime | None = None) -> ParsedHeaders:
    """Parse the header block fetched with HEADER.FIELDS; never raises."""
    parsed = ParsedHeaders()
    try:
        _parse_into(parsed, raw or b"", internal_date)
    except Exception as exc:  # noqa: BLE001 - a broken message must never stop a sync
        parsed.errors.append(f"headers could not be read ({type(exc).__name__})")
    return parsed


def _text(value: bytes) -> str:
    return clean_text(decode_raw(value))


def _parse_into(parsed: ParsedHeaders, raw: bytes, internal_date: datetime | None) -> None:
    errors = parsed.errors
    if not raw.strip():
        errors.append("no headers")
        return
    fields = split_fields(raw)
    get = fields.get

    values = get("subject")
    if values:
        parsed.subject = header_text(values[0], errors, "Subject: ")[:MAX_SUBJECT]

    addresses: list[tuple[str, str, str]] = []
    for header, role in ADDRESS_ROLES:
        values = get(header)
        if not values:
            continue
        seen: set[str] = set()
        where = _WHERE[header]
        # Some mailers repeat To/Cc/Bcc; From takes the first header only.
        for value in values[:1] if role == "from" else values:
            for addr, name in parse_addresses(decode_raw(value), errors, where):
                if addr in seen:
                    continue
                if len(addresses) >= MAX_ADDRESSES:
                    if not any(e.startswith("too many addresses") for e in errors):
                        errors.append(f"too many addresses: only the first {MAX_ADDRESSES} were stored")
                    continue
                seen.add(addr)
                addresses.append((role, addr, name))
                if role == "from" and parsed.from_email is None:
                    parsed.from_email, parsed.from_name = addr, name
        if role == "from" and not seen and values[0].strip():
            errors.append("From: no valid address")
    parsed.addresses = addresses

    values = get("date")
    if values and values[0].strip():
        text = _text(values[0])
        date = parse_date(text)
        if plausible_date(date, internal_date):
            parsed.date = date
        else:
            errors.append(f"Date: unreadable or implausible ({text[:60]!r}); used the server's received date")

    values = get("message-id")
    if values:
        parsed.message_id = parse_message_id(_text(values[0]))
    values = get("in-reply-to")
    if values:
        parsed.in_reply_to = parse_message_id(_text(values[0]))
    values = get("references")
    if values:
        parsed.references = " ".join(parse_references(_text(b" ".join(values)))) or None

    values = get("auto-submitted")
    if values:
        value = _text(values[0]).split(";", 1)[0].split("(", 1)[0].strip().lower()
        parsed.auto_submitted = value[:MAX_AUTO_SUBMITTED] or None
    values = get("precedence")
    if values:
        parsed.precedence = _text(values[0]).lower()[:MAX_PRECEDENCE] or None
    values = get("list-id")
    if values:
        parsed.list_id = header_text(values[0])[:MAX_LIST_ID] or None
    values = get("list-unsubscribe")
    if values and values[0].strip():
        parsed.list_unsubscribe = True
    for name in ("x-autoreply", "x-autorespond"):
        values = get(name)
        if values:
            value = values[0].strip().lower()
            if value and value not in (b"no", b"false", b"0"):
                parsed.x_autoreply = True
    values = get("content-type")
    if values:
        parsed.content_type_raw = _text(values[0])
        mime = parsed.content_type_raw.split(";", 1)[0].strip().lower()
        if _MIME_TYPE_RE.fullmatch(mime):
            parsed.content_type = mime[:MAX_CONTENT_TYPE]
    values = get("content-transfer-encoding")
    if values:
        parsed.transfer_encoding = _text(values[0]).lower()

    parsed.automated = is_automated(parsed.auto_submitted, parsed.precedence, parsed.x_autoreply,
                                    parsed.content_type, parsed.from_email, parsed.list_id, parsed.list_unsubscribe)


_WHERE = {header: f"{header.title()}: " for header, _ in ADDRESS_ROLES}
