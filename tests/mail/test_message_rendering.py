"""plugins/mail/rendering.py on what senders really send: nested parts, encoded file names, lying charsets,
broken encodings, hostile HTML. It never raises."""
from __future__ import annotations

import pytest

from plugins.mail import rendering


def _mime(*lines: str) -> bytes:
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


def test_nested_multiparts_give_text_html_and_attachments_with_encoded_names():
    raw = _mime(
        "From: a@b.example", "Subject: nested", "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="outer"', "",
        "--outer", 'Content-Type: multipart/alternative; boundary="inner"', "",
        "--inner", "Content-Type: text/plain; charset=iso-8859-1", "Content-Transfer-Encoding: quoted-printable", "",
        "Gr=FC=DFe,", "zweite Zeile", "--inner", "Content-Type: text/html; charset=utf-8", "",
        "<p>Gr\u00fc\u00dfe</p>", "--inner--",
        "--outer", "Content-Type: application/pdf",
        "Content-Disposition: attachment; filename*=UTF-8''Rechnung%20f%C3%BCr%20M%C3%A4rz.pdf",
        "Content-Transfer-Encoding: base64", "", "JVBERi0xLjQKAAAA", "",
        "--outer", 'Content-Type: text/plain; name="=?utf-8?q?Notiz_=C3=BCber_uns.txt?="',
        'Content-Disposition: attachment; filename="=?utf-8?q?Notiz_=C3=BCber_uns.txt?="', "", "hello", "",
        "--outer", "Content-Type: image/svg+xml", 'Content-Disposition: attachment; filename="..\\\\..\\\\x.svg"',
        "", "<svg onload='alert(1)'/>", "--outer--", "")
    result = rendering.render(raw)
    assert result.text == "Grüße,\nzweite Zeile"
    assert result.html == "<p>Grüße</p>"
    names = [(a.filename, a.content_type, a.size) for a in result.attachments]
    assert names == [("Rechnung für März.pdf", "application/pdf", 12), ("Notiz über uns.txt", "text/plain", 7),
                     ("x.svg", "image/svg+xml", 24)]
    assert result.problems == []


@pytest.mark.parametrize("raw, expected", [
    # An unknown charset label: the bytes are guessed (UTF-8, then cp1252).
    (_mime("Content-Type: text/plain; charset=x-unknown", "", "caf\u00e9 ok"), "café ok"),
    # Labelled UTF-8 but really Latin-1.
    (b"Content-Type: text/plain; charset=utf-8\r\n\r\ncaf\xe9 ok", "café ok"),
    # No MIME headers at all.
    (b"Subject: bare\r\n\r\njust text\r\n", "just text\n"),
    # Base64 that is not base64.
    (_mime("Content-Type: text/plain", "Content-Transfer-Encoding: base64", "", "!!!not base64!!!"), ""),
])
def test_lying_charsets_and_broken_encodings_still_read(raw, expected):
    result = rendering.render(raw)
    assert expected in (result.text or "")


def test_unclosed_and_boundaryless_multiparts_never_raise():
    for raw in (
        _mime("Content-Type: multipart/mixed", "", "no boundary at all"),
        _mime('Content-Type: multipart/mixed; boundary="b"', "", "--b", "Content-Type: text/plain", "", "cut off"),
        b"",
        b"\x00\xff\xfe garbage",
    ):
        result = rendering.render(raw)
        assert isinstance(result, rendering.RenderedMessage)
    assert "cut off" in rendering.render(
        _mime('Content-Type: multipart/mixed; boundary="b"', "", "--b", "Content-Type: text/plain", "", "cut off")
    ).text


def test_html_is_cleaned_and_remote_images_wait_for_the_reader():
    raw = _mime(
        'Content-Type: multipart/related; boundary="r"', "",
        "--r", "Content-Type: text/html", "",
        '<div style="color:red;background-image:url(https://t.example/bg)">hi</div>'
        '<img src="https://t.example/p.gif" onerror="x()"><img src="cid:svg@x"><img src="cid:png@x">'
        '<img src="data:image/svg+xml;base64,PHN2Zy8+"><a href="javascript:x()">j</a>'
        '<a href="mailto:a@b.example">m</a>',
        "--r", "Content-Type: image/svg+xml", "Content-ID: <svg@x>", "", "<svg onload='x()'/>",
        "--r", "Content-Type: image/png", "Content-ID: <png@x>", "Content-Transfer-Encoding: base64", "",
        "iVBORw0KGgo=", "--r--", "")
    blocked = rendering.render(raw)
    assert blocked.remote_images is True
    assert "t.example" not in blocked.html and "onerror" not in blocked.html and "javascript" not in blocked.html
    assert "svg" not in blocked.html  # neither the cid: SVG nor the sender's data: SVG
    assert 'style="color:red"' in blocked.html
    assert '<img src="data:image/png;base64,iVBORw0KGgo=">' in blocked.html
    assert 'href="mailto:a@b.example"' in blocked.html
    assert blocked.attachments == []  # inline images of the HTML are not files
    shown = rendering.render(raw, show_images=True)
    assert '<img src="https://t.example/p.gif">' in shown.html
    assert "background-image" not in shown.html  # style never loads anything, asked or not


def test_plain_text_links_are_escaped_and_clickable():
    html = rendering.linkify('<b>x</b> see https://a.example/x?y=1&z=2, or www.b.example.\nmailto:c@d.example')
    assert html.startswith("&lt;b&gt;x&lt;/b&gt; see ")
    assert '<a href="https://a.example/x?y=1&amp;z=2" target="_blank" rel="noopener noreferrer">' in html
    assert '<a href="https://www.b.example"' in html and "</a>.\n" in html
    assert '<a href="mailto:c@d.example"' in html


@pytest.mark.parametrize("name, safe", [
    ("../../etc/passwd", "passwd"), ("C:\\Windows\\evil.exe", "evil.exe"), ("..", "attachment"),
    (".htaccess", "htaccess"), ("a\x00b<c>.txt", "a_b_c_.txt"), ("Grüße.pdf", "Grüße.pdf"), ("", "attachment"),
])
def test_attachment_names_name_only_a_file(name, safe):
    assert rendering.safe_filename(name) == safe
