"""The keys of the triggers the host itself offers (declared as event types in builtin.py)."""
from __future__ import annotations

CONTACT_CREATED = "contact_created"
MANUAL = "manual"
HOURLY = "schedule_hourly"
DAILY = "schedule_daily"
SCHEDULED = (HOURLY, DAILY)
