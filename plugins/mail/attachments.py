"""Downloading an attachment: the part streamed from its transport (``open_message_part``), decoded on the way.

The file always downloads (``Content-Disposition: attachment``) as opaque bytes
(``application/octet-stream``, ``nosniff``, a sandboxing CSP), so no HTML, SVG
or PDF a sender attached ever runs on the CRM's origin; its name names only a
file (``rendering.safe_filename``).
"""
from __future__ import annotations

import binascii
import re
import unicodedata
from collections.abc import Iterable, Iterator
from urllib.parse import quote

from flask import current_app

from .models import Message
from .source import SourceUnavailable

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
_NOT_BASE64_RE = re.compile(rb"[^A-Za-z0-9+/=]")


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
