"""imap_inbox's own tables: the IMAP side of a connected inbox and of each of its folders.

The mail core (plugins/mail/models.py) owns inboxes, folders, messages and
addresses; ``ImapInbox`` and ``ImapFolder`` extend its ``Inbox`` and
``Folder`` (joined table inheritance) with what only IMAP needs: the server,
the encrypted password (or OAuth 2.0 refresh token), the sync schedule and the per-folder UID checkpoints.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from host_app.api import UTCDateTime, db
from plugins.mail.models import Folder, Inbox

TRANSPORT = "imap"
# How an inbox logs in: with a password, or with OAuth 2.0 access tokens (SASL XOAUTH2 / OAUTHBEARER).
AUTH_PASSWORD = "password"
AUTH_OAUTH2 = "oauth2"


class ImapInbox(Inbox):
    """A team mailbox connected over IMAP. The password or refresh token is stored encrypted (see crypto.py)."""

    __tablename__ = "imap_inbox"

    id: Mapped[int] = mapped_column(ForeignKey("mail_inbox.id", ondelete="CASCADE"), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=993)
    security: Mapped[str] = mapped_column(String(10), default="ssl")  # "ssl" (implicit TLS) or "starttls"
    auth: Mapped[str] = mapped_column(String(10), default=AUTH_PASSWORD, server_default=AUTH_PASSWORD)
    password_encrypted: Mapped[bytes | None] = mapped_column(db.LargeBinary)  # None for OAuth 2.0
    # OAuth 2.0: the sign-in service (oauth_providers.PROVIDERS) and the refresh token it gave.
    oauth_provider: Mapped[str | None] = mapped_column(String(20))
    refresh_token_encrypted: Mapped[bytes | None] = mapped_column(db.LargeBinary)
    ca_file: Mapped[str | None] = mapped_column(String(1000))  # a PEM file in IMAP_CA_DIR (ca_certificates.py)
    ca_pem: Mapped[str | None] = mapped_column(Text)  # or an uploaded CA certificate (PEM, not secret)
    extra_folders: Mapped[list] = mapped_column(JSON, default=list)  # more folders chosen by the admin
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive transient failures (backoff)
    # "Read the mailbox again" was asked for: the next sync forgets the stored mail first (service.request_resync).
    resync_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    next_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    # Attachments are listed (BODYSTRUCTURE) by a follow-up job of each sync, not by the sync itself: every
    # stored message up to this id was looked at (attachment_listing.py).
    attachments_listed_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    __mapper_args__ = {"polymorphic_identity": TRANSPORT}


class ImapFolder(Folder):
    """One synced IMAP folder with its sync checkpoint."""

    __tablename__ = "imap_folder"

    id: Mapped[int] = mapped_column(ForeignKey("mail_folder.id", ondelete="CASCADE"), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    uidnext: Mapped[int | None] = mapped_column(BigInteger)  # UIDNEXT seen at the last completed sync
    highestmodseq: Mapped[int | None] = mapped_column(BigInteger)
    # Initial sync walks newest-first: every UID >= low_uid is stored. Resuming continues below it.
    low_uid: Mapped[int | None] = mapped_column(BigInteger)
    high_uid: Mapped[int] = mapped_column(BigInteger, default=0)  # highest UID stored
    # After "inboxes resync": new mail up to this UID was announced (email_received/sent) before the stored
    # mail was forgotten, so reading it again announces nothing. Cleared when UIDVALIDITY changes.
    announced_uid: Mapped[int | None] = mapped_column(BigInteger)
    initial_done: Mapped[bool] = mapped_column(Boolean, default=False)
    # {uid: syncs in which the server hung up when asked for that message}; at 3 it is stored as unreadable.
    unreadable: Mapped[dict | None] = mapped_column(JSON)

    __mapper_args__ = {"polymorphic_identity": TRANSPORT}

    def restart_initial_sync(self) -> None:
        """Forget the checkpoint: the next sync reads the whole folder as the first time."""
        self.initial_done = False
        self.low_uid = self.uidnext = self.highestmodseq = None
        self.high_uid = 0
