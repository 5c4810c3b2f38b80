"""Display names as people write them: cleaned, and the best one chosen among many."""
from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

_QUOTES = "\"'`“”„‘’‚«»<>"
_SPACES = re.compile(r"\s+")
_LOOKS_LIKE_ADDRESS = re.compile(r"^\S+@\S+\.\S+$")
MAX_NAME = 300


def clean_name(name: str | None, address: str = "") -> str:
    """Trim quotes and whitespace; drop names that are just an e-mail address (``"bob@x.com" <bob@x.com>``)."""
    text = _SPACES.sub(" ", name or "").strip()
    previous = None
    while text != previous:  # '"  \'Bob\' "' needs several rounds
        previous = text
        text = text.strip().strip(_QUOTES).strip()
    if not text or _LOOKS_LIKE_ADDRESS.match(text) or (address and text.lower() == address.lower()):
        return ""
    return text[:MAX_NAME]


def best_name(seen: Iterable[tuple[str, int, datetime | None]], address: str = "") -> str:
    """The most frequent non-empty name; among equally frequent ones the most recently used.

    ``seen`` holds ``(name, times used, last used)``; names are cleaned first, so
    ``"Bob"`` and ``Bob`` count as one.
    """
    totals: dict[str, list] = {}
    for raw, count, last in seen:
        name = clean_name(raw, address)
        if not name:
            continue
        entry = totals.setdefault(name, [0, None])
        entry[0] += count
        if last is not None and (entry[1] is None or last > entry[1]):
            entry[1] = last
    if not totals:
        return ""
    return max(totals.items(), key=lambda item: (item[1][0], _sortable(item[1][1]), item[0]))[0]


def _sortable(value: datetime | None) -> float:
    if value is None:
        return float("-inf")
    try:
        return value.timestamp()
    except (OverflowError, OSError, ValueError):
        return float("-inf")
