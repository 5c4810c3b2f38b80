"""Attachments: listed without downloading the message, and downloaded streamed from its transport.

**Listing.** A transport describes each leaf part from what its server says
about the message's structure (IMAP: BODYSTRUCTURE) and hands the parts to
:func:`listed_attachment`, which applies the same rules as reading the whole
message (``rendering.is_attachment``, names decoded from RFC 2231 / RFC 2047
and made safe) and estimates the decoded size from the encoded one. The rows
(``MessageAttachment``) give the timeline its paperclips and the message page
its list, even when the server is down or the message gone.

**Downloading.** The part streamed from its transport (``open_message_part``), decoded on the way.

The file always downloads (``Content-Disposition: attachment``) as opaque bytes
(``application/octet-stream``, ``nosniff``, a sandboxing CSP), so no HTML, SVG
or PDF a sender attached ever runs on the CRM's origin; its name names only a
file (``rendering.safe_filename``).
"""
from __future__ import annotations

import binascii
import email
import email.policy
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import quote

import sqlalchemy as sa
from flask import current_app

from host_app.api import bulk_insert_or_ignore, db

from .models import Message, MessageAttachment
from .rendering import filename_of, is_attachment, safe_filename
from .source import SourceUnavailable

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
_NOT_BASE64_RE = re.compile(rb"[^A-Za-z0-9+/=]")


# base64 carries 3 bytes in 4 characters, in lines of 76 characters and CRLF: 57 bytes per 78.
_BASE64_RATIO = 57 / 78
_QP_RATIO = 0.95  # mostly plain letters; "=XX" escapes and soft breaks make it a little longer


def estimated_size(encoding: str, encoded_size: int) -> int:
    """The decoded size of a part from its encoded size (no download needed)."""
    encoding = (encoding or "").strip().lower()
    if encoding == "base64":
        return int(encoded_size * _BASE64_RATIO)
    if encoding == "quoted-printable":
        return int(encoded_size * _QP_RATIO)
    return int(encoded_size)


def _param_text(params: Sequence[tuple[str, str]]) -> str:
    quoted = []
    for name, value in params:
        name = "".join(c for c in name if c.isalnum() or c in "*-_.")
        value = value.replace("\r", " ").replace("\n", " ").replace("\\", "\\\\").replace('"', '\\"')
        if name:
            quoted.append(f'; {name}="{value}"')
    return "".join(quoted)


def listed_attachment(section: str, content_type: str, params: Sequence[tuple[str, str]], content_id: str,
                      disposition: str, disposition_params: Sequence[tuple[str, str]], encoding: str,
                      encoded_size: int) -> dict | None:
    """The ``MessageAttachment`` values of one leaf part as a server describes it, or None when the part is
    the message's text or an inline image of its HTML. Parameters come as the server sent them (RFC 2231
    pieces, RFC 2047 words): they are decoded here like those of a downloaded message."""
    content_type = (content_type or "application/octet-stream").lower()
    # The server's description as the part's own headers, so one set of rules decides for both ways of reading.
    header = f"Content-Type: {content_type}{_param_text(params)}\r\n"
    if content_id:
        header += f"Content-ID: {content_id.replace(chr(13), '').replace(chr(10), '')}\r\n"
    if disposition:
        header += f"Content-Disposition: {disposition.lower()}{_param_text(disposition_params)}\r\n"
    part = email.message_from_string(header + "\r\n", policy=email.policy.compat32)
    if content_type != "message/rfc822" and not is_attachment(part):
        return None
    fallback = f"part-{section}" + (".eml" if content_type == "message/rfc822" else "")
    return {"section": section, "filename": safe_filename(filename_of(part), fallback)[:300],
            "content_type": content_type[:200], "size": estimated_size(encoding, encoded_size),
            "encoding": (encoding or "").strip().lower()[:50]}


def store_listed(listed: dict[int, Sequence[dict]]) -> None:
    """Keep the listed attachments of messages (by message id), in one statement; listing a message again
    changes nothing. The caller commits."""
    bulk_insert_or_ignore(MessageAttachment.__table__,
                          [{"message_pk": message_pk, **a} for message_pk, found in listed.items() for a in found])


def listed_for(message_ids: Sequence[int]) -> dict[int, list[MessageAttachment]]:
    """The listed attachments of these messages, in section order, by message id."""
    found: dict[int, list[MessageAttachment]] = {}
    if not message_ids:
        return found
    for attachment in db.session.scalars(
        sa.select(MessageAttachment).where(MessageAttachment.message_pk.in_(list(message_ids)))
    ):
        found.setdefault(attachment.message_pk, []).append(attachment)
    for listed in found.values():
        listed.sort(key=lambda a: [int(n) for n in a.section.split(".") if n.isdigit()])
    return found


def max_bytes() -> int:
    """The largest attachment that may be downloaded (``MAIL_ATTACHMENT_MAX_BYTES``)."""
    return int(current_app.config.get("MAIL_ATTACHMENT_MAX_BYTES", DEFAULT_MAX_BYTES))


def part_chunks(message: Message, section: str) -> Iterator[bytes]:
    """The transfer-encoded chunks of one part, from whichever transport holds the message."""
    app = current_app._get_current_object()
    chunks = app.extensions["plugins"].hook.open_message_part(app=app, message=message, section=section)
    if chunks is None:
        raise SourceUnavailable("The plugin that reads this inbox is not running, so its attachments cannot be "
                                "downloaded.")
    return iter(chunks)


def decoded(chunks: Iterable[bytes], encoding: str) -> Iterator[bytes]:
    """Chunks decoded from base64 or quoted-printable as they come, holding back only an unfinished quantum
    or line; other encodings pass through."""
    encoding = (encoding or "").strip().lower()
    if encoding == "base64":
        pending = b""
        for chunk in chunks:
            pending += _NOT_BASE64_RE.sub(b"", chunk)
            whole = len(pending) - len(pending) % 4
            if whole:
                yield _b64(pending[:whole])
                pending = pending[whole:]
        if pending.rstrip(b"="):
            yield _b64(pending + b"=" * (-len(pending) % 4))
    elif encoding == "quoted-printable":
        pending = b""
        for chunk in chunks:
            pending += chunk
            cut = pending.rfind(b"\n") + 1
            if cut:
                yield binascii.a2b_qp(pending[:cut])
                pending = pending[cut:]
        if pending:
            yield binascii.a2b_qp(pending)
    else:
        yield from chunks


def _b64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""  # a broken quantum in the sender's encoding: the rest of the file still comes


def content_disposition(filename: str) -> str:
    """``attachment`` with the name as plain ASCII and, for the others, RFC 6266's UTF-8 form."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    ascii_name = re.sub(r'["\\\r\n]', "_", ascii_name).strip()
    if not ascii_name or ascii_name.startswith("."):  # nothing of the name was ASCII but its extension
        ascii_name = "attachment" + ascii_name
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"
