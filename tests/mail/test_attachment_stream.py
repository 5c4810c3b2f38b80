"""Attachments decoded as their chunks arrive, whatever the chunk boundaries; names for the download header."""
from __future__ import annotations

import base64
import binascii
import os

import pytest

from plugins.mail import attachments


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 77, 1000])
def test_base64_and_quoted_printable_decode_across_any_chunk_boundary(chunk_size):
    payload = os.urandom(5000)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    chunks = [encoded[i:i + chunk_size] for i in range(0, len(encoded), chunk_size)]
    assert b"".join(attachments.decoded(chunks, "Base64")) == payload
    text = "Grüße, line one\nline two with = sign and a very long line " * 30
    qp = binascii.b2a_qp(text.encode("utf-8"))
    chunks = [qp[i:i + chunk_size] for i in range(0, len(qp), chunk_size)]
    assert b"".join(attachments.decoded(chunks, "quoted-printable")).decode("utf-8") == text
    assert b"".join(attachments.decoded([b"ab", b"c"], "7bit")) == b"abc"


def test_broken_base64_loses_only_the_broken_quantum():
    assert b"".join(attachments.decoded([b"SGVs", b"bG8h", b"=="], "base64")) == b"Hello!"
    assert b"".join(attachments.decoded([b"SGVsbG8", b"h"], "base64")) == b"Hello!"


def test_the_download_header_names_the_file_in_ascii_and_utf8():
    assert attachments.content_disposition('Grüße "final".pdf') == (
        "attachment; filename=\"Grue _final_.pdf\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe%20%22final%22.pdf")
    assert attachments.content_disposition("日本.txt") == (
        "attachment; filename=\"attachment.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt")
