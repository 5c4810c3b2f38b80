"""Address headers: the ``(email, name)`` pairs of an address list, normalized; broken syntax salvaged.

Common shapes (``Name <a@b>, c@d``) take a fast path; the standard library's
parser reads the rest (groups, comments, quoted names).
"""
from __future__ import annotations

import email.utils
import functools
import re

from .decoding import CACHE_MAX_VALUE, clean_text, decode_words

MAX_EMAIL = 320
MAX_NAME = 300

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
