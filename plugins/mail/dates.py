"""The Date header: read fast in its usual RFC 5322 shape, by the standard library otherwise, then checked."""
from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime, timedelta, timezone

EARLIEST_DATE = datetime(1971, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=2)

_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                       "nov", "dec"), start=1)}
_FAST_DATE_RE = re.compile(
    r"^\s*(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s+([+-])(\d{2})(\d{2})"
)
_tz_cache: dict[int, timezone] = {}


def _tz(offset_minutes: int) -> timezone:
    tz = _tz_cache.get(offset_minutes)
    if tz is None:
        tz = _tz_cache[offset_minutes] = timezone(timedelta(minutes=offset_minutes))
    return tz


def parse_date(value: str) -> datetime | None:
    """The Date header as an aware UTC datetime, or None when unreadable."""
    match = _FAST_DATE_RE.match(value)
    if match is not None:
        day, mon, year, hour, minute, second, sign, tzh, tzm = match.groups()
        month = _MONTHS.get(mon.lower())
        offset = int(tzh) * 60 + int(tzm)
        if month is not None and offset < 24 * 60:
            try:
                local = datetime(int(year), month, int(day), int(hour), int(minute), int(second or 0),
                                 tzinfo=_tz(-offset if sign == "-" else offset))
                return local.astimezone(UTC)
            except (ValueError, OverflowError):
                return None
    try:
        parsed = email.utils.parsedate_tz(value)
    except Exception:  # noqa: BLE001
        parsed = None
    if parsed is not None:
        try:
            offset = parsed[9] or 0
            if abs(offset) >= 24 * 3600:
                return None
            local = datetime(*parsed[:6], tzinfo=timezone(timedelta(seconds=offset)))
            return local.astimezone(UTC)
        except (ValueError, OverflowError, TypeError):
            return None
    try:  # ISO 8601, which some scripts write
        parsed_iso = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed_iso.tzinfo is None:
        parsed_iso = parsed_iso.replace(tzinfo=UTC)
    try:
        return parsed_iso.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def plausible_date(value: datetime | None, received: datetime | None) -> bool:
    if value is None or value < EARLIEST_DATE:
        return False
    limit = (received or datetime.now(UTC)) + FUTURE_SLACK
    return value <= limit
