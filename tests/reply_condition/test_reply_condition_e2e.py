"""reply_condition end to end: real Dovecot mailboxes, the real sync, the event, automations, the builder.

Mail is APPENDed over IMAP to INBOX and Sent, the imap_inbox sync stores it
(jobs.sync_inbox, or an RQ worker), the mail core's ``mailbox_synced`` hook makes
reply_condition store the responses, and the condition is evaluated as the
automation engine and the CLI do.
"""
from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest

from host_app.extensions import db
from host_app.models import AutomationRule, AutomationRun, Contact
from host_app.testing import make_agent
from plugins.imap_inbox.testing.mailgen import make_message
from tests.support import imap_helpers
from tests.support.imap_helpers import connect_inbox
from tests.support.mailbox import Mailbox

NOW = datetime.now(UTC).replace(microsecond=0)
RESPONDED = {"responded": True, "within_days": None, "inbox_id": None}
_accounts = itertools.count(1)


def days_ago(n: float) -> datetime:
    return NOW - timedelta(days=n)


class Account(Mailbox):
    """A mail account on the session's Dovecot (the `mailbox` fixture, or a second one made here)."""

    def sent(self, to: str, subject: str, date: datetime, message_id: str, **kwargs) -> str:
        """Our e-mail, as the mail client files it in Sent; returns its Message-ID without <>."""
        self.server.append(self.username, "Sent", make_message(
            ("Team", self.username), to, subject, date=date, message_id=f"<{message_id}>", **kwargs))
        return message_id

    def received(self, sender: str, subject: str, date: datetime, **kwargs) -> None:
        kwargs.setdefault("message_id", f"<in{next(_accounts)}.{NOW.timestamp():.0f}@{sender.partition('@')[2]}>")
        self.server.append(self.username, "INBOX", make_message(sender, self.username, subject, date=date, **kwargs))


@pytest.fixture
def sales(mailbox) -> Account:
    return Account(mailbox.server, mailbox.username, mailbox.password)


@pytest.fixture
def support(dovecot) -> Account:
    n = next(_accounts)
    username, password = f"support{n}@team.example", f"pw-support-{n}-secret"
    dovecot.add_user(username, password)
    return Account(dovecot, username, password)


@pytest.fixture
def owner(app) -> int:
    return make_agent(app, "olga@team.example", "olga-password-1", name="Olga Owner")


def connect(app, account: Account, owner_id: int | None, name: str = "Admin-only name", **options) -> int:
    return connect_inbox(app, account, owner_id, name=name, **options)


def sync(app, inbox_id: int) -> dict:
    """The sync, then its follow-up jobs (the matching, the import) on a real RQ worker."""
    summary = imap_helpers.sync_and_follow_up(app, inbox_id)
    assert summary["status"] == "ok", summary
    return summary


def add_contacts(app, *emails: str) -> dict[str, int]:
    with app.app_context():
        rows = [Contact(email=e, name=e.split("@")[0].title()) for e in emails]
        db.session.add_all(rows)
        db.session.commit()
        return {c.email: c.id for c in rows}


def responders(app, contact_ids: dict[str, int], **params) -> set[str]:
    """Who the condition holds for, by bulk evaluation, after checking each single evaluation agrees."""
    from host_app.automation_engine import conditions

    params = {**RESPONDED, **params}
    with app.app_context():
        condition = conditions()["imap_email"]
        bulk = condition.evaluate_bulk(contact_ids.values(), params)
        for email, cid in contact_ids.items():
            single = condition.evaluate(db.session.get(Contact, cid), params)
            assert single == (cid in bulk), f"single and bulk disagree for {email} with {params}"
    return {email for email, cid in contact_ids.items() if cid in bulk}


def test_what_counts_as_a_response_after_a_real_sync(app, sales, owner, runner):
    people = ["ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal", "ida"]
    emails = {p: f"{p}@client.example" for p in people}
    ids = add_contacts(app, *emails.values())
    mid = {p: sales.sent(emails[p], f"Offer for {p}", days_ago(10), f"offer-{p}@team.example") for p in people}
    # ann: In-Reply-To; ben: References only; cat: no thread headers, "AW: RE: <subject>".
    sales.received(emails["ann"], "Re: Offer for ann", days_ago(9), in_reply_to=f"<{mid['ann']}>")
    sales.received(emails["ben"], "Thoughts", days_ago(9), references=["<x@elsewhere.example>", f"<{mid['ben']}>"])
    sales.received(emails["cat"], "AW: RE:  offer FOR cat", days_ago(9))
    # dan: an auto-reply (Auto-Submitted); gus: X-Autorespond; hal: Precedence: bulk.
    sales.received(emails["dan"], "Automatic reply: Offer for dan", days_ago(10), in_reply_to=f"<{mid['dan']}>",
                   headers={"Auto-Submitted": "auto-replied"})
    sales.received(emails["gus"], "Re: Offer for gus", days_ago(10), in_reply_to=f"<{mid['gus']}>",
                   headers={"X-Autorespond": "yes"})
    sales.received(emails["hal"], "Re: Offer for hal", days_ago(10), references=f"<{mid['hal']}>",
                   headers={"Precedence": "bulk"})
    # eve: a fresh, unrelated e-mail. ida: nothing at all.
    sales.received(emails["eve"], "A new question", days_ago(5))
    # fay's address bounced: a delivery report from the mailer-daemon naming our e-mail.
    bounce = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.client.example>\r\n"
        b"To: " + sales.username.encode() + b"\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Date: " + days_ago(10).strftime("%a, %d %b %Y %H:%M:%S +0000").encode() + b"\r\n"
        b"Message-ID: <bounce1@mx.client.example>\r\n"
        b"References: <" + mid["fay"].encode() + b">\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfay@client.example: mailbox unavailable\r\n--b--\r\n"
    )
    sales.server.append(sales.username, "INBOX", bounce)
    inbox_id = connect(app, sales, owner)
    sync(app, inbox_id)

    assert responders(app, ids) == {emails["ann"], emails["ben"], emails["cat"]}
    assert responders(app, ids, responded=False) == {emails[p] for p in ("dan", "eve", "fay", "gus", "hal", "ida")}
    with app.app_context():
        from plugins.reply_condition.models import Response

        matched = dict(db.session.execute(db.select(Response.contact_email, Response.matched_by)).all())
    assert matched == {emails["ann"]: "header", emails["ben"]: "header", emails["cat"]: "subject"}

    for email, expected in [(emails["ann"], True), (emails["eve"], False)]:
        result = runner.invoke(args=["conditions", "eval", "imap_email", "--contact", email,
                                     "--params", '{"responded": true}'])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == {"result": expected}


def test_within_days_and_inbox_with_two_mailboxes(app, sales, support, owner):
    ids = add_contacts(app, "ann@client.example", "ben@client.example")
    # Sales wrote to Ann 10 days ago; she answered 3 days later. Support's e-mail to her stays unanswered.
    offer = sales.sent("ann@client.example", "Offer", days_ago(10), "offer@team.example")
    sales.received("ann@client.example", "Re: Offer", days_ago(7), in_reply_to=f"<{offer}>")
    support.sent("ann@client.example", "Your ticket", days_ago(6), "ticket-ann@team.example")
    # Support wrote to Ben 10 days ago; his answer came 9 days later, into the Sales mailbox.
    ticket = support.sent("ben@client.example", "Your ticket 42", days_ago(10), "ticket-ben@team.example")
    sales.received("ben@client.example", "Re: Your ticket 42", days_ago(1), in_reply_to=f"<{ticket}>")
    sales_id = connect(app, sales, owner, name="Sales (admin-only)")
    support_id = connect(app, support, None, name="Support (admin-only)")
    sync(app, sales_id)
    sync(app, support_id)  # Ben's reply was stored before Support's e-mail it answers

    ann, ben = "ann@client.example", "ben@client.example"
    assert responders(app, ids) == {ann, ben}
    assert responders(app, ids, within_days=3) == {ann}
    assert responders(app, ids, within_days=2) == set()
    assert responders(app, ids, within_days=9) == {ann, ben}
    assert responders(app, ids, responded=False, within_days=8) == {ben}
    assert responders(app, ids, inbox_id=sales_id) == {ann}
    assert responders(app, ids, inbox_id=support_id) == {ben}
    assert responders(app, ids, responded=False, inbox_id=support_id) == {ann}
    assert responders(app, ids, inbox_id=support_id, within_days=8) == set()


def test_a_reply_from_a_contact_we_bcc_d_counts(app, sales, owner):
    bea, cal, dan, eve = (f"{p}@client.example" for p in ("bea", "cal", "dan", "eve"))
    ids = add_contacts(app, bea, cal, dan, eve)
    offer = sales.sent("boss@client.example", "Offer", days_ago(10), "bcc-offer@team.example",
                       headers={"Bcc": f"Bea <{bea}>, {cal}"})
    sales.received(bea, "Re: Offer", days_ago(9), in_reply_to=f"<{offer}>")
    sales.received(cal, "RE: offer", days_ago(8))  # no thread headers: the subject fallback
    sales.received(eve, "Re: Offer", days_ago(8), in_reply_to=f"<{offer}>")  # forwarded to her, not Bcc'd
    sales.received(dan, "Re: Update", days_ago(1), in_reply_to="<bcc-update@team.example>")
    inbox_id = connect(app, sales, owner)
    sync(app, inbox_id)
    assert responders(app, ids) == {bea, cal}
    # Our e-mail that Dan was Bcc'd on reaches Sent after his reply: matched from our side.
    sales.sent("boss@client.example", "Update", days_ago(2), "bcc-update@team.example", headers={"Bcc": dan})
    sync(app, inbox_id)
    assert responders(app, ids) == {bea, cal, dan}
    assert responders(app, ids, responded=False) == {eve}


def test_our_email_filed_after_the_reply_is_matched_at_the_next_sync(app, sales, owner):
    ids = add_contacts(app, "ann@client.example")
    sales.received("ann@client.example", "Re: Late copy", days_ago(1), in_reply_to="<late@team.example>")
    inbox_id = connect(app, sales, owner)
    sync(app, inbox_id)
    assert responders(app, ids) == set()
    sales.sent("ann@client.example", "Late copy", days_ago(2), "late@team.example")
    sync(app, inbox_id)
    assert responders(app, ids) == {"ann@client.example"}


def test_expunged_reply_is_no_longer_a_response(app, sales, owner):
    ids = add_contacts(app, "ann@client.example")
    offer = sales.sent("ann@client.example", "Offer", days_ago(3), "offer@team.example")
    sales.received("ann@client.example", "Re: Offer", days_ago(2), in_reply_to=f"<{offer}>")
    inbox_id = connect(app, sales, owner)
    sync(app, inbox_id)
    assert responders(app, ids) == {"ann@client.example"}
    with sales.server.client(sales.username) as imap:  # the user deletes the reply in their mail client
        imap.select_folder("INBOX", readonly=True)
        uids = imap.search("ALL")
    sales.server.expunge(sales.username, "INBOX", uids)
    sync(app, inbox_id)
    assert responders(app, ids) == set()


def test_automation_tags_the_contact_right_after_the_sync_that_brought_the_reply(app, sales, owner, redis_url):
    """Trigger "Contact replied to our e-mail", condition IMAP email responded, action add tag: on an RQ worker."""
    from host_app.jobs import make_worker

    ids = add_contacts(app, "ann@client.example", "ben@client.example")
    with app.app_context():
        db.session.add(AutomationRule(
            name="Tag responders", trigger="contact_replied", match="all",
            conditions=[{"key": "imap_email", "params": {**RESPONDED, "within_days": 2}}],
            actions=[{"key": "add_tag", "params": {"tag": "replied"}}],
        ))
        db.session.commit()
    offer = sales.sent("ann@client.example", "Offer", days_ago(1), "offer@team.example")
    sales.sent("ben@client.example", "Offer", days_ago(1), "offer-ben@team.example")
    inbox_id = connect(app, sales, owner)  # enqueues the first sync

    def run_worker() -> None:
        with app.app_context():  # as `manage.py worker` runs it
            assert make_worker(app, simple=True).work(burst=True)

    run_worker()

    def tags() -> dict[str, list[str]]:
        with app.app_context():
            return {c.email: c.tags for c in db.session.scalars(db.select(Contact))}

    assert tags() == {"ann@client.example": [], "ben@client.example": []}
    sales.received("ann@client.example", "Re: Offer", NOW, in_reply_to=f"<{offer}>", message_id="<yes@client.example>")
    sales.received("ben@client.example", "Unrelated", NOW)
    from plugins.imap_inbox.jobs import enqueue_sync

    with app.app_context():
        assert enqueue_sync(inbox_id)
    run_worker()
    assert tags() == {"ann@client.example": ["replied"], "ben@client.example": []}
    with app.app_context():
        runs = [(r.contact_id, r.event_type, r.event_key, r.status)
                for r in db.session.scalars(db.select(AutomationRun))]
    assert runs == [(ids["ann@client.example"], "contact_replied", "thread:offer@team.example", "fired")]
    sync(app, inbox_id)  # nothing new: no event, no second run
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(AutomationRun)) == 1


def test_contacts_created_by_the_import_are_tagged_by_the_same_sync(app, sales, owner):
    """With "Create users" on, contacts_import creates the contact first (tryfirst), then the rule runs."""
    with app.app_context():
        assert app.extensions["plugins"].is_loaded("contacts_import")
        db.session.add(AutomationRule(
            name="Tag responders", trigger="contact_replied", match="all",
            conditions=[{"key": "imap_email", "params": RESPONDED}],
            actions=[{"key": "add_tag", "params": {"tag": "replied"}}],
        ))
        db.session.commit()
    offer = sales.sent("Zoe Client <zoe@client.example>", "Offer", days_ago(1), "offer@team.example")
    sales.received("Zoe Client <zoe@client.example>", "Re: Offer", NOW, in_reply_to=f"<{offer}>")
    inbox_id = connect(app, sales, owner, settings={"create_users": True})
    sync(app, inbox_id)
    with app.app_context():
        zoe = db.session.scalar(db.select(Contact).where(Contact.email == "zoe@client.example"))
        assert zoe is not None, "contacts_import created no contact"
        assert zoe.tags == ["replied"]


def test_builder_shows_the_condition_form_with_connected_inboxes(app, admin_client, sales, support, owner):
    connect(app, sales, owner, name="Sales (admin-only)")
    connect(app, support, None, name="Support (admin-only)")
    response = admin_client.post("/automations/new", data={
        "name": "Follow up", "trigger": "contact_replied", "match": "all",
        "op": "add_condition", "new_condition": "imap_email",
    })
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'value="contact_replied"' in html and "Contact replied to our e-mail" in html
    for name in ("cond-0-responded", "cond-0-within_days", "cond-0-inbox_id"):
        assert f'name="{name}"' in html
    assert f"Olga Owner &lt;{sales.username}&gt;" in html
    assert support.username in html
    assert "admin-only" not in html


def test_follow_up_waits_after_our_email_then_tags_only_who_has_not_answered_since(app, sales, owner, admin_client):
    """When we e-mail a contact, wait; if IMAP email: not responded since that e-mail, tag them (real syncs)."""
    import time

    from host_app.jobs import make_worker
    from host_app.waits import process_due_waits

    ids = add_contacts(app, "ann@client.example", "ben@client.example")
    with app.app_context():
        db.session.add(AutomationRule(
            name="Follow up", trigger="email_sent", match="all", wait_seconds=2,
            conditions=[{"key": "imap_email", "params": {**RESPONDED, "responded": False, "after_trigger": True}}],
            actions=[{"key": "add_tag", "params": {"tag": "needs-follow-up"}}],
        ))
        db.session.commit()
    # Ann answered an older e-mail of ours long ago: that does not answer today's.
    old = sales.sent("ann@client.example", "Last year", days_ago(30), "old@team.example")
    sales.received("ann@client.example", "Re: Last year", days_ago(29), in_reply_to=f"<{old}>")
    sales.sent("ann@client.example", "Offer", NOW, "offer-ann@team.example")
    offer_ben = sales.sent("ben@client.example", "Offer", NOW, "offer-ben@team.example")
    inbox_id = connect(app, sales, owner)

    def run_worker() -> None:
        with app.app_context():
            assert make_worker(app, simple=True).work(burst=True)

    run_worker()  # the first sync: our e-mails are seen, the automation starts waiting for both
    with app.app_context():
        waiting = {r.contact_id: r.status for r in db.session.scalars(db.select(AutomationRun))}
    assert waiting == {ids["ann@client.example"]: "waiting", ids["ben@client.example"]: "waiting"}
    assert "Automations waiting" in admin_client.get(f"/contacts/{ids['ben@client.example']}").get_data(as_text=True)

    # Ben answers during the wait.
    sales.received("ben@client.example", "Re: Offer", NOW + timedelta(minutes=1), in_reply_to=f"<{offer_ben}>")
    from plugins.imap_inbox.jobs import enqueue_sync

    with app.app_context():
        assert enqueue_sync(inbox_id)
    run_worker()
    time.sleep(2.2)
    with app.app_context():
        assert process_due_waits() == {"fired": 1, "not_matched": 1}
        tags = {c.email: c.tags for c in db.session.scalars(db.select(Contact))}
        runs = {r.contact_id: r.detail for r in db.session.scalars(db.select(AutomationRun))}
    assert tags == {"ann@client.example": ["needs-follow-up"], "ben@client.example": []}
    assert runs[ids["ann@client.example"]] == (
        "waited 2 seconds; evaluated: conditions met; tagged needs-follow-up")
    assert runs[ids["ben@client.example"]] == "waited 2 seconds; evaluated: conditions not met"
