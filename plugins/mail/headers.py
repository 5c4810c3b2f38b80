"""Reading the metadata of real-world mail from its raw header block, robustly and fast.

Never raises on bad input: whatever cannot be read is left out and described
in ``ParsedHeaders.errors`` (stored as ``Message.parse_error``). Handles RFC
2047 encoded words in any charset (adjacent words joined, unknown charsets
guessed), raw 8-bit headers (UTF-8, else cp1252/latin-1), NUL and control
characters, group syntax and comments in addresses, garbage dates and
Message-IDs, and very long References.

Common shapes take fast paths (simple address lists, RFC 5322 dates); the
standard library's parsers handle the rest.
"""
from __future__ import annotations

import binascii
import codecs
import email.utils
import functools
import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone

from .automated import is_automated

# What the sync fetches with BODY.PEEK[HEADER.FIELDS (...)].
HEADER_FIELDS = (
    "FROM", "TO", "CC", "REPLY-TO", "BCC", "DATE", "SUBJECT", "MESSAGE-ID", "IN-REPLY-TO", "REFERENCES",
    "AUTO-SUBMITTED", "X-AUTOREPLY", "X-AUTORESPOND", "PRECEDENCE", "LIST-ID", "LIST-UNSUBSCRIBE",
    "CONTENT-TYPE", "CONTENT-TRANSFER-ENCODING",
)

# Column limits (PostgreSQL enforces VARCHAR lengths).
MAX_EMAIL = 320
MAX_NAME = 300
MAX_ID = 998
MAX_SUBJECT = 1000
MAX_LIST_ID = 500
MAX_AUTO_SUBMITTED = 100
MAX_PRECEDENCE = 50
MAX_CONTENT_TYPE = 200
MAX_REFERENCES = 200  # ids kept: the first and the most recent, as mailers trim them
MAX_ADDRESSES = 5000  # per message, all roles together; more are noted in parse_error
MAX_ERROR = 1000
CACHE_MAX_VALUE = 1000  # header values longer than this are parsed without caching

# Bcc comes last so that it never takes MAX_ADDRESSES room from the others: the parser reports every
# role alike, and the row builder keeps Bcc only for our own e-mails (rows.py).
ADDRESS_ROLES = (("from", "from"), ("to", "to"), ("cc", "cc"), ("reply-to", "reply_to"), ("bcc", "bcc"))
EARLIEST_DATE = datetime(1971, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=2)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


# --------------------------------------------------------------------------- text decoding

_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SPACES_RE = re.compile(r"\s+")


def decode_raw(value: bytes) -> str:
    """Bytes of a header as text: ASCII, else UTF-8, else cp1252, else latin-1 (never fails)."""
    if value.isascii():
        text = value.decode("ascii")
    else:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = value.decode("cp1252")
            except UnicodeDecodeError:
                text = value.decode("latin-1")
    return text


def clean_text(text: str) -> str:
    """One line of text: control characters and NULs removed, whitespace collapsed."""
    if text.isprintable() and "  " not in text:  # the usual case, checked in C
        return text.strip()
    if _CONTROL_RE.search(text):
        text = _CONTROL_RE.sub(" ", text.replace("\x00", ""))
    if "  " in text or "\t" in text or "\n" in text or "\xa0" in text:
        text = _SPACES_RE.sub(" ", text)
    return text.strip()


_CHARSET_ALIASES = {
    "x-sjis": "shift_jis", "sjis": "shift_jis", "shift-jis": "shift_jis", "x-euc-jp": "euc_jp",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cn-gb": "gb18030", "euc-cn": "gb18030",
    "iso-8859-8-i": "iso-8859-8", "iso-8859-6-i": "iso-8859-6", "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949", "euc-kr": "cp949", "unicode-1-1-utf-7": "utf-7", "x-unicode20utf8": "utf-8",
    "utf8": "utf-8", "ansi_x3.4-1968": "ascii", "x-user-defined": "cp1252", "windows-874": "cp874",
    # Mailers label cp1252 text as latin-1 all the time; cp1252 is a superset for printable text.
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "iso8859-1": "cp1252",
    "us-ascii": "ascii", "ascii": "ascii", "default": "utf-8", "unknown-8bit": "utf-8",
}
_codec_cache: dict[str, str | None] = {}


def codec_for(charset: str) -> str | None:
    """A Python codec name for a MIME charset label, or None when unknown."""
    charset = charset.strip().strip('"').lower()
    found = _codec_cache.get(charset, False)
    if found is not False:
        return found  # type: ignore[return-value]
    name = _CHARSET_ALIASES.get(charset, charset)
    try:
        codec = codecs.lookup(name).name
        # Codecs that are not text encodings (e.g. "base64", "rot13") are not charsets.
        if codec in ("base64", "hex", "quopri", "rot-13", "uu", "zlib", "bz2"):
            codec = None
    except (LookupError, ValueError):
        codec = None
    if len(_codec_cache) < 1000:
        _codec_cache[charset] = codec
    return codec


def decode_bytes(data: bytes, charset: str, errors: list[str] | None = None, where: str = "") -> str:
    """Decode ``data`` labelled ``charset``, guessing when the label is unknown or wrong."""
    codec = codec_for(charset)
    if codec is not None:
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
        except Exception:  # noqa: BLE001 - some codecs raise other errors on garbage
            pass
    elif errors is not None:
        errors.append(f"{where}unknown charset {charset[:40]!r}")
    # Mislabelled or unknown: the usual suspects, then latin-1 which accepts any byte.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if codec is not None and errors is not None:
        errors.append(f"{where}text is not valid {charset[:40]}")
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/]*=*$")


def _word_bytes(encoding: str, payload: str) -> bytes | None:
    if encoding in "bB":
        payload = payload.strip()
        if not _BASE64_RE.match(payload):
            return None
        payload = payload.rstrip("=")
        payload += "=" * (-len(payload) % 4)
        try:
            return binascii.a2b_base64(payload.encode("ascii"))
        except (binascii.Error, ValueError):
            return None
    return binascii.a2b_qp(payload.encode("utf-8"), header=True)


def decode_words(text: str, errors: list[str] | None = None, where: str = "") -> str:
    """Decode RFC 2047 encoded words; whitespace between adjacent words is dropped."""
    if "=?" not in text:
        return text
    out: list[str] = []
    pending = b""
    pending_charset = ""
    pos = 0
    previous_was_word = False
    for match in _ENCODED_WORD_RE.finditer(text):
        between = text[pos:match.start()]
        if not (previous_was_word and (not between or between.isspace())):
            if pending:
                out.append(decode_bytes(pending, pending_charset, errors, where))
                pending = b""
            out.append(between)
        pos = match.end()
        charset = match.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        data = _word_bytes(match.group(2), match.group(3))
        if data is None:
            if errors is not None:
                errors.append(f"{where}undecodable encoded word")
            if pending:
                out.append(decode_bytes(pending, pending_charset, errors, where))
                pending = b""
            out.append(match.group(0))
            previous_was_word = False
            continue
        if pending and charset.lower() != pending_charset.lower():
            out.append(decode_bytes(pending, pending_charset, errors, where))
            pending = b""
        # Same charset: join the bytes first, a multi-byte character may span two words.
        pending += data
        pending_charset = charset
        previous_was_word = True
    if pending:
        out.append(decode_bytes(pending, pending_charset, errors, where))
    out.append(text[pos:])
    return "".join(out)


def header_text(value: bytes, errors: list[str] | None = None, where: str = "") -> str:
    """A header value as clean, decoded, single-line text."""
    text, problems = _header_text(value) if len(value) <= CACHE_MAX_VALUE else _header_text.__wrapped__(value)
    if problems and errors is not None:
        errors.extend(where + problem for problem in problems)
    return text


@functools.lru_cache(maxsize=4096)
def _header_text(value: bytes) -> tuple[str, tuple[str, ...]]:
    # Cached: threads and lists repeat subjects.
    problems: list[str] = []
    return clean_text(decode_words(decode_raw(value), problems)), tuple(problems)


# --------------------------------------------------------------------------- addresses

_SIMPLE_NAME_ADDR_RE = re.compile(r'^\s*([^<>"()\\,;:]*?)\s*<\s*([^<>\s"()\\,;:]+)\s*>\s*$')
_SIMPLE_ADDR_RE = re.compile(r'^\s*<?\s*([^<>\s"()\\,;:]+)\s*>?\s*$')
_LOOSE_ADDR_RE = re.compile(r'[^\s<>()\[\],;:"@]+@[^\s<>()\[\],;:"@]+')
_ATOM = r'[^\s<>()\[\],;:"\\@\x00-\x1f\x7f]'
_VALID_ADDR_RE = re.compile(
    rf'(?:"[^"\s\\]+"|{_ATOM}+)@(?:{_ATOM.replace("@", "@.")}+\.)+({_ATOM.replace("@", "@.")}+)'
)


def normalize_address(address: str) -> str | None:
    """The stored form of an address (trimmed, lower case), or None when it is not a usable address."""
    address = address.strip().strip("<>").strip().lower()
    if not address or len(address) > MAX_EMAIL:
        return None
    match = _VALID_ADDR_RE.fullmatch(address)
    if match is None or match.group(1).isdigit():  # a bare IP address is not a mailbox people write to
        return None
    return address


def _clean_name(name: str, address: str, errors: list[str] | None, where: str) -> str:
    if not name:
        return ""
    if "=?" in name:
        name = decode_words(name, errors, where)
    name = clean_text(name).strip('"').strip("'").strip()
    if name.lower() == address or name.lower() == f"<{address}>":
        return ""
    return name[:MAX_NAME]


def parse_addresses(value: str, errors: list[str] | None = None, where: str = "") -> list[tuple[str, str]]:
    """``(email, name)`` pairs of an address header; invalid addresses are dropped."""
    # Long lists are rare and would crowd the cache out.
    pairs, problems = _parse_addresses(value) if len(value) <= CACHE_MAX_VALUE else _parse_addresses.__wrapped__(value)
    if problems and errors is not None:
        errors.extend(where + problem for problem in problems)
    return list(pairs)


@functools.lru_cache(maxsize=8192)
def _parse_addresses(value: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    # Cached: the same To/From values come back in most messages of a mailbox.
    problems: list[str] = []
    value = value.replace("\x00", "")
    pairs: list[tuple[str, str]] | None = None
    if not any(c in value for c in '"()\\;:'):
        pairs = []
        for part in value.split(","):
            if not part.strip():
                continue
            match = _SIMPLE_NAME_ADDR_RE.match(part) or None
            if match is not None:
                pairs.append((match.group(2), match.group(1)))
                continue
            match = _SIMPLE_ADDR_RE.match(part)
            if match is None:
                pairs = None  # not simple after all
                break
            pairs.append((match.group(1), ""))
    if pairs is None:
        try:
            pairs = [(addr, name) for name, addr in email.utils.getaddresses([value])]
        except Exception:  # noqa: BLE001 - the stdlib parser has crashed on hostile input before
            pairs = []
    result: list[tuple[str, str]] = []
    seen: set[str] = set()
    for addr, name in pairs:
        normalized = normalize_address(addr)
        if normalized is None or normalized in seen:
            continue
        seen.add(normalized)
        result.append((normalized, _clean_name(name, normalized, problems, "")))
    if not result and "@" in value:
        # Broken syntax (unbalanced quotes, missing brackets): salvage what looks like an address.
        for candidate in _LOOSE_ADDR_RE.findall(value):
            normalized = normalize_address(candidate)
            if normalized is not None and normalized not in seen:
                seen.add(normalized)
                result.append((normalized, ""))
        problems.append("address list is malformed" + ("; read what looked like addresses" if result else ""))
    return tuple(result), tuple(problems)


# --------------------------------------------------------------------------- ids and dates

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


_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                       "nov", "dec"), start=1)}
_FAST_DATE_RE = re.compile(
    r"^\s*(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s+([+-])(\d{2})(\d{2})"
)
_tz_cache: dict[int, timezone] = {}


def _tz(offset_minutes: int) -> timezone:
    tz = _tz_cache.get(offset_minutes)
    if tz is None:
        tz = _tz_cache[offset_minutes] = timezone(timedelta(minutes=offset_minutes))
    return tz


def parse_date(value: str) -> datetime | None:
    """The Date header as an aware UTC datetime, or None when unreadable."""
    match = _FAST_DATE_RE.match(value)
    if match is not None:
        day, mon, year, hour, minute, second, sign, tzh, tzm = match.groups()
        month = _MONTHS.get(mon.lower())
        offset = int(tzh) * 60 + int(tzm)
        if month is not None and offset < 24 * 60:
            try:
                local = datetime(int(year), month, int(day), int(hour), int(minute), int(second or 0),
                                 tzinfo=_tz(-offset if sign == "-" else offset))
                return local.astimezone(UTC)
            except (ValueError, OverflowError):
                return None
    try:
        parsed = email.utils.parsedate_tz(value)
    except Exception:  # noqa: BLE001
        parsed = None
    if parsed is not None:
        try:
            offset = parsed[9] or 0
            if abs(offset) >= 24 * 3600:
                return None
            local = datetime(*parsed[:6], tzinfo=timezone(timedelta(seconds=offset)))
            return local.astimezone(UTC)
        except (ValueError, OverflowError, TypeError):
            return None
    try:  # ISO 8601, which some scripts write
        parsed_iso = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed_iso.tzinfo is None:
        parsed_iso = parsed_iso.replace(tzinfo=UTC)
    try:
        return parsed_iso.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def plausible_date(value: datetime | None, received: datetime | None) -> bool:
    if value is None or value < EARLIEST_DATE:
        return False
    limit = (received or datetime.now(UTC)) + FUTURE_SLACK
    return value <= limit


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


def dedup_key(message_id: str | None, from_email: str | None, date: datetime, subject: str, size: int) -> str:
    """The Message-ID, or a stable hash of what identifies a message without one."""
    if message_id:
        return message_id
    seconds = int((date - _EPOCH).total_seconds()) if date.tzinfo else int(date.timestamp())
    basis = f"{from_email or ''}\x1f{seconds}\x1f{subject}\x1f{size}"
    return "sha1:" + hashlib.sha1(basis.encode("utf-8", "replace")).hexdigest()
