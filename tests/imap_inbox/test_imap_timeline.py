"""E-mails on contact timelines (each once, owner's name as source) and the events a sync emits."""
from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import sqlalchemy as sa

from host_app import hookimpl
from host_app.extensions import db
from host_app.models import AutomationRule, Contact
from host_app.testing import make_agent
from plugins.imap_inbox.models import ImapFolder, ImapInbox
from plugins.imap_inbox.testing import mailgen
from plugins.mail import store
from tests.support.imap_helpers import OWNER_NAME, connect_inbox, make_owner, sync
from tests.support.mailbox import Mailbox

UTC = dt.UTC
CARLA = "carla@customer.example"


def when(day: int, hour: int = 9) -> dt.datetime:
    return dt.datetime(2024, 6, day, hour, 0, tzinfo=UTC)


def make_contact(app, email=CARLA, name="Carla Customer") -> int:
    with app.app_context():
        contact = Contact(email=email, name=name)
        db.session.add(contact)
        db.session.commit()
        return contact.id


def entries_for(app, email=CARLA, before=None, limit=30):
    from plugins.mail.timeline import timeline_entries

    with app.app_context():
        contact = db.session.scalar(sa.select(Contact).where(Contact.email == email))
        return timeline_entries(contact, before, limit)


@pytest.fixture
def two_inboxes(app, mailbox, dovecot):
    """Olivia's and Sam's inboxes; one e-mail from Carla reached both."""
    olivia = make_owner(app)
    sam = make_agent(app, "sam@team.example", "sam-password-1", name="Sam Second")
    dovecot.add_user(f"second-{mailbox.username}", "pw-second-1")
    second = Mailbox(dovecot, f"second-{mailbox.username}", "pw-second-1")
    shared = mailgen.make_message(("Carla Customer", "Carla@Customer.example"), [mailbox.username, second.username],
                                  "Order question", date=when(3), message_id="<shared1@customer.example>",
                                  body="Hello team,\nwhere is my order?\n")
    mailbox.write("INBOX", [
        shared,
        mailgen.make_message("Dan <dan@other.example>", [mailbox.username], "Carla in Cc only", date=when(4),
                             cc=[CARLA], message_id="<cc1@other.example>"),
        mailgen.make_message(CARLA, [mailbox.username], "Newest from Carla", date=when(9),
                             message_id="<c9@customer.example>"),
    ])
    mailbox.write("Sent", [
        mailgen.make_message(mailbox.username, [("Carla", CARLA)], "Re: Order question", date=when(5),
                             message_id="<reply1@team.example>", in_reply_to="<shared1@customer.example>"),
        mailgen.make_message(mailbox.username, ["bob@other.example"], "Cc to Carla", date=when(6), cc=[CARLA],
                             message_id="<cc2@team.example>"),
    ])
    second.write("INBOX", [shared, mailgen.make_message(CARLA, [second.username], "Hi Sam", date=when(7),
                                                        message_id="<c7@customer.example>")])
    first_id = connect_inbox(app, mailbox, olivia, name="Olivia's secret inbox name")
    second_id = connect_inbox(app, second, sam, name="Sam's secret inbox name")
    for inbox_id in (first_id, second_id):
        assert sync(app, inbox_id)["status"] == "ok"
    return first_id, second_id


def test_timeline_shows_each_email_once_with_the_owner_as_source(app, two_inboxes):
    make_contact(app)
    entries = entries_for(app)
    titles = [e.title for e in entries]
    assert titles == ["Newest from Carla", "Hi Sam", "Cc to Carla", "Re: Order question", "Order question"]
    assert "Carla in Cc only" not in titles  # Carla did not write it and we did not send it
    by_title = {e.title: e for e in entries}
    question = by_title["Order question"]
    assert question.kind == "email" and question.direction == "in"
    assert question.key == "shared1@customer.example"
    assert question.source in ("Olivia Owner", "Sam Second")
    assert question.date == when(3)
    assert "where is my order?" in question.summary
    assert question.details["message_id"] == "shared1@customer.example"
    assert question.details["from"] == CARLA
    assert by_title["Re: Order question"].direction == "out"
    assert by_title["Re: Order question"].details["to"] == [CARLA]
    assert by_title["Hi Sam"].source == "Sam Second"
    assert by_title["Cc to Carla"].details["cc"] == [CARLA]
    for entry in entries:
        assert "secret inbox name" not in repr(entry)
        assert entry.date.tzinfo is not None


def test_timeline_pages_by_date(app, two_inboxes):
    make_contact(app)
    first = entries_for(app, limit=2)
    assert [e.title for e in first] == ["Newest from Carla", "Hi Sam"]
    rest = entries_for(app, before=first[-1].date, limit=10)
    assert [e.title for e in rest] == ["Cc to Carla", "Re: Order question", "Order question"]
    assert entries_for(app, before=when(1)) == []


def test_contact_page_shows_emails_without_inbox_names(app, two_inboxes, admin_client):
    contact_id = make_contact(app)
    page = admin_client.get(f"/contacts/{contact_id}").get_data(as_text=True)
    assert "Order question" in page and "Olivia Owner" in page
    # Once, though both inboxes hold it; answered since, it is a collapsed line under our reply.
    assert page.count(">Order question</a>") == 1
    assert re.search(r'<div class="thread"[^>]*>\s*<article class="entry entry-email[^"]*">.*?Re: Order question'
                     r'.*?<article class="entry entry-collapsed[^"]*">.*?Order question', page, re.S)
    assert "secret inbox name" not in page


def test_a_contact_we_bcc_sees_our_email_like_a_to_recipient(app, mailbox, admin_client):
    owner = make_owner(app)
    carla = make_contact(app)
    with app.app_context():
        db.session.add(AutomationRule(name="Tag who we wrote to", trigger="email_sent", match="all", conditions=[],
                                      actions=[{"key": "add_tag", "params": {"tag": "we-wrote"}}], enabled=True))
        db.session.commit()
    mailbox.write("Sent", [mailgen.make_message(mailbox.username, ["bob@other.example"], "Offer, Carla in Bcc",
                                                date=when(3), message_id="<bcc1@team.example>",
                                                headers={"Bcc": "Carla <Carla@Customer.example>"})])
    mailbox.write("INBOX", [mailgen.make_message("dan@other.example", [mailbox.username], "Dan Bcc'd Carla",
                                                 date=when(4), message_id="<bcc2@other.example>",
                                                 headers={"Bcc": CARLA})])
    inbox_id = connect_inbox(app, mailbox, owner)
    assert sync(app, inbox_id)["status"] == "ok"

    entries = entries_for(app)
    assert [e.title for e in entries] == ["Offer, Carla in Bcc"]  # not Dan's: incoming Bcc is not stored
    (entry,) = entries
    assert entry.direction == "out" and entry.source == OWNER_NAME
    assert (entry.details["to"], entry.details["cc"], entry.details["bcc"]) == (["bob@other.example"], [], [CARLA])
    page = admin_client.get(f"/contacts/{carla}").get_data(as_text=True)
    assert "Offer, Carla in Bcc" in page and '<span class="badge out">sent</span>' in page
    with app.app_context():
        assert db.session.get(Contact, carla).tags == ["we-wrote"]  # email_sent names Bcc recipients too


def test_timeline_of_a_contact_with_5000_messages_is_a_few_indexed_queries(app):
    owner = make_owner(app)
    make_contact(app)
    with app.app_context():
        inbox = ImapInbox(name="x", email="team@team.example", host="h.example", port=993, security="ssl",
                      username="team@team.example", password_encrypted=b"-", owner_id=owner, extra_folders=[])
        db.session.add(inbox)
        db.session.flush()
        folder = ImapFolder(inbox_id=inbox.id, name="INBOX", role="inbox", high_uid=0, initial_done=True,
                            message_count=0)
        db.session.add(folder)
        db.session.flush()
        start = dt.datetime(2020, 1, 1, tzinfo=UTC)
        rows, addresses = [], []
        for n in range(1, 5001):
            date = start + dt.timedelta(hours=n)
            rows.append(dict(inbox_id=inbox.id, folder_id=folder.id, uid=n, message_id=f"m{n}@customer.example",
                             dedup_key=f"m{n}@customer.example", direction="in", subject=f"Message {n}",
                             from_email=CARLA, from_name="Carla", date=date, internal_date=date, size=100, flags="",
                             in_reply_to=None, references=None, auto_submitted=None, precedence=None, list_id=None,
                             list_unsubscribe=False, x_autoreply=False, content_type="text/plain", automated=False,
                             preview=f"text {n}", parse_error=None, created_at=date))
            addresses.append([dict(role="from", email=CARLA, name="Carla", inbox_id=inbox.id, date=date),
                              dict(role="to", email="team@team.example", name="", inbox_id=inbox.id, date=date)])
        store.insert_messages(rows, addresses)
        db.session.commit()

        statements = []
        listener = lambda *args: statements.append((args[2], args[3]))  # noqa: E731
        sa.event.listen(db.engine, "before_cursor_execute", listener)
        try:
            from plugins.mail.timeline import timeline_entries

            contact = db.session.scalar(sa.select(Contact).where(Contact.email == CARLA))
            entries = timeline_entries(contact, None, 30)
            older = timeline_entries(contact, entries[-1].date, 30)
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", listener)
        assert [e.title for e in entries] == [f"Message {n}" for n in range(5000, 4970, -1)]
        assert [e.title for e in older] == [f"Message {n}" for n in range(4970, 4940, -1)]
        # Per page: a keyset query per role (from, to, cc, bcc), the messages, their recipients, attachments.
        assert len(statements) <= 16
        if db.engine.dialect.name == "sqlite":
            page_query, params = next((q, p) for q, p in statements if "mail_message_address" in q and "LIMIT" in q)
            plan = " ".join(str(row) for row in db.session.connection().exec_driver_sql(
                "EXPLAIN QUERY PLAN " + page_query, params))
            assert "ix_mail_message_address_email_role_date" in plan
            assert "TEMP B-TREE" not in plan  # no sort: the scan stops after one page


# --------------------------------------------------------------------------- events


class Recorder:
    """A plugin listening to every event, noting what was committed when it arrived."""

    def __init__(self, app):
        self.app = app
        self.seen = []  # (event, committed messages)
        self.synced = []  # (mailbox_synced arguments, committed messages)

    @staticmethod
    def _committed() -> int:
        with db.engine.connect() as other:  # a separate connection sees only committed rows
            return other.execute(sa.text("SELECT count(*) FROM mail_message")).scalar()

    @hookimpl
    def event_emitted(self, app, event):
        self.seen.append((event, self._committed()))

    @hookimpl
    def mailbox_synced(self, inbox_id, run_id, status, new_messages, removed_messages):
        self.synced.append(({"inbox_id": inbox_id, "run_id": run_id, "status": status, "new_messages": new_messages,
                             "removed_messages": removed_messages}, self._committed()))

    def clear(self):
        self.seen.clear()
        self.synced.clear()


def test_batches_committed_together_are_each_announced_after_their_commit(crm_app_factory, mailbox):
    """While the server keeps up, a sync commits several batches at once (folder_sync.py "Commits"): each batch
    still has its own event, none before its batch is committed, and progress is reported per commit."""
    app = crm_app_factory(IMAP_FETCH_BATCH=10, IMAP_COMMIT_EVERY=30)
    owner = make_owner(app)
    make_contact(app)
    recorder = Recorder(app)
    app.extensions["plugins"].pm.register(recorder, name="test_recorder")
    mailbox.write("INBOX", [mailgen.make_message(CARLA, [mailbox.username], f"Note {n}", date=when(1 + n % 20),
                                                 message_id=f"<note{n}@customer.example>") for n in range(95)])
    inbox_id = connect_inbox(app, mailbox, owner)
    progress = []
    summary = sync(app, inbox_id, on_progress=lambda done, total: progress.append(done))
    assert summary["new_messages"] == 95

    received = [(event, committed) for event, committed in recorder.seen if event.type == "email_received"]
    lowest_uids = sorted((int(re.search(r":(\d+)-\d+:in$", event.key).group(1)) for event, _ in received),
                         reverse=True)
    assert lowest_uids == [86, 76, 66, 56, 46, 36, 26, 16, 6, 1]  # one event per batch, newest batch first
    for event, committed in received:
        lowest = int(re.search(r":(\d+)-\d+:in$", event.key).group(1))
        assert committed >= 95 - lowest + 1, (event.key, committed)  # its batch and those before: committed
    steps = [after - before for before, after in zip([0, *progress], progress, strict=False)]
    assert progress[-1] == 95 and all(0 <= step <= 30 for step in steps), progress
    assert all(done % 10 == 0 for done in progress[:-1]), progress  # whole batches only


def test_events_after_commit_and_automations_on_them(app, mailbox):
    owner = make_owner(app)
    carla = make_contact(app)
    bob = make_contact(app, "bob@other.example", "Bob")
    recorder = Recorder(app)
    app.extensions["plugins"].pm.register(recorder, name="test_recorder")
    with app.app_context():
        db.session.add(AutomationRule(name="Tag writers", trigger="email_received", match="all", conditions=[],
                                      actions=[{"key": "add_tag", "params": {"tag": "wrote-us"}}], enabled=True))
        db.session.commit()
    mailbox.write("INBOX", [mailgen.make_message(CARLA, [mailbox.username], "Hello", date=when(1),
                                                 message_id="<h1@customer.example>"),
                            mailgen.make_message("stranger@nowhere.example", [mailbox.username], "Spam?",
                                                 date=when(2), message_id="<s1@nowhere.example>")])
    mailbox.write("Sent", [mailgen.make_message(mailbox.username, ["bob@other.example"], "Offer", date=when(3),
                                                cc=[CARLA], message_id="<o1@team.example>")])
    inbox_id = connect_inbox(app, mailbox, owner)
    summary = sync(app, inbox_id)

    by_type = {}
    for event, committed in recorder.seen:
        by_type.setdefault(event.type, []).append((event, committed))
    (received, committed_then), = by_type["email_received"]
    assert received.contact_ids == (carla,)  # the stranger is no contact
    assert committed_then >= 2
    (sent, _), = by_type["email_sent"]
    assert sent.contact_ids == tuple(sorted((carla, bob)))
    (synced, committed_at_end), = recorder.synced
    assert synced == {"inbox_id": inbox_id, "run_id": summary["sync_run_id"], "status": "ok", "new_messages": 3,
                      "removed_messages": 0}
    assert committed_at_end == 3  # the mail readers see everything the sync stored

    with app.app_context():
        assert db.session.get(Contact, carla).tags == ["wrote-us"]
        assert db.session.get(Contact, bob).tags == []
    recorder.clear()
    sync(app, inbox_id)  # nothing new: only mailbox_synced, no event, no automation runs again
    assert recorder.seen == [] and [args["new_messages"] for args, _ in recorder.synced] == [0]


def test_event_types_are_declared(app):
    from host_app.events import event_types

    with app.app_context():
        declared = event_types()
    assert {"email_received", "email_sent"} <= set(declared)


def test_resync_reads_the_mailbox_again_and_announces_only_new_mail(app, mailbox, runner):
    """Mail stored before is read again (as a newer version would store it) without firing its automations again."""
    owner = make_owner(app)
    carla = make_contact(app)
    recorder = Recorder(app)
    app.extensions["plugins"].pm.register(recorder, name="test_recorder")
    mailbox.write("INBOX", [mailgen.make_message(CARLA, [mailbox.username], f"Hello {n}", date=when(n),
                                                 message_id=f"<h{n}@customer.example>") for n in range(1, 4)])
    inbox_id = connect_inbox(app, mailbox, owner)
    assert sync(app, inbox_id)["new_messages"] == 3
    with app.app_context():
        before = sorted((row.uid, row.subject) for row in db.session.scalars(sa.select(store.Message)))
    recorder.clear()

    result = runner.invoke(args=["inboxes", "resync", str(inbox_id)], input="y\n")
    assert result.exit_code == 0, result.output
    assert "Forget the 3 messages stored from inbox" in result.stderr and "3/3 messages" in result.stderr
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["forgotten_messages"], summary["new_messages"]) == ("ok", 3, 3)
    with app.app_context():
        assert sorted((row.uid, row.subject) for row in db.session.scalars(sa.select(store.Message))) == before
    assert recorder.seen == [] and len(recorder.synced) == 1  # nothing announced twice

    mailbox.write("INBOX", [mailgen.make_message(CARLA, [mailbox.username], "Hello again", date=when(5))])
    recorder.clear()
    assert sync(app, inbox_id)["new_messages"] == 1
    (received, _), = [seen for seen in recorder.seen if seen[0].type == "email_received"]
    assert received.contact_ids == (carla,)

    assert runner.invoke(args=["inboxes", "resync", str(inbox_id)], input="n\n").exit_code == 1  # not confirmed
    with app.app_context():
        assert db.session.get(ImapInbox, inbox_id).message_count == 4


def test_resync_while_a_sync_runs_is_left_to_the_next_sync(app, mailbox, runner):
    from plugins.imap_inbox.jobs import sync_lock

    mailbox.write("INBOX", [mailgen.make_message(CARLA, [mailbox.username], "Hello", date=when(1))])
    inbox_id = connect_inbox(app, mailbox, make_owner(app))
    assert sync(app, inbox_id)["new_messages"] == 1
    with app.app_context():
        lock = sync_lock(inbox_id)
        assert lock.acquire()
    try:
        result = runner.invoke(args=["inboxes", "resync", str(inbox_id), "--yes"])
    finally:
        with app.app_context():
            lock.release()
    assert result.exit_code == 1
    assert "is being synced right now; its next sync reads the mailbox again" in result.stderr
    with app.app_context():
        assert db.session.get(ImapInbox, inbox_id).resync_requested
    summary = sync(app, inbox_id)  # the next sync, say the hourly one
    assert summary["status"] == "ok" and summary["new_messages"] == 1
    with app.app_context():
        assert not db.session.get(ImapInbox, inbox_id).resync_requested
    assert runner.invoke(args=["inboxes", "resync", "999", "--yes"]).exit_code == 1


def test_a_resync_never_forgets_mail_before_the_login_worked(app, mailbox, dovecot):
    mailbox.write("INBOX", [mailgen.make_message(CARLA, [mailbox.username], "Hello", date=when(1))])
    inbox_id = connect_inbox(app, mailbox, make_owner(app))
    assert sync(app, inbox_id)["new_messages"] == 1
    with app.app_context():
        from plugins.imap_inbox import service

        service.request_resync(db.session.get(ImapInbox, inbox_id))
    dovecot.add_user(mailbox.username, "Changed-At-Provider-1")
    assert sync(app, inbox_id)["status"] == "needs_attention"
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        assert inbox.resync_requested and inbox.message_count == 1
        assert store.inbox_message_count(inbox_id) == 1
