"""Reading real-world headers: encodings, addresses, dates, ids, automated mail; never a crash."""
from __future__ import annotations

import base64
import datetime as dt

import pytest

from plugins.imap_inbox.testing import mailgen
from plugins.mail.addresses import normalize_address, parse_addresses
from plugins.mail.dates import parse_date
from plugins.mail.decoding import decode_words
from plugins.mail.headers import parse_headers, split_fields
from plugins.mail.message_ids import dedup_key
from plugins.mail.preview import clean_preview, preview_from_body

UTC = dt.UTC


def head(*lines: str | bytes) -> bytes:
    return b"\r\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\r\n\r\n"


def b(text: str, charset: str) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


@pytest.mark.parametrize("raw, text", [
    (b("Grüße", "utf-8"), "Grüße"),
    ("=?iso-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=", "Grüße aus Köln"),
    (b("Встреча в пятницу", "koi8-r"), "Встреча в пятницу"),
    (b("お世話になっております", "shift_jis"), "お世話になっております"),
    (b("会議の件", "iso-2022-jp"), "会議の件"),
    (b("项目进展", "gb2312"), "项目进展"),
    ("=?utf-8?Q?a?= =?utf-8?Q?b?=", "ab"),  # whitespace between adjacent words disappears
    ("=?utf-8?Q?a?= plain =?utf-8?Q?b?=", "a plain b"),
    (b("日", "utf-8") + "\r\n " + b("本", "utf-8"), "日本"),
    # One character split across two words: the bytes are joined before decoding.
    (f"=?utf-8?B?{base64.b64encode('日'.encode()[:2]).decode()}?= "
     f"=?utf-8?B?{base64.b64encode('日'.encode()[2:]).decode()}?=", "日"),
    ("=?UTF-8*en?Q?hello?=", "hello"),  # RFC 2231 language suffix
    ("=?windows-1252?Q?=80_100?=", "€ 100"),
    ("no encoded words", "no encoded words"),
])
def test_encoded_words(raw, text):
    assert decode_words(raw) == text


def test_broken_encoded_words_are_kept_and_reported():
    errors: list[str] = []
    assert decode_words("=?x-unknown-42?Q?caf=E9?=", errors) == "café"
    assert "unknown charset" in errors[0]
    errors.clear()
    assert decode_words("=?utf-8?B?!!!not*base64***?=", errors) == "=?utf-8?B?!!!not*base64***?="
    assert errors == ["undecodable encoded word"]
    errors.clear()
    assert decode_words("=?us-ascii?Q?caf=E9?=", errors) == "café"  # mislabelled latin-1
    assert decode_words("=?utf-8?Q?unterminated=C3") == "=?utf-8?Q?unterminated=C3"


def test_raw_8bit_headers_utf8_then_cp1252():
    parsed = parse_headers(head("Subject: Grüße – 東京", "From: J\xfcrgen <j@example.de>".encode("latin-1")))
    assert parsed.subject == "Grüße – 東京"
    assert parsed.from_name == "Jürgen"
    assert parse_headers(head(b"Subject: \x80 and \xe9")).subject == "€ and é"


def test_folding_and_line_endings():
    for eol in (b"\r\n", b"\n", b"\r"):
        raw = eol.join([b"Subject: a long", b"\tfolded subject", b"To: a@example.com,", b"  b@example.com", b"", b""])
        parsed = parse_headers(raw)
        assert parsed.subject == "a long folded subject"
        assert [a[1] for a in parsed.addresses] == ["a@example.com", "b@example.com"]
    assert set(split_fields(b"\xef\xbb\xbfFrom: x@example.com\r\n\r\n")) == {"from"}


@pytest.mark.parametrize("value, expected", [
    ("Alice <Alice@Example.COM>", [("alice@example.com", "Alice")]),
    ('"Doe, John" <john@example.com>, jane@example.com', [("john@example.com", "Doe, John"), ("jane@example.com", "")]),
    ("john@example.com (John Doe)", [("john@example.com", "John Doe")]),
    ("Team: a@example.com, \"B\" <b@example.com>;, c@example.com",
     [("a@example.com", ""), ("b@example.com", "B"), ("c@example.com", "")]),
    ("undisclosed-recipients:;", []),
    ("=?utf-8?Q?J=C3=B6rg?= <joerg@example.de>", [("joerg@example.de", "Jörg")]),
    ("root", []),
    ("john@doe@example.com", []),
    ("a@localhost", []),
    ("x@[192.0.2.1]", []),
    ("a@example.com, A <A@example.com>", [("a@example.com", "")]),  # the same address once
    ("<bounce@example.com>", [("bounce@example.com", "")]),
])
def test_addresses(value, expected):
    assert parse_addresses(value) == expected


def test_broken_address_syntax_is_salvaged_and_reported():
    errors: list[str] = []
    assert parse_addresses('"Doe, John <john@example.com>', errors) == [("john@example.com", "")]
    assert "malformed" in errors[0]


@pytest.mark.parametrize("address, normalized", [
    (" Bob@Example.com ", "bob@example.com"), ("<x@y.example>", "x@y.example"),
    ('"john..doe"@example.com', '"john..doe"@example.com'), ("joerg@münchen.example", "joerg@münchen.example"),
    ("no-at-sign", None), ("a b@example.com", None), ("@example.com", None), ("x@", None), ("x@.com", None),
    ("x" * 320 + "@example.com", None),
])
def test_normalize_address(address, normalized):
    assert normalize_address(address) == normalized


@pytest.mark.parametrize("value, expected", [
    ("Mon, 06 Jan 2025 10:00:00 +0100", dt.datetime(2025, 1, 6, 9, 0, tzinfo=UTC)),
    ("6 Jan 2025 10:00 -0500", dt.datetime(2025, 1, 6, 15, 0, tzinfo=UTC)),
    ("Mon, 6 Jan 2025 10:00:00 GMT", dt.datetime(2025, 1, 6, 10, 0, tzinfo=UTC)),
    ("3 Mar 99 10:00:00", dt.datetime(1999, 3, 3, 10, 0, tzinfo=UTC)),  # two-digit year, no zone
    ("2024-05-06T07:08:09Z", dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
    ("yesterday afternoon", None),
    ("Mon, 32 Foo 2024 25:61:61 +9999", None),
    ("Fri, 01 Jan 10000 00:00:00 +0000", None),
])
def test_dates(value, expected):
    assert parse_date(value) == expected


def test_implausible_date_falls_back_to_internaldate_with_a_note():
    received = dt.datetime(2024, 1, 1, tzinfo=UTC)
    for value in ("Thu, 01 Jan 1970 00:00:00 +0000", "Mon, 01 Jan 2035 00:00:00 +0000", "garbage"):
        parsed = parse_headers(head("From: a@example.com", f"Date: {value}"), received)
        assert parsed.date is None
        assert "Date: unreadable or implausible" in parsed.parse_error
    missing = parse_headers(head("From: a@example.com"), received)
    assert missing.date is None and missing.parse_error is None  # missing is normal, not an error


def test_ids_and_references():
    parsed = parse_headers(head(
        "Message-ID: < spaced id @example.com >", "Message-ID: <second@example.com>",
        "In-Reply-To: not an id, <parent@example.com> trailing",
        "References: <a@example.com>", " <b@example.com>\t<a@example.com>",
    ))
    assert parsed.message_id == "spacedid@example.com"
    assert parsed.in_reply_to == "parent@example.com"
    assert parsed.references == "a@example.com b@example.com"
    assert parse_headers(head("Message-ID: plainid@example.com")).message_id == "plainid@example.com"
    assert parse_headers(head("In-Reply-To: <<<>>>")).in_reply_to is None
    many = " ".join(f"<r{i}@example.com>" for i in range(5000))
    refs = parse_headers(head(f"References: {many}")).references.split()
    assert len(refs) == 200 and refs[0] == "r0@example.com" and refs[-1] == "r4999@example.com"


@pytest.mark.parametrize("line", [
    "List-Id: <dev.lists.example.org>", "List-Unsubscribe: <mailto:u@example.com>", "Precedence: bulk",
    "Precedence: junk", "Precedence: list", "Precedence: auto_reply", "Auto-Submitted: auto-replied",
    "Auto-Submitted: auto-generated (vacation)", "X-Autoreply: yes", "X-Autorespond: 1",
    "Content-Type: multipart/report; report-type=delivery-status",
])
def test_automated_mail(line):
    assert parse_headers(head("From: Person <p@example.com>", line)).automated is True


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@mx.example.com", "postmaster@example.com",
                                    "noreply@shop.example.com", "no-reply@billing.example.net"])
def test_machine_senders_are_automated(sender):
    assert parse_headers(head(f"From: {sender}")).automated is True


def test_personal_mail_is_not_automated():
    parsed = parse_headers(head("From: Person <p@example.com>", "Auto-Submitted: no", "Precedence: normal",
                                "X-Autoreply: no", "Content-Type: text/plain; charset=utf-8"))
    assert parsed.automated is False
    assert parsed.content_type == "text/plain"


def test_more_addresses_than_stored_are_noted():
    many = ", ".join(f"u{i}@example.com" for i in range(6000))
    parsed = parse_headers(head("From: a@example.com", f"To: {many}"))
    assert len(parsed.addresses) == 5000
    assert "only the first 5000" in parsed.parse_error


def test_bcc_is_fetched_and_parsed_like_any_address_header():
    from plugins.mail.headers import HEADER_FIELDS

    assert "BCC" in HEADER_FIELDS
    parsed = parse_headers(head("From: me@team.example", "To: a@example.com",
                                "Bcc: Bea <BEA@example.com>, c@example.com", "Bcc: bea@example.com, d@example.com"))
    assert [a for a in parsed.addresses if a[0] == "bcc"] == [
        ("bcc", "bea@example.com", "Bea"), ("bcc", "c@example.com", ""), ("bcc", "d@example.com", ""),
    ]


def test_a_long_bcc_never_crowds_out_the_other_roles():
    many = ", ".join(f"u{i}@example.com" for i in range(6000))
    parsed = parse_headers(head(f"Bcc: {many}", "From: a@example.com", "To: b@example.com", "Cc: c@example.com"))
    assert [a[0] for a in parsed.addresses[:3]] == ["from", "to", "cc"]
    assert len(parsed.addresses) == 5000


def test_dedup_key_is_the_message_id_or_a_stable_hash():
    date = dt.datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert dedup_key("id@example.com", "a@example.com", date, "Hi", 10) == "id@example.com"
    one = dedup_key(None, "a@example.com", date, "Hi", 10)
    assert one.startswith("sha1:") and one == dedup_key(None, "a@example.com", date, "Hi", 10)
    assert one == dedup_key(None, "a@example.com", date.astimezone(dt.timezone(dt.timedelta(hours=2))), "Hi", 10)
    assert one != dedup_key(None, "a@example.com", date, "Hi", 11)


def test_every_malformed_message_parses_without_raising():
    for name, raw in mailgen.malformed_corpus():
        parsed = parse_headers(raw, dt.datetime(2025, 1, 1, tzinfo=UTC))
        for value in (parsed.subject, parsed.from_name, parsed.message_id or "", parsed.references or ""):
            assert "\x00" not in value, name
        assert len(parsed.subject) <= 1000 and len(parsed.addresses) <= 5000, name
        if name == "two_thousand_recipients":
            assert len(parsed.addresses) == 2001  # the sender and every recipient


def test_generated_mailbox_parses_cleanly():
    for folder, raw in mailgen.generate_mailbox(300, 100, owner="alice@example.com"):
        parsed = parse_headers(raw)
        assert parsed.parse_error is None
        assert parsed.from_email and parsed.message_id and parsed.date and parsed.subject
        if folder == "Sent":
            assert parsed.from_email == "alice@example.com"


@pytest.mark.parametrize("content_type, encoding, body, expected", [
    ("text/plain; charset=utf-8", "quoted-printable", b"Gr=C3=BC=C3=9Fe,\r\nsee you\r\n", "Grüße, see you"),
    ("text/plain; charset=iso-8859-1", "base64", base64.b64encode("Grüße aus Köln".encode("latin-1")),
     "Grüße aus Köln"),
    ("text/html; charset=us-ascii", "7bit", b"<html><style>p{}</style><p>Hello &amp; welcome</p>", "Hello & welcome"),
    ('multipart/alternative; boundary="b1"', "",
     b"--b1\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
     b"--b1\r\nContent-Type: text/plain\r\n\r\nplain text\r\n--b1--",
     "plain text"),
    ('multipart/mixed; boundary="o"', "",
     b'--o\r\nContent-Type: multipart/alternative; boundary="i"\r\n\r\n'
     b"--i\r\nContent-Type: text/plain; charset=utf-8\r\n"
     b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"Hallo Welt") + b"\r\n--i--\r\n--o--",
     "Hallo Welt"),
    ("text/plain", "", b"My answer.\r\n> quoted older text\r\n-- \r\nSignature", "My answer."),
    ("text/plain", "base64", base64.b64encode(b"Hello Welt, this is cut off")[:-2], "Hello Welt, this is cut o"),
    ("application/pdf", "base64", b"JVBERi0=", None),
])
def test_preview_from_the_start_of_a_body(content_type, encoding, body, expected):
    assert preview_from_body(body, content_type, encoding) == expected


def test_server_preview_is_tidied_and_capped():
    assert clean_preview("  Hello\n\nworld\x00 ") == "Hello world"
    long = clean_preview("word " * 100)
    assert len(long) <= 201 and long.endswith("…")
    assert clean_preview("") is None
