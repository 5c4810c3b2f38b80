"""A short plain-text excerpt of a message for the timeline.

Servers with the PREVIEW extension (RFC 8970, e.g. Dovecot) make it
themselves; for the others the sync fetches the first ~2 kB of the body and
this module digs the first text part out of it: MIME boundaries, transfer
encodings (even cut off mid-way), charsets and HTML tags. Best effort, never
raises.
"""
from __future__ import annotations

import binascii
import html
import re

from .decoding import clean_text, decode_bytes, decode_raw
from .headers import split_fields

PREVIEW_LENGTH = 200

_BOUNDARY_RE = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^\s;]+))', re.IGNORECASE)
_CHARSET_RE = re.compile(r'charset\s*=\s*(?:"([^"]+)"|([^\s;]+))', re.IGNORECASE)
_TAG_RE = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>|<[^>]*$", re.IGNORECASE | re.DOTALL)


def _param(pattern: re.Pattern, value: str) -> str:
    match = pattern.search(value)
    if match is None:
        return ""
    return (match.group(1) or match.group(2) or "").strip()


def _decode_transfer(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "base64":
        compact = re.sub(rb"[^A-Za-z0-9+/]", b"", data.split(b"=", 1)[0])
        # The excerpt may end mid-quantum: a lone trailing character carries no whole byte.
        if len(compact) % 4 == 1:
            compact = compact[:-1]
        compact += b"=" * (-len(compact) % 4)
        try:
            return binascii.a2b_base64(compact)
        except (binascii.Error, ValueError):
            return b""
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    return data


def _text_of(body: bytes, content_type: str, transfer_encoding: str, depth: int = 0) -> str | None:
    mime = content_type.split(";", 1)[0].strip().lower() or "text/plain"
    if mime.startswith("multipart/") and depth < 5:
        boundary = _param(_BOUNDARY_RE, content_type)
        if not boundary:
            return None
        html_fallback = None
        for part in body.split(b"--" + boundary.encode("utf-8", "replace"))[1:]:
            if part.startswith(b"--"):
                break
            head, sep, part_body = part.lstrip(b"\r\n").partition(b"\n\r\n")
            if not sep:
                head, sep, part_body = part.lstrip(b"\r\n").partition(b"\n\n")
            fields = split_fields(head + b"\n\n")
            part_type = decode_raw((fields.get("content-type") or [b"text/plain"])[0])
            part_encoding = decode_raw((fields.get("content-transfer-encoding") or [b""])[0])
            text = _text_of(part_body, part_type, part_encoding, depth + 1)
            if text:
                if part_type.lower().lstrip().startswith("text/html"):
                    html_fallback = html_fallback or text
                    continue
                return text
        return html_fallback
    if not mime.startswith("text/"):
        return None
    data = _decode_transfer(body, transfer_encoding)
    text = decode_bytes(data, _param(_CHARSET_RE, content_type) or "utf-8")
    if mime == "text/html":
        text = html.unescape(_TAG_RE.sub(" ", text))
    return text


def _excerpt(text: str) -> str:
    # Quoted replies and signatures say nothing new: keep the message's own first lines.
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(">"):
            continue
        if stripped in ("--", "-- "):
            break
        lines.append(stripped)
    text = clean_text(" ".join(lines))
    if len(text) > PREVIEW_LENGTH:
        text = text[:PREVIEW_LENGTH].rsplit(" ", 1)[0] + "…"
    return text


def preview_from_body(body_start: bytes | None, content_type: str | None, transfer_encoding: str | None) -> str | None:
    """An excerpt from the first bytes of a body, given the message's Content-Type and transfer encoding."""
    if not body_start:
        return None
    try:
        text = _text_of(body_start, content_type or "text/plain", transfer_encoding or "")
    except Exception:  # noqa: BLE001 - a preview is a nicety; a broken body must not cost the message
        return None
    return _excerpt(text) or None if text else None


def clean_preview(text: str | None) -> str | None:
    """A server-made preview, tidied and capped."""
    if not text:
        return None
    return _excerpt(text.replace("\x00", "")) or None
