"""Shared helpers of the imap_inbox engine tests (test_imap_*.py)."""
from __future__ import annotations

import datetime as dt
import time

import sqlalchemy as sa

from host_app.extensions import db
from host_app.testing import make_agent, run_jobs
from plugins.imap_inbox.testing import mailgen

OWNER_EMAIL = "owner@team.example"
OWNER_NAME = "Olivia Owner"
OWNER_PASSWORD = "owner-password-1"


def make_owner(app) -> int:
    """The agent who owns the test inboxes (what the ``owner`` fixture gives)."""
    return make_agent(app, OWNER_EMAIL, OWNER_PASSWORD, name=OWNER_NAME)


def connect_inbox(app, mailbox, owner_id: int | None, **overrides) -> int:
    """Connect ``mailbox`` with the real login check, as the UI and the CLI do."""
    from plugins.imap_inbox import service

    values = dict(name="Sales desk", host=mailbox.host, port=mailbox.port, security="ssl",
                  username=mailbox.username, password=mailbox.password, owner_id=owner_id,
                  ca_file=mailbox.ca_file)
    values.update(overrides)
    with app.app_context():
        return service.create_inbox(**values).id


def sync(app, inbox_id: int, **kwargs) -> dict:
    from plugins.imap_inbox.jobs import sync_inbox

    with app.app_context():
        return sync_inbox(inbox_id, **kwargs)


def sync_when_free(app, inbox_id: int, timeout: float = 30) -> dict:
    """The sync here, once no other process runs one of the inbox (connecting enqueues one at once, which a live
    worker may be running): its result, never ``already_running``."""
    deadline = time.monotonic() + timeout
    while (result := sync(app, inbox_id))["status"] == "already_running":
        assert time.monotonic() < deadline, f"inbox {inbox_id}: another sync still runs after {timeout:.0f}s"
        time.sleep(0.2)
    return result


def sync_and_follow_up(app, inbox_id: int, **kwargs) -> dict:
    """The sync job here, then on a real RQ worker what it enqueued (the readers' follow-up jobs, e.g. the
    contacts import and the reply matching); returns the sync's summary."""
    summary = sync(app, inbox_id, **kwargs)
    run_jobs(app)
    return summary


def message(n: int, *, sender="Carla Customer <carla@customer.example>", to="team@team.example",
            subject=None, folder_date=None, **kwargs) -> bytes:
    date = folder_date or dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.UTC) + dt.timedelta(hours=n)
    return mailgen.make_message(sender, to, subject or f"Message {n}", date=date,
                                message_id=kwargs.pop("message_id", f"<m{n}@customer.example>"),
                                **kwargs)


def stored(app, inbox_id: int, folder: str | None = None) -> list[dict]:
    """Stored messages of an inbox (optionally one folder) as dicts, by folder then UID."""
    from plugins.imap_inbox.models import ImapFolder
    from plugins.mail.models import Message

    with app.app_context():
        query = (sa.select(Message, ImapFolder.name).join(ImapFolder, ImapFolder.id == Message.folder_id)
                 .where(Message.inbox_id == inbox_id).order_by(ImapFolder.name, Message.uid))
        if folder is not None:
            query = query.where(ImapFolder.name == folder)
        rows = []
        for message, folder_name in db.session.execute(query):
            row = {c.key: getattr(message, c.key) for c in sa.inspect(message).mapper.column_attrs}
            row["folder"] = folder_name
            rows.append(row)
        return rows


def addresses(app, inbox_id: int) -> list[tuple]:
    from plugins.mail.models import MessageAddress

    with app.app_context():
        return [tuple(r) for r in db.session.execute(
            sa.select(MessageAddress.message_pk, MessageAddress.role, MessageAddress.email)
            .where(MessageAddress.inbox_id == inbox_id)
        )]


def server_snapshot(mailbox, folders=("INBOX", "Sent")) -> dict:
    """FLAGS of every message and STATUS of each folder, straight from the server."""
    snapshot = {}
    with mailbox.client() as imap:
        for folder in folders:
            status = imap.folder_status(folder, [b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY", b"UNSEEN"])
            imap.select_folder(folder, readonly=True)
            flags = imap.get_flags(imap.search("ALL"))
            snapshot[folder] = (status, {uid: sorted(f) for uid, f in flags.items()})
    return snapshot


def sync_carla_and_a_stranger(app, mailbox, owner_id: int, carla_messages, *, stranger_file: bytes | None = None,
                              follow_up: bool = False) -> tuple[int, dict[str, int]]:
    """The opening of the message-page tests: Carla's e-mails (``carla_messages``, raw) and one from a stranger
    who is no contact (with ``stranger_file`` attached as secret.bin when given) in the mailbox, synced into
    "Secret Sales Desk" (and the sync's follow-up jobs run when ``follow_up``), Carla then made a contact.
    Returns the inbox id and ``{Message-ID: stored message id}``."""
    from host_app.models import Contact
    from plugins.mail.models import Message
    from tests.support.mail_samples import CARLA, base_message

    for raw in carla_messages:
        mailbox.append("INBOX", raw)
    stranger = base_message("Not for you", "stranger1@elsewhere.example", 4, sender="Eve <eve@elsewhere.example>")
    stranger.set_content("nobody here is a contact of ours")
    if stranger_file is not None:
        stranger.add_attachment(stranger_file, maintype="application", subtype="octet-stream", filename="secret.bin")
    mailbox.append("INBOX", stranger.as_bytes())
    inbox_id = connect_inbox(app, mailbox, owner_id, name="Secret Sales Desk")
    assert (sync_and_follow_up if follow_up else sync)(app, inbox_id)["status"] == "ok"
    with app.app_context():
        db.session.add(Contact(email=CARLA, name="Carla Customer"))
        db.session.commit()
        ids = dict(db.session.execute(sa.select(Message.message_id, Message.id)).all())
    return inbox_id, ids
