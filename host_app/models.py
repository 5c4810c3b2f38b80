"""The host's own tables: agents, contacts and tags, automations, plugin state."""
from __future__ import annotations

import secrets
from datetime import UTC, datetime

from flask_login import UserMixin
from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db
from .sql import UTCDateTime

ADDED_BY_HAND = "added by hand"  # a contact's source when an agent added it (the others are the importers' words)


def utcnow() -> datetime:
    return datetime.now(UTC)


def normalize_email(address: str) -> str:
    """Return the form an address is stored and compared in: trimmed, lower case."""
    return (address or "").strip().strip("<>").strip().lower()


class Agent(UserMixin, db.Model):
    """A member of the team using the CRM."""

    __tablename__ = "agent"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(300))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # In every session and remember-me cookie; raising it ends them all (sign_out_everywhere).
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    # Set for the one request that logs in, so each login's cookies differ (see get_id).
    login_nonce = None  # not a column

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive agents
        return self.active

    def get_id(self) -> str:
        """What the session and the remember-me cookie carry: id, session version and, from a login, a nonce.

        The loader (auth.load_agent) accepts it only while the version is the agent's current one.
        """
        parts = [str(self.id), str(self.session_version or 0)]
        if self.login_nonce:
            parts.append(self.login_nonce)
        return ":".join(parts)

    def new_login(self) -> None:
        self.login_nonce = secrets.token_urlsafe(12)

    def sign_out_everywhere(self) -> None:
        """End every session and remember-me cookie of this agent (commit to apply)."""
        self.session_version = (self.session_version or 0) + 1

    def set_password(self, password: str) -> None:
        """A new password ends every session: whoever knew the old one may be signed in somewhere."""
        if self.password_hash:
            self.sign_out_everywhere()
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def role(self) -> str:
        return "admin" if self.is_admin else "agent"


class Contact(db.Model):
    """A person the team deals with; one per normalized e-mail address."""

    __tablename__ = "contact"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(300), default="")
    # Set when an agent edits the name, so importers never overwrite it.
    name_edited: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(200), default=ADDED_BY_HAND)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("agent.id", ondelete="SET NULL"), index=True)
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    owner: Mapped[Agent | None] = relationship()
    tag_rows: Mapped[list[ContactTag]] = relationship(
        cascade="all, delete-orphan", order_by="ContactTag.tag", lazy="selectin"
    )

    @property
    def tags(self) -> list[str]:
        return [row.tag for row in self.tag_rows]

    def add_tag(self, tag: str) -> bool:
        tag = tag.strip()
        if not tag or tag in self.tags:
            return False
        self.tag_rows.append(ContactTag(tag=tag))
        return True

    def remove_tag(self, tag: str) -> bool:
        for row in self.tag_rows:
            if row.tag == tag:
                self.tag_rows.remove(row)
                return True
        return False

    @property
    def display_name(self) -> str:
        return self.name or self.email

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "source": self.source,
            "owner": self.owner.email if self.owner else None,
            "tags": self.tags,
            "attributes": self.attributes or {},
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


class ContactTag(db.Model):
    __tablename__ = "contact_tag"

    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)


class AutomationRule(db.Model):
    """Trigger (event type) + conditions (all or any) + actions."""

    __tablename__ = "automation_rule"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[str] = mapped_column(String(100), index=True)
    match: Mapped[str] = mapped_column(String(3), default="all")  # "all" (AND) or "any" (OR)
    conditions: Mapped[list] = mapped_column(JSON, default=list)  # [{"key": ..., "params": {...}}]
    actions: Mapped[list] = mapped_column(JSON, default=list)  # [{"key": ..., "params": {...}}]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # "HH:MM" in the instance's time zone, for the "Every day at" trigger.
    daily_at: Mapped[str | None] = mapped_column(String(5))
    # After an event: how long to wait before the conditions are evaluated (0: at once).
    wait_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AutomationRun(db.Model):
    """One evaluation of a rule for one contact and one event occurrence.

    The unique constraint is what makes a rule fire at most once per contact
    per triggering event, even when an event is emitted twice.
    """

    __tablename__ = "automation_run"
    __table_args__ = (
        UniqueConstraint("rule_id", "contact_id", "event_type", "event_key", name="uq_automation_run_once"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("automation_rule.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), index=True)
    event_type: Mapped[str] = mapped_column(String(100))
    event_key: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20))  # waiting | fired | not_matched | failed | cancelled
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    rule: Mapped[AutomationRule] = relationship()
    contact: Mapped[Contact] = relationship()


class AutomationWait(db.Model):
    """A pending "wait, then check" step: the rule's conditions are evaluated for the contact at ``due_at``.

    Stored, so that it survives restarts of every process; the due ones are
    found with one query on the ``due_at`` index, so pending waits cost
    nothing until they are due. ``run_id`` is the run-log row saying
    "waiting", which the evaluation then completes.
    """

    __tablename__ = "automation_wait"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("automation_rule.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("automation_run.id", ondelete="CASCADE"), unique=True)
    event_type: Mapped[str] = mapped_column(String(100))
    event_key: Mapped[str] = mapped_column(String(500))
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

    rule: Mapped[AutomationRule] = relationship()
    run: Mapped[AutomationRun] = relationship()


class AutomationBulkRun(db.Model):
    """One run of a rule over many contacts at once: by hand ("Run now", ``automations run``) or on its schedule.

    The counts fill in while the run goes, so the page showing its progress
    reads them from here; each contact acted on also gets an ``AutomationRun``
    row keyed by ``event_key`` (``bulk-<id>``), which is what makes a contact
    acted on at most once per run, even when the run's job is started again.
    """

    __tablename__ = "automation_bulk_run"
    # One run per scheduled slot, however many schedulers or ticks see it due (NULL for runs by hand).
    __table_args__ = (UniqueConstraint("rule_id", "slot", name="uq_automation_bulk_run_slot"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("automation_rule.id", ondelete="CASCADE"), index=True)
    origin: Mapped[str] = mapped_column(String(20))  # hand | command | schedule
    slot: Mapped[str | None] = mapped_column(String(60))  # the scheduled time it is the run of, in UTC
    audience: Mapped[str] = mapped_column(String(300))  # "key:value", as resolve_audience reads it
    audience_label: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued | running | done | failed | skipped
    evaluated: Mapped[int] = mapped_column(Integer, default=0)
    matched: Mapped[int] = mapped_column(Integer, default=0)
    acted: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    rule: Mapped[AutomationRule] = relationship()

    @property
    def event_key(self) -> str:
        return f"bulk-{self.id}"

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "skipped")

    def to_dict(self) -> dict:
        return {
            "id": self.id, "rule_id": self.rule_id, "origin": self.origin, "audience": self.audience_label,
            "status": self.status, "evaluated": self.evaluated, "matched": self.matched, "acted": self.acted,
            "failed": self.failed, "error": self.error, "finished": self.finished,
        }


class PluginState(db.Model):
    """Enabled/disabled as set with ``manage.py plugins enable|disable`` or the Plugins page."""

    __tablename__ = "plugin_state"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
