"""Tables owned by contacts_import: per-inbox settings and import state (Create users, policy, watermark, progress)
and the block list."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from host_app.api import UTCDateTime, db, utcnow

# ImportState.policy values
POLICY_WE_WROTE = "we_wrote"  # people we e-mailed only
POLICY_ANY = "any"  # people we e-mailed or who e-mailed us
POLICIES = {
    POLICY_ANY: "People we e-mailed or who e-mailed us",
    POLICY_WE_WROTE: "People we e-mailed only",
}
DEFAULT_POLICY = POLICY_ANY

# ImportState.status values
IDLE = "idle"
QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"

# BlockedEntry.kind values
KIND_ADDRESS = "address"
KIND_DOMAIN = "domain"


class ImportState(db.Model):
    """How one connected inbox is imported: whether at all (Create users), its policy, how far it got (watermark)
    and the last run."""

    __tablename__ = "contacts_import_inbox"

    inbox_id: Mapped[int] = mapped_column(ForeignKey("mail_inbox.id", ondelete="CASCADE"), primary_key=True)
    # On the inbox's form through the mail core's hooks (mailbox_setting.py), and on this plugin's settings page.
    create_users: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    policy: Mapped[str] = mapped_column(String(20), default=DEFAULT_POLICY)
    # Highest mail_message.id already looked at; None means the next run reads the whole mailbox.
    last_message_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=IDLE)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    last_created: Mapped[int] = mapped_column(Integer, default=0)
    total_created: Mapped[int] = mapped_column(Integer, default=0)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class BlockedEntry(db.Model):
    """An address or a whole domain (with its subdomains) never turned into a contact."""

    __tablename__ = "contacts_import_block"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[str] = mapped_column(String(320), unique=True)  # normalized: lower case, no "@" for domains
    kind: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
