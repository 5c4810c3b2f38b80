"""reply_condition on rows inserted directly (no IMAP): matching, the condition, its form, event, CLI.

The end-to-end tests on a real Dovecot with the real sync are in test_reply_condition_e2e.py.
"""
from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from werkzeug.datastructures import MultiDict

from host_app import hookimpl
from host_app.extensions import db
from host_app.models import AutomationRule, AutomationRun, Contact
from host_app.testing import run_jobs
from plugins.mail.conversations import referenced_ids
from plugins.mail.models import ROLE_INBOX, ROLE_SENT, Folder, Inbox, Message, MessageAddress
from plugins.mail.subjects import normalize_subject, reply_subject_key, strip_reply_prefixes
from plugins.reply_condition.condition import RepliedCondition, RepliedForm
from plugins.reply_condition.matcher import process_inbox
from plugins.reply_condition.models import Response

ONLY_OURS = {"mail": "plugins.mail", "imap_inbox": "plugins.imap_inbox", "reply_condition": "plugins.reply_condition"}
NOW = datetime.now(UTC).replace(microsecond=0)
TEAM = "sales@team.example"
OTHER_TEAM = "support@team.example"
BOB = "bob@client.example"
_uids = itertools.count(1)


# ---------------------------------------------------------------------------- row builders


def days_ago(n: float) -> datetime:
    return NOW - timedelta(days=n)


def make_inbox(email: str, owner_id: int | None = None, name: str = "Admin-only inbox name") -> Inbox:
    inbox = Inbox(name=name, email=email, username=email, owner_id=owner_id)
    inbox.folders = [Folder(name="INBOX", role=ROLE_INBOX), Folder(name="Sent", role=ROLE_SENT)]
    db.session.add(inbox)
    db.session.commit()
    return inbox


def add_message(
    inbox: Inbox,
    *,
    from_email: str,
    to: list[str] | str,
    subject: str,
    date: datetime,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    cc: list[str] = (),
    direction: str | None = None,
    auto_submitted: str | None = None,
    precedence: str | None = None,
    x_autoreply: bool = False,
    content_type: str = "text/plain",
) -> Message:
    """One message as the sync stores it: "out" in Sent when it is from the inbox, else "in" in INBOX."""
    to = [to] if isinstance(to, str) else list(to)
    direction = direction or ("out" if from_email == inbox.email else "in")
    uid = next(_uids)
    message_id = message_id or f"m{uid}.{NOW.timestamp():.0f}@{from_email.partition('@')[2]}"
    role = ROLE_SENT if direction == "out" else ROLE_INBOX
    msg = Message(
        inbox_id=inbox.id, folder_id=next(f.id for f in inbox.folders if f.role == role), uid=uid,
        message_id=message_id, dedup_key=message_id, direction=direction, subject=subject,
        from_email=from_email, date=date, in_reply_to=in_reply_to, references=references,
        auto_submitted=auto_submitted, precedence=precedence, x_autoreply=x_autoreply, content_type=content_type,
        automated=bool(auto_submitted and auto_submitted != "no") or x_autoreply or bool(precedence),
    )
    db.session.add(msg)
    db.session.flush()
    for role, address in [("from", from_email)] + [("to", a) for a in to] + [("cc", a) for a in cc]:
        db.session.add(MessageAddress(message_pk=msg.id, role=role, email=address, inbox_id=inbox.id))
    db.session.commit()
    return msg


def make_contact(email: str, name: str = "") -> Contact:
    contact = Contact(email=email, name=name)
    db.session.add(contact)
    db.session.commit()
    return contact


def synced(*inboxes: Inbox) -> None:
    """The matching the follow-up job of each sync runs (without its announcements)."""
    for inbox in inboxes:
        process_inbox(inbox.id)


def holds(contact: Contact, **params) -> bool:
    """Single evaluation, checked against the bulk one so the two never drift apart."""
    params = {"responded": True, "within_days": None, "inbox_id": None, **params}
    single = RepliedCondition().evaluate(contact, params)
    bulk = contact.id in RepliedCondition().evaluate_bulk([contact.id], params)
    assert single == bulk, f"single ({single}) and bulk ({bulk}) disagree for {contact.email} {params}"
    return single


@pytest.fixture
def rc_app(crm_app_factory):
    """imap_inbox and reply_condition only, with an app context."""
    app = crm_app_factory(plugins=ONLY_OURS)
    with app.app_context():
        yield app


@pytest.fixture
def sales(rc_app) -> Inbox:
    return make_inbox(TEAM)


@pytest.fixture
def bob(rc_app) -> Contact:
    return make_contact(BOB, "Bob")


def our_offer(inbox: Inbox, sent: datetime = None, to: str = BOB, subject: str = "Offer for 2025") -> Message:
    return add_message(inbox, from_email=inbox.email, to=to, subject=subject, date=sent or days_ago(10))


# ---------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    ("subject", "expected", "prefixes"),
    [
        ("Re: Offer", "offer", 1),
        ("RE: RE: Offer", "offer", 2),
        ("re:offer", "offer", 1),
        ("Re[2]: Offer", "offer", 1),
        ("Re(3): Offer", "offer", 1),
        ("AW: Angebot", "angebot", 1),
        ("SV: Tilbud", "tilbud", 1),
        ("Odp: Oferta", "oferta", 1),
        ("回复：报价", "报价", 1),
        ("回复: 报价", "报价", 1),
        ("Antw: RE: aw:  Offer   for\t2025 ", "offer for 2025", 3),
        ("Fwd: Offer", "fwd: offer", 0),
        ("Re: Fwd: Offer", "fwd: offer", 1),
        ("Regarding: Offer", "regarding: offer", 0),
        ("Réunion", "réunion", 0),
        ("STRASSE", "strasse", 0),
        ("Straße", "strasse", 0),
        ("", "", 0),
    ],
)
def test_reply_prefixes_are_stripped_repeatedly(subject, expected, prefixes):
    assert normalize_subject(subject) == expected
    assert strip_reply_prefixes(subject)[1] == prefixes
    assert (reply_subject_key(subject) is not None) == (prefixes > 0 and bool(expected))


def test_referenced_ids_in_reply_to_first_without_brackets_or_duplicates():
    assert referenced_ids("<b@x>", "<a@x> <b@x>\r\n <c@x>") == ["b@x", "c@x", "a@x"]
    assert referenced_ids("b@x", "a@x b@x") == ["b@x", "a@x"]
    assert referenced_ids(None, None) == []
    assert referenced_ids(None, "<ünicode@x> " + "<" + "y" * 2000 + "@x>") == []


# ---------------------------------------------------------------------------- what a response is


def test_reply_by_in_reply_to(sales, bob):
    offer = our_offer(sales)
    add_message(sales, from_email=BOB, to=TEAM, subject="Sounds good", date=days_ago(9), in_reply_to=offer.message_id)
    assert not holds(bob)
    synced(sales)
    assert holds(bob)
    assert not holds(bob, responded=False)
    response = db.session.scalar(db.select(Response))
    assert (response.contact_email, response.matched_by, response.delay_seconds) == (BOB, "header", 86400)


def test_reply_by_references_only(sales, bob):
    first = our_offer(sales, sent=days_ago(20))
    add_message(sales, from_email=BOB, to=TEAM, subject="Other subject", date=days_ago(9),
                references=f"older@elsewhere.example {first.message_id}")
    synced(sales)
    assert holds(bob)


def test_reply_by_subject_when_no_thread_headers(sales, bob):
    our_offer(sales, subject="Offer for 2025")
    add_message(sales, from_email=BOB, to=TEAM, subject="AW: RE:  offer FOR 2025", date=days_ago(9))
    synced(sales)
    assert holds(bob)
    assert db.session.scalar(db.select(Response.matched_by)) == "subject"


def test_subject_fallback_needs_a_reply_prefix_and_an_earlier_email(sales, bob):
    our_offer(sales, sent=days_ago(10), subject="Offer for 2025")
    add_message(sales, from_email=BOB, to=TEAM, subject="Offer for 2025", date=days_ago(9))  # no "Re:"
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: Offer for 2025", date=days_ago(11))  # before ours
    add_message(sales, from_email=BOB, to=TEAM, subject="Fwd: Offer for 2025", date=days_ago(9))
    synced(sales)
    assert not holds(bob)


def test_subject_fallback_ignored_when_thread_headers_point_elsewhere(sales, bob):
    our_offer(sales, subject="Offer for 2025")
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: Offer for 2025", date=days_ago(9),
                in_reply_to="someone-else@client.example")
    synced(sales)
    assert not holds(bob)


def test_fresh_unrelated_email_is_not_a_response(sales, bob):
    our_offer(sales)
    add_message(sales, from_email=BOB, to=TEAM, subject="A new question", date=days_ago(9))
    synced(sales)
    assert not holds(bob)
    assert holds(bob, responded=False)


@pytest.mark.parametrize(
    "machine",
    [
        {"auto_submitted": "auto-replied"},
        {"x_autoreply": True},
        {"precedence": "auto_reply"},
        {"precedence": "bulk"},
        {"precedence": "junk"},
        {"content_type": "multipart/report; report-type=delivery-status"},
    ],
)
def test_automatic_replies_are_not_responses(sales, bob, machine):
    offer = our_offer(sales)
    add_message(sales, from_email=BOB, to=TEAM, subject="Automatic reply: Offer for 2025", date=days_ago(10),
                in_reply_to=offer.message_id, **machine)
    synced(sales)
    assert not holds(bob)


def test_bounce_from_mailer_daemon_is_not_a_response(sales, bob):
    offer = our_offer(sales)
    daemon = make_contact("mailer-daemon@mx.client.example")
    add_message(sales, from_email="mailer-daemon@mx.client.example", to=TEAM, subject="Undelivered Mail",
                date=days_ago(10), references=offer.message_id, content_type="multipart/report")
    synced(sales)
    assert not holds(bob) and not holds(daemon)


def test_a_reply_from_an_address_only_machines_use_is_not_a_response(sales):
    tracker = make_contact("notifications@tracker.example")
    offer = our_offer(sales, to=tracker.email)
    add_message(sales, from_email=tracker.email, to=TEAM, subject="Re: Offer for 2025", date=days_ago(9),
                in_reply_to=offer.message_id)
    synced(sales)
    assert not holds(tracker)


def test_a_reply_through_a_mailing_list_is_a_response(sales, bob):
    offer = our_offer(sales)
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: Offer for 2025", date=days_ago(9),
                in_reply_to=offer.message_id, precedence="list")
    synced(sales)
    assert holds(bob)


def test_auto_submitted_no_is_a_person(sales, bob):
    offer = our_offer(sales)
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: Offer", date=days_ago(9),
                in_reply_to=offer.message_id, auto_submitted="no")
    synced(sales)
    assert holds(bob)


def test_reply_to_an_email_addressed_to_someone_else_does_not_count(sales, bob):
    offer = our_offer(sales, to="carol@client.example")
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: Offer", date=days_ago(9), in_reply_to=offer.message_id)
    synced(sales)
    assert not holds(bob)


def test_cc_counts_as_addressed(sales, bob):
    offer = add_message(sales, from_email=TEAM, to="carol@client.example", cc=[BOB], subject="Offer", date=days_ago(10))
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: Offer", date=days_ago(9), in_reply_to=offer.message_id)
    synced(sales)
    assert holds(bob)


def test_our_email_synced_after_the_reply_still_matches(sales, bob):
    """INBOX may sync before Sent: the reply waits for our e-mail, in both matching kinds."""
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: x", date=days_ago(9), in_reply_to="later@team.example")
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: Pricing", date=days_ago(8))
    synced(sales)
    assert not holds(bob)
    add_message(sales, from_email=TEAM, to=BOB, subject="x", date=days_ago(10), message_id="later@team.example")
    add_message(sales, from_email=TEAM, to=BOB, subject="Pricing", date=days_ago(10))
    synced(sales)
    assert holds(bob)
    assert sorted(db.session.scalars(db.select(Response.matched_by))) == ["header", "subject"]


def test_our_email_stored_by_the_next_run_before_the_matching_ran(sales, bob):
    """The reply's run matches only its own messages (``upto``) while the next run has stored our e-mail
    already: the header match finds our e-mail then (it reads stored mail), the subject match once our
    e-mail's own batch is indexed by the next run's matching. Each pair is stored and handed back once."""
    from plugins.reply_condition.matcher import match_batches

    add_message(sales, from_email=BOB, to=TEAM, subject="Re: x", date=days_ago(9), in_reply_to="later@team.example")
    reply_run_upto = add_message(sales, from_email=BOB, to=TEAM, subject="Re: Pricing", date=days_ago(8)).id
    add_message(sales, from_email=TEAM, to=BOB, subject="x", date=days_ago(10), message_id="later@team.example")
    add_message(sales, from_email=TEAM, to=BOB, subject="Pricing", date=days_ago(10))

    assert [r.matched_by for batch in match_batches(sales.id, reply_run_upto) for r in batch] == ["header"]
    assert [r.matched_by for batch in match_batches(sales.id) for r in batch] == ["subject"]
    assert db.session.scalar(db.select(db.func.count()).select_from(Response)) == 2
    assert process_inbox(sales.id) == []


def test_folder_changing_role_is_matched_again(sales, bob):
    """The sync rewrites directions in place when a folder becomes Sent: the inbox is matched again."""
    archive = Folder(inbox_id=sales.id, name="Sent Items", role="other")
    db.session.add(archive)
    db.session.commit()
    offer = our_offer(sales, subject="Offer A")
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: A", date=days_ago(9), in_reply_to=offer.message_id)
    hidden = add_message(sales, from_email="assistant@team.example", to=BOB, subject="Offer B", date=days_ago(10),
                         direction="in")
    db.session.execute(db.update(Message).where(Message.id == hidden.id).values(folder_id=archive.id))
    db.session.commit()
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: B", date=days_ago(9), in_reply_to=hidden.message_id)
    assert len(process_inbox(sales.id)) == 1
    # What the sync does when it recognizes the folder as Sent.
    db.session.execute(db.update(Message).where(Message.folder_id == archive.id).values(direction="out"))
    archive.role = ROLE_SENT
    db.session.commit()
    new = process_inbox(sales.id)
    assert [(r.our_pk, r.contact_email) for r in new] == [(hidden.id, BOB)]  # the old pair is not news again
    assert db.session.scalar(db.select(db.func.count()).select_from(Response)) == 2
    assert process_inbox(sales.id) == []


def test_reply_received_in_another_inbox_counts(sales, bob):
    support = make_inbox(OTHER_TEAM)
    offer = our_offer(sales)
    add_message(support, from_email=BOB, to=[TEAM, OTHER_TEAM], subject="Re: Offer", date=days_ago(9),
                in_reply_to=offer.message_id)
    synced(support)  # the reply's inbox syncs; ours already had our e-mail stored
    assert holds(bob)
    assert holds(bob, inbox_id=sales.id)
    assert not holds(bob, inbox_id=support.id)


def test_within_days_both_ways(sales, bob):
    offer = our_offer(sales, sent=days_ago(10))
    add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(7), in_reply_to=offer.message_id)
    synced(sales)
    assert holds(bob, within_days=3)
    assert holds(bob, within_days=5)
    assert not holds(bob, within_days=2)
    assert not holds(bob, within_days=0)
    assert holds(bob, responded=False, within_days=2)
    assert not holds(bob, responded=False, within_days=3)


def test_within_days_uses_the_closest_of_our_emails_in_the_thread(sales, bob):
    first = our_offer(sales, sent=days_ago(30))
    second = add_message(sales, from_email=TEAM, to=BOB, subject="Re: Offer", date=days_ago(3),
                         in_reply_to=first.message_id, references=first.message_id)
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: Offer", date=days_ago(2), in_reply_to=second.message_id,
                references=f"{first.message_id} {second.message_id}")
    synced(sales)
    assert holds(bob, within_days=1)
    assert db.session.scalar(db.select(db.func.count()).select_from(Response)) == 2


def test_inbox_id_both_ways(sales, bob):
    support = make_inbox(OTHER_TEAM)
    offer = our_offer(support)
    add_message(support, from_email=BOB, to=OTHER_TEAM, subject="Re", date=days_ago(9), in_reply_to=offer.message_id)
    our_offer(sales)  # never answered
    synced(sales, support)
    assert holds(bob, inbox_id=support.id)
    assert not holds(bob, inbox_id=sales.id)
    assert holds(bob, responded=False, inbox_id=sales.id)
    assert holds(bob)


def test_expunged_reply_takes_the_response_with_it(sales, bob):
    offer = our_offer(sales)
    reply = add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(9), in_reply_to=offer.message_id)
    synced(sales)
    assert holds(bob)
    db.session.delete(db.session.get(Message, reply.id))
    db.session.commit()
    assert not holds(bob)
    assert db.session.scalar(db.select(db.func.count()).select_from(Response)) == 0


def test_expunged_email_of_ours_takes_the_response_with_it(sales, bob):
    offer = our_offer(sales)
    add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(9), in_reply_to=offer.message_id)
    synced(sales)
    db.session.delete(db.session.get(Message, offer.id))
    db.session.commit()
    assert not holds(bob)


def test_removed_inbox_takes_its_responses_with_it(sales, bob):
    offer = our_offer(sales)
    add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(9), in_reply_to=offer.message_id)
    synced(sales)
    db.session.delete(db.session.get(Inbox, sales.id))
    db.session.commit()
    assert not holds(bob)


def test_processing_again_stores_nothing_twice(sales, bob):
    offer = our_offer(sales)
    add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(9), in_reply_to=offer.message_id)
    assert len(process_inbox(sales.id)) == 1
    assert process_inbox(sales.id) == []
    assert db.session.scalar(db.select(db.func.count()).select_from(Response)) == 1


def test_large_batches_commit_as_they_go(sales, bob, monkeypatch):
    from plugins.reply_condition import matcher

    monkeypatch.setattr(matcher, "BATCH_SIZE", 3)
    offers = [our_offer(sales, subject=f"Offer {i}") for i in range(4)]
    for offer in offers:
        add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(9), in_reply_to=offer.message_id)
    assert len(process_inbox(sales.id)) == 4


def test_single_and_bulk_agree_on_many_contacts(sales):
    """Forty contacts, every kind of case, every parameter combination: one query for all, same answers."""
    support = make_inbox(OTHER_TEAM)
    contacts = []
    for i in range(40):
        email = f"person{i}@client{i % 3}.example"
        contacts.append(make_contact(email))
        kind = i % 8
        inbox = sales if i % 2 else support
        offer = our_offer(inbox, to=email, sent=days_ago(20), subject=f"Proposal {i}")
        reply = {"from_email": email, "to": inbox.email, "subject": f"Re: Proposal {i}"}
        if kind == 0:
            add_message(inbox, **reply, date=days_ago(19), in_reply_to=offer.message_id)
        elif kind == 1:
            add_message(inbox, **reply, date=days_ago(5), references=offer.message_id)
        elif kind == 2:
            add_message(inbox, **reply, date=days_ago(18))
        elif kind == 3:
            add_message(inbox, **reply, date=days_ago(19), in_reply_to=offer.message_id, auto_submitted="auto-replied")
        elif kind == 4:
            add_message(inbox, from_email=email, to=inbox.email, subject="Unrelated", date=days_ago(1))
        elif kind == 5:
            other = support if inbox is sales else sales
            add_message(other, **reply, date=days_ago(15), in_reply_to=offer.message_id)
        # 6, 7: never answered
    make_contact("never-written@client.example")
    synced(sales, support)
    ids = [c.id for c in db.session.scalars(db.select(Contact))]
    condition = RepliedCondition()
    responders = set()
    for params in [
        {"responded": True},
        {"responded": False},
        {"responded": True, "within_days": 2},
        {"responded": False, "within_days": 2},
        {"responded": True, "within_days": 0},
        {"responded": True, "inbox_id": sales.id},
        {"responded": True, "inbox_id": support.id, "within_days": 6},
        {"responded": False, "inbox_id": support.id},
    ]:
        full = {"within_days": None, "inbox_id": None, **params}
        bulk = condition.evaluate_bulk(ids, full)
        single = {c.id for c in db.session.scalars(db.select(Contact)) if condition.evaluate(c, full)}
        assert bulk == single, params
        if params == {"responded": True}:
            responders = bulk
    expected = {c.id for i, c in enumerate(contacts) if i % 8 in (0, 1, 2, 5)}
    assert responders == expected


def test_bulk_evaluation_is_one_query(sales, rc_app):
    from sqlalchemy import event

    ids = [make_contact(f"p{i}@client.example").id for i in range(30)]
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        RepliedCondition().evaluate_bulk(ids, {"responded": True, "within_days": 3})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


# ---------------------------------------------------------------------------- the form


def test_form_validates_parameters(sales):
    good = [
        {"responded": True},
        {"responded": False, "within_days": 0},
        {"responded": "true", "within_days": 7, "inbox_id": sales.id},
        {"responded": "false", "inbox_id": None},
        {"responded": True, "inbox_id": ""},
    ]
    for params in good:
        form = RepliedForm(data=params)
        assert form.validate(), (params, form.errors)
    bad = [
        ({"responded": "maybe"}, "responded"),
        ({"responded": True, "within_days": -1}, "within_days"),
        ({"responded": True, "within_days": "soon"}, "within_days"),
        ({"responded": True, "inbox_id": 999999}, "inbox_id"),
        ({"responded": True, "inbox_id": "sales"}, "inbox_id"),
    ]
    for params, field in bad:
        form = RepliedForm(data=params)
        assert not form.validate(), params
        assert field in form.errors, (params, form.errors)


def test_form_reads_posted_values_with_a_prefix(sales):
    posted = MultiDict({"cond-0-responded": "False", "cond-0-within_days": "", "cond-0-inbox_id": str(sales.id)})
    form = RepliedForm(formdata=posted, prefix="cond-0-")
    assert form.validate(), form.errors
    assert form.data == {"responded": False, "within_days": None, "after_trigger": False, "inbox_id": sales.id}
    json.dumps(form.data)  # saved as the rule's JSON parameters
    bad = RepliedForm(formdata=MultiDict({"cond-0-responded": "True", "cond-0-within_days": "-3"}), prefix="cond-0-")
    assert not bad.validate() and "within_days" in bad.errors


def test_inbox_choices_show_the_owner_not_the_admin_only_name(rc_app):
    from host_app.testing import make_agent

    owner_id = make_agent(rc_app, "olga@team.example", "pw-olga-12345", name="Olga Owner")
    make_inbox(TEAM, owner_id=owner_id, name="Secret admin label")
    make_inbox(OTHER_TEAM, owner_id=None, name="Another secret label")
    labels = [choice[1] for choice in RepliedForm().inbox_id.iter_choices()]
    assert labels[0] == "Any team inbox"
    assert f"Olga Owner <{TEAM}>" in labels
    assert OTHER_TEAM in labels
    assert not any("secret" in label.lower() for label in labels)


def test_describe_says_what_the_condition_checks(sales):
    text = RepliedCondition().describe({"responded": False, "within_days": 3, "inbox_id": sales.id})
    assert text == f"IMAP email: has not responded to our e-mails within 3 days sent from {TEAM}"


# ---------------------------------------------------------------------------- event and automation


_run_ids = itertools.count(1)


def _synced(inbox: Inbox, new: int = 1, removed: int = 0) -> dict:
    """The arguments of the mail core's ``mailbox_synced`` hook after a sync run of ``inbox``."""
    return {"inbox_id": inbox.id, "run_id": next(_run_ids), "status": "ok", "new_messages": new,
            "removed_messages": removed}


def after_sync(app, inbox: Inbox, new: int = 1) -> None:
    """Call the mail core's ``mailbox_synced`` hook as a transport does after a sync, then run the follow-up
    jobs it enqueued on a real RQ worker."""
    db.session.commit()  # the worker's session writes: this one holds no read transaction meanwhile
    app.extensions["plugins"].hook.mailbox_synced(app=app, **_synced(inbox, new=new))
    run_jobs(app)
    db.session.expire_all()  # what the worker wrote, not what this session last read


def test_hook_event_types_declares_contact_replied(rc_app):
    from host_app.events import event_types

    assert event_types()["contact_replied"].label == "Contact replied to our e-mail"


def test_contact_replied_runs_an_automation_right_after_the_sync(rc_app, sales, bob):
    rule = AutomationRule(
        name="Tag responders", trigger="contact_replied", match="all",
        conditions=[{"key": "imap_email", "params": {"responded": True, "within_days": 3, "inbox_id": None}}],
        actions=[{"key": "add_tag", "params": {"tag": "replied"}}],
    )
    db.session.add(rule)
    db.session.commit()
    offer = our_offer(sales, sent=days_ago(1))
    reply = add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=NOW, in_reply_to=offer.message_id)
    emitted = []

    class Spy:
        @hookimpl
        def event_emitted(self, event):
            emitted.append(event)

    rc_app.extensions["plugins"].pm.register(Spy(), name="spy")
    after_sync(rc_app, sales)
    assert db.session.get(Contact, bob.id).tags == ["replied"]
    replied = [e for e in emitted if e.type == "contact_replied"]
    thread = f"thread:{offer.dedup_key}"  # once per thread: the occurrence is our e-mail that was answered
    assert [(e.key, e.contact_ids, e.payload["reply_message_pk"]) for e in replied] == [(thread, (bob.id,), reply.id)]
    run = db.session.scalar(db.select(AutomationRun))
    assert (run.status, run.event_key) == ("fired", thread)

    # Bob writes again in the same thread: announced, but the automation does not fire twice for him.
    db.session.get(Contact, bob.id).remove_tag("replied")
    db.session.commit()
    add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=NOW, in_reply_to=offer.message_id)
    after_sync(rc_app, sales)
    assert [e.key for e in emitted if e.type == "contact_replied"] == [thread, thread]
    assert db.session.scalar(db.select(db.func.count(AutomationRun.id))) == 1
    assert db.session.get(Contact, bob.id).tags == []

    # Once per reply, when an instance asks for it: the third reply is an occurrence of its own.
    rc_app.config["REPLY_CONDITION_EVENT_ONCE_PER"] = "reply"
    third = add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=NOW, in_reply_to=offer.message_id)
    after_sync(rc_app, sales)
    assert emitted[-1].key == third.dedup_key
    assert db.session.get(Contact, bob.id).tags == ["replied"]


def test_hook_mailbox_synced__announces_no_old_replies(rc_app, sales, bob):
    from plugins.reply_condition import replied

    offer = our_offer(sales, sent=days_ago(100))
    add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(99), in_reply_to=offer.message_id)
    assert not holds(bob)
    found = process_inbox(sales.id)
    assert len(found) == 1 and replied.announce(found) == 0  # history from a first sync raises no event
    rc_app.config["REPLY_CONDITION_EVENT_MAX_AGE_DAYS"] = 0  # 0: no age limit
    assert replied.announce(found) == 1


def test_hook_automation_conditions(rc_app):
    from host_app.automation_engine import conditions

    condition = conditions()["imap_email"]
    assert condition.label == "IMAP email"
    assert condition.form_class is RepliedForm


def test_automation_builder_shows_the_condition_form(crm_app_factory, admin_client):
    response = admin_client.post("/automations/new", data={
        "name": "Follow up", "trigger": "contact_replied", "match": "all",
        "op": "add_condition", "new_condition": "imap_email",
    })
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'name="cond-0-key" value="imap_email"' in html
    for name in ("cond-0-responded", "cond-0-within_days", "cond-0-inbox_id"):
        assert f'name="{name}"' in html, name
    assert "has responded to one of our e-mails" in html and "Any team inbox" in html


def test_automation_builder_saves_the_parameters(admin_client, app):
    data = {
        "name": "Follow up", "trigger": "contact_replied", "match": "all", "enabled": "y", "op": "save",
        "cond-0-key": "imap_email", "cond-0-responded": "False", "cond-0-within_days": "4", "cond-0-inbox_id": "",
        "act-0-key": "add_tag", "act-0-tag": "no-answer",
    }
    assert admin_client.post("/automations/new", data=data).status_code == 302
    with app.app_context():
        rule = db.session.scalar(db.select(AutomationRule))
        assert rule.conditions == [{"key": "imap_email",
                                    "params": {"responded": False, "within_days": 4, "after_trigger": False,
                                               "inbox_id": None}}]
    bad = admin_client.post("/automations/new", data={**data, "cond-0-within_days": "-2"})
    assert bad.status_code == 200 and "Enter a number of days" in bad.get_data(as_text=True)


# ---------------------------------------------------------------------------- command line


def test_cli_conditions_list_and_eval(app, runner):
    listed = runner.invoke(args=["conditions", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {"key": "imap_email", "label": "IMAP email", "plugin": "reply_condition"} in json.loads(listed.output)
    with app.app_context():
        sales = make_inbox(TEAM)
        make_contact(BOB)
        offer = our_offer(sales)
        add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(8), in_reply_to=offer.message_id)
        synced(sales)
        inbox_id = sales.id

    def evaluate(params: str) -> bool:
        result = runner.invoke(args=["conditions", "eval", "imap_email", "--contact", BOB, "--params", params])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["result"]

    assert evaluate('{"responded": true}') is True
    assert evaluate('{"responded": false}') is False
    assert evaluate('{"responded": true, "within_days": 1}') is False
    assert evaluate('{"responded": true, "within_days": 2}') is True
    assert evaluate(f'{{"responded": true, "inbox_id": {inbox_id}}}') is True
    refused = runner.invoke(args=["conditions", "eval", "imap_email", "--contact", BOB,
                                  "--params", '{"responded": true, "within_days": -5}'])
    assert refused.exit_code != 0 and "within_days" in refused.output


def test_cli_rebuild_finds_the_responses_again(app, runner):
    with app.app_context():
        sales = make_inbox(TEAM)
        bob = make_contact(BOB)
        offer = our_offer(sales)
        add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(8), in_reply_to=offer.message_id)
        bob_id = bob.id
    result = runner.invoke(args=["reply-condition", "rebuild"])
    assert result.exit_code == 0, result.output
    assert "1 responses stored" in result.output
    with app.app_context():
        assert holds(db.session.get(Contact, bob_id))


# ---------------------------------------------------------------------------- batches, SQL arithmetic, no-op syncs


def _statements(engine):
    """Collect the SQL statements run on ``engine`` (a context manager yielding the list)."""
    import contextlib

    from sqlalchemy import event

    @contextlib.contextmanager
    def collecting():
        seen: list[str] = []

        def record(conn, cursor, statement, *args):
            seen.append(" ".join(statement.split()))

        event.listen(engine, "before_cursor_execute", record)
        try:
            yield seen
        finally:
            event.remove(engine, "before_cursor_execute", record)

    return collecting()


def test_pairs_are_found_across_batch_boundaries_in_both_directions(sales, bob, monkeypatch):
    """Batches are id ranges of one inbox: a pair whose two sides land in different batches, or whose
    other side is in another inbox with ids inside this inbox's range, is still found exactly once."""
    from plugins.reply_condition import candidates, matcher

    monkeypatch.setattr(matcher, "BATCH_SIZE", 3)
    monkeypatch.setattr(candidates, "INDEX_CHUNK", 2)
    support = make_inbox(OTHER_TEAM)
    carol = make_contact("carol@client.example")
    # Replies stored before the e-mails they answer (INBOX synced before Sent), by header and by subject.
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: x", date=days_ago(5), in_reply_to="late-1@team.example")
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: Pricing 7", date=days_ago(5))
    # The other inbox's messages take ids inside this inbox's batches.
    theirs = add_message(support, from_email=OTHER_TEAM, to=carol.email, subject="Ticket", date=days_ago(9))
    add_message(sales, from_email=carol.email, to=TEAM, subject="Re: Ticket", date=days_ago(8),
                in_reply_to=theirs.message_id)
    for i in range(4):  # filler, so the two sides of each pair fall in different batches
        add_message(sales, from_email=f"other{i}@client.example", to=TEAM, subject=f"Hello {i}", date=days_ago(7))
    add_message(sales, from_email=TEAM, to=BOB, subject="x", date=days_ago(6), message_id="late-1@team.example")
    add_message(sales, from_email=TEAM, to=BOB, subject="Pricing 7", date=days_ago(6))
    # And the usual order: ours first, the reply some batches later.
    early = our_offer(sales, sent=days_ago(4), subject="Offer Z")
    for i in range(3):
        add_message(sales, from_email=f"more{i}@client.example", to=TEAM, subject=f"Hi {i}", date=days_ago(3))
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: Offer Z", date=days_ago(2), in_reply_to=early.message_id)
    add_message(sales, from_email=BOB, to=TEAM, subject="RE: offer z", date=days_ago(2))

    batches = list(matcher.match_batches(sales.id))
    assert len(batches) > 1  # several batches, each handed on with its own responses
    found = [r for batch in batches for r in batch]
    pairs = sorted((r.contact_email, r.matched_by) for r in found)
    assert pairs == [(BOB, "header"), (BOB, "header"), (BOB, "subject"), (BOB, "subject"),
                     (carol.email, "header")]
    assert len({(r.reply_pk, r.our_pk) for r in found}) == len(found)
    assert db.session.scalar(db.select(db.func.count()).select_from(Response)) == len(found)
    carol_reply = next(r for r in found if r.contact_email == carol.email)
    assert (carol_reply.our_pk, carol_reply.our_inbox_id, carol_reply.reply_inbox_id) == (theirs.id, support.id,
                                                                                          sales.id)
    assert process_inbox(sales.id) == [] and process_inbox(support.id) == []
    assert db.session.scalar(db.select(db.func.count()).select_from(Response)) == len(found)


DELAYS = [
    timedelta(days=1),
    timedelta(seconds=0),
    timedelta(microseconds=1),
    timedelta(microseconds=999_999),
    timedelta(seconds=1),
    timedelta(seconds=1, microseconds=1),
    timedelta(seconds=59, microseconds=999_999),
    timedelta(days=400, hours=5, minutes=3, seconds=2, microseconds=500_000),
    timedelta(microseconds=-1),
    timedelta(microseconds=-500_000),
    timedelta(microseconds=-999_999),
    timedelta(seconds=-1),
    timedelta(seconds=-1, microseconds=-1),
    timedelta(days=-3, microseconds=-1),
]


def test_delay_seconds_computed_in_sql_equal_python(sales, bob):
    """delay_seconds is int((replied - sent).total_seconds()): truncated toward zero, to the microsecond,
    also when the reply is dated before our e-mail (clocks differ) and across a second's boundary."""
    base = NOW - timedelta(days=500) + timedelta(microseconds=999_999)
    expected = {}
    for i, delay in enumerate(DELAYS):
        sent = base + timedelta(days=i)
        offer = our_offer(sales, sent=sent, subject=f"Offer {i}")
        reply = add_message(sales, from_email=BOB, to=TEAM, subject=f"Re: Offer {i}", date=sent + delay,
                            in_reply_to=offer.message_id)
        expected[reply.id] = int(((sent + delay) - sent).total_seconds())
    synced(sales)
    stored = dict(db.session.execute(db.select(Response.reply_pk, Response.delay_seconds)).all())
    assert stored == expected
    assert {expected[pk] for pk in expected} >= {0, 1, -1, 59, 86400, -259200}


def test_subject_fallback_answers_only_an_email_sent_before_it_to_the_microsecond(sales, bob):
    sent = NOW - timedelta(days=3) + timedelta(microseconds=500_000)
    for i, delay in enumerate([timedelta(microseconds=1), timedelta(0), timedelta(microseconds=-1),
                               timedelta(seconds=-1, microseconds=999_999)]):
        our_offer(sales, sent=sent, subject=f"Quote {i}")
        add_message(sales, from_email=BOB, to=TEAM, subject=f"Re: Quote {i}", date=sent + delay)
    found = process_inbox(sales.id)
    assert [(r.matched_by, r.replied_at) for r in found] == [("subject", sent + timedelta(microseconds=1))]
    assert db.session.scalar(db.select(Response.delay_seconds)) == 0


def test_a_reference_to_a_hash_key_is_not_our_email(sales, bob):
    """Our e-mail is found by dedup_key, which equals the Message-ID; without one it is a hash no reply names."""
    offer = our_offer(sales)
    db.session.execute(db.update(Message).where(Message.id == offer.id).values(message_id=None, dedup_key="sha1:ab12"))
    db.session.commit()
    add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(9), in_reply_to="sha1:ab12")
    synced(sales)
    assert not holds(bob)


def test_folder_losing_its_sent_role_forgets_the_responses_it_held(sales, bob):
    """Its e-mails are no longer ours: their responses go, and nothing is announced."""
    sent_folder = next(f for f in sales.folders if f.role == ROLE_SENT)
    offer = our_offer(sales)
    add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(9), in_reply_to=offer.message_id)
    assert len(process_inbox(sales.id)) == 1
    db.session.execute(db.update(Message).where(Message.folder_id == sent_folder.id).values(direction="in"))
    db.session.get(Folder, sent_folder.id).role = "other"
    db.session.commit()
    assert process_inbox(sales.id) == []
    assert not holds(bob)


def test_a_sync_that_changed_nothing_costs_two_small_queries(rc_app, sales, bob):

    offer = our_offer(sales)
    add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(9), in_reply_to=offer.message_id)
    after_sync(rc_app, sales, new=2)
    assert holds(bob)
    unchanged = _synced(sales, new=0)
    with _statements(db.engine) as statements:
        rc_app.extensions["plugins"].hook.mailbox_synced(app=rc_app, **unchanged)
    assert len(statements) <= 2, statements
    assert all(s.upper().startswith("SELECT") for s in statements), statements
    assert not any("reply_condition_response" in s for s in statements)


def test_a_sync_that_changed_nothing_still_catches_up(rc_app, sales, bob):
    """The cursor may be behind (an earlier run failed), or a folder changed role: both are matched."""

    after_sync(rc_app, sales, new=0)  # no cursor yet: a normal run
    offer = our_offer(sales)
    add_message(sales, from_email=BOB, to=TEAM, subject="Re", date=days_ago(9), in_reply_to=offer.message_id)
    after_sync(rc_app, sales, new=0)
    assert holds(bob)

    archive = Folder(inbox_id=sales.id, name="Sent Items", role="other")
    db.session.add(archive)
    db.session.commit()
    after_sync(rc_app, sales, new=0)  # a new, empty folder: its role is remembered
    hidden = add_message(sales, from_email="assistant@team.example", to=BOB, subject="Offer B", date=days_ago(10),
                         direction="in")
    db.session.execute(db.update(Message).where(Message.id == hidden.id).values(folder_id=archive.id))
    db.session.commit()
    add_message(sales, from_email=BOB, to=TEAM, subject="Re: B", date=days_ago(9), in_reply_to=hidden.message_id)
    after_sync(rc_app, sales, new=2)
    assert db.session.scalar(db.select(db.func.count()).select_from(Response)) == 1
    db.session.execute(db.update(Message).where(Message.folder_id == archive.id).values(direction="out"))
    db.session.get(Folder, archive.id).role = ROLE_SENT
    db.session.commit()
    after_sync(rc_app, sales, new=0)  # only the role changed
    assert db.session.scalar(db.select(db.func.count()).select_from(Response)) == 2


def test_contact_replied_is_announced_batch_by_batch(rc_app, sales, bob, monkeypatch):
    """Each batch's responses are announced once the batch is committed, before the next batch is matched."""
    from plugins.reply_condition import matcher
    from plugins.reply_condition.models import Cursor

    monkeypatch.setattr(matcher, "BATCH_SIZE", 2)
    replies, offers = [], []
    for i in range(3):
        offers.append(our_offer(sales, sent=days_ago(2), subject=f"Offer {i}"))
        replies.append(add_message(sales, from_email=BOB, to=TEAM, subject=f"Re: Offer {i}", date=days_ago(1),
                                   in_reply_to=offers[-1].message_id))
    announced = []

    class Spy:
        @hookimpl
        def event_emitted(self, event):
            if event.type == "contact_replied":
                cursor = db.session.scalar(db.select(Cursor.last_message_pk).where(Cursor.inbox_id == sales.id))
                announced.append((event.key, cursor))

    rc_app.extensions["plugins"].pm.register(Spy(), name="spy")
    after_sync(rc_app, sales, new=6)
    # Three threads (one e-mail of ours each): three occurrences.
    assert announced == [(f"thread:{offer.dedup_key}", reply.id) for offer, reply in zip(offers, replies, strict=True)]


def test_a_reply_is_announced_once_though_later_syncs_match_it_again(rc_app, sales, bob):
    """Later syncs store new responses of an announced reply: another e-mail of ours it names, the same reply
    in a second inbox. The contact replied once: one event."""
    support = make_inbox(OTHER_TEAM)
    ids = [f"ours{n}@team.example" for n in range(2)]
    first = add_message(sales, from_email=sales.email, to=BOB, subject="Offer", date=days_ago(3), message_id=ids[0])
    reply_id = "reply@client.example"
    reply = add_message(sales, from_email=BOB, to=[TEAM, OTHER_TEAM], subject="Re: Offer", date=days_ago(1),
                        message_id=reply_id, in_reply_to=ids[0], references=" ".join(ids))
    announced = []

    class Spy:
        @hookimpl
        def event_emitted(self, event):
            if event.type == "contact_replied":
                announced.append((event.key, event.payload["our_message_pks"]))

    rc_app.extensions["plugins"].pm.register(Spy(), name="spy")
    after_sync(rc_app, sales, new=2)
    thread = f"thread:{first.dedup_key}"
    assert announced == [(thread, [first.id])]

    # Our second e-mail, synced only now (its Sent copy was out of reach at the first sync).
    add_message(sales, from_email=sales.email, to=BOB, subject="Offer, revised", date=days_ago(2), message_id=ids[1])
    after_sync(rc_app, sales, new=1)
    # The same reply, received by the second inbox too.
    add_message(support, from_email=BOB, to=[TEAM, OTHER_TEAM], subject="Re: Offer", date=days_ago(1),
                message_id=reply_id, in_reply_to=ids[0], references=" ".join(ids))
    after_sync(rc_app, support, new=1)

    assert db.session.scalar(db.select(db.func.count()).select_from(Response)) == 4
    assert announced == [(thread, [first.id])]
    assert reply.dedup_key == reply_id
    assert holds(bob) and holds(bob, inbox_id=sales.id)


def test_a_reply_stored_after_the_newest_message_was_expunged_is_matched(sales, bob):
    """The cursor is a message id: an id handed out again (SQLite reuses the highest rowid) would hide the reply."""
    offer = our_offer(sales, sent=days_ago(3))
    newest = add_message(sales, from_email="spam@junk.example", to=TEAM, subject="Win", date=days_ago(2))
    synced(sales)
    db.session.delete(newest)  # expunged on the server, deleted by the next sync
    db.session.commit()
    reply = add_message(sales, from_email=BOB, to=TEAM, subject="Re: Offer", date=days_ago(1),
                        in_reply_to=offer.message_id)
    assert reply.id > newest.id
    synced(sales)
    assert holds(bob)
