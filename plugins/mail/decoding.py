"""Header bytes as clean text: raw 8-bit bytes, RFC 2047 encoded words in any charset, control characters.

Never raises: an unknown or wrong charset is guessed (UTF-8, then cp1252, then
latin-1, which accepts any byte) and described in the caller's ``errors``.
"""
from __future__ import annotations

import binascii
import codecs
import functools
import re

CACHE_MAX_VALUE = 1000  # header values longer than this are parsed without caching

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
