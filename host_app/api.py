"""What plugins may use of the host: the one module they import it from (with ``host_app.hookimpl``).

Every name here is documented in docs/internals.md, and tests fail when a
plugin imports another host module or when this list and that document
differ. Names are only ever added. The hooks themselves are in hookspecs.py.
"""
from __future__ import annotations

from .auth import admin_required, create_agent
from .automation_engine import conditions
from .cli import echo_json
from .events import emit, event_types
from .extensions import db
from .instance import instance_secret
from .jobs import app_job, enqueue, queue, redis_connection
from .migrating import upgrade as upgrade_database
from .models import Agent, AutomationRule, Contact, normalize_email, utcnow
from .runner import ensure_port_free, ensure_redis, start_background, stop_children
from .sql import NotIndexed, UTCDateTime, bulk_insert_or_ignore, insert_or_ignore, member_of
from .values import (
    Action,
    Audience,
    Condition,
    ContactPanel,
    ContactProvider,
    Event,
    EventType,
    Occurrence,
    PageNotice,
    Person,
    RecurringJob,
    SettingsPage,
    TimelineEntry,
    TimelineFilter,
)

__all__ = [
    # Value types of the hooks
    "Action", "Audience", "Condition", "ContactPanel", "ContactProvider", "Event", "EventType", "Occurrence",
    "PageNotice", "Person", "RecurringJob", "SettingsPage", "TimelineEntry", "TimelineFilter",
    # The database
    "db", "UTCDateTime", "utcnow", "member_of", "bulk_insert_or_ignore", "insert_or_ignore", "NotIndexed",
    # The host's models
    "Agent", "AutomationRule", "Contact", "normalize_email", "create_agent",
    # Events and automations
    "emit", "event_types", "conditions",
    # Jobs
    "app_job", "enqueue", "queue", "redis_connection",
    # Web and command line
    "admin_required", "echo_json",
    # The instance and its processes
    "instance_secret", "upgrade_database", "ensure_port_free", "ensure_redis", "start_background", "stop_children",
]
