"""Reply subjects: strip reply prefixes ("Re:", "AW:", "SV:", "回复:" ...) and compare subjects loosely.

The subject fallback of a conversation, in the mail core so that its readers
share one rule: a message without In-Reply-To and References answers an
e-mail when its subject is a reply prefix followed by that e-mail's subject
(the reply condition's matcher, the timeline's threads in conversations.py).
"""
from __future__ import annotations

import hashlib
import re

# Reply prefixes as mailers write them, lower case (matched case-insensitively).
# Forward prefixes (Fwd, WG, TR, RV ...) are deliberately absent: a forward is not a reply.
REPLY_PREFIXES = (
    "re",  # English, Latin and most mailers
    "aw",  # German "Antwort"
    "sv",  # Swedish, Danish, Norwegian "Svar"
    "vs",  # Finnish "Vastaus"
    "antw",  # Dutch
    "odp",  # Polish "Odpowiedź"
    "odg",  # Croatian, Serbian
    "r",  # Italian (Outlook)
    "rif",  # Italian "Riferimento"
    "ref",
    "réf",  # French (some mailers)
    "res",  # Portuguese "Resposta"
    "atb",  # Latvian
    "ats",  # Lithuanian
    "vá",  # Hungarian "Válasz"
    "ynt",  # Turkish "Yanıt"
    "yanit",
    "απ",  # Greek
    "σχετ",  # Greek
    "תשובה",  # Hebrew
    "رد",  # Arabic
    "回复",  # Chinese (simplified)
    "回覆",  # Chinese (traditional)
    "答复",
    "答覆",
    "返信",  # Japanese
    "회신",  # Korean
    "답장",  # Korean
)
_PREFIX_ALTERNATION = "|".join(re.escape(p) for p in sorted(set(REPLY_PREFIXES), key=len, reverse=True))
# One prefix: the word, an optional counter ("Re[2]:", "Re(3):", "Re^2:"), a colon (ASCII or full width).
_REPLY_PREFIX = re.compile(
    rf"^\s*(?:{_PREFIX_ALTERNATION})\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：]\s*",
    re.IGNORECASE,
)
_WHITESPACE = re.compile(r"\s+")


def strip_reply_prefixes(subject: str) -> tuple[str, int]:
    """Return the subject without its leading reply prefixes and how many were removed.

    >>> strip_reply_prefixes("RE: Re[2]: AW: Offer")
    ('Offer', 3)
    """
    text = subject or ""
    removed = 0
    while True:
        match = _REPLY_PREFIX.match(text)
        if not match or match.end() == 0:
            return text.strip(), removed
        text = text[match.end():]
        removed += 1


def normalize_subject(subject: str) -> str:
    """Subject as compared by the fallback: reply prefixes stripped, whitespace collapsed, casefolded."""
    stripped, _ = strip_reply_prefixes(subject or "")
    return _WHITESPACE.sub(" ", stripped).strip().casefold()


def subject_key(subject: str) -> str | None:
    """A short, indexable key of the normalized subject (``None`` for an empty subject)."""
    normalized = normalize_subject(subject)
    if not normalized:
        return None
    return hashlib.sha1(normalized.encode("utf-8")).hexdigest()


def reply_subject_key(subject: str) -> str | None:
    """The key of the subject a reply answers: only for subjects that start with a reply prefix."""
    _, removed = strip_reply_prefixes(subject or "")
    return subject_key(subject) if removed else None
