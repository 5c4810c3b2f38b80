"""Conversations on a contact's timeline: References / In-Reply-To, the subject fallback the reply condition
uses too, newest thread first with its older messages as one line each."""
from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from host_app.api import Contact, db
from plugins.mail.conversations import thread_ids
from plugins.mail.testing import MailRows

CARLA = ("Carla Customer", "carla@customer.example")


def _day(day: int) -> datetime:
    return datetime(2024, 6, day, 9, 0, tzinfo=UTC)


def _conversations(app):
    """Offer: our e-mail, a reply naming it, a reply naming nothing but "AW: Offer"; Lunch: one e-mail, newest."""
    with app.app_context():
        rows = MailRows()
        inbox = rows.inbox("team@team.example", name="Team desk")
        offer = rows.sent(inbox, CARLA[1], date=_day(1))
        offer.subject = "Offer"
        reply = rows.received(inbox, CARLA, date=_day(2), in_reply_to=offer.message_id,
                              references=offer.message_id)
        reply.subject = "Re: Offer"
        by_subject = rows.received(inbox, CARLA, date=_day(3))
        by_subject.subject = "AW:  offer"
        other_offer = rows.received(inbox, ("Dan", "dan@other.example"), date=_day(3))
        other_offer.subject = "Offer"  # the same words from somebody else: not on Carla's timeline
        lunch = rows.received(inbox, CARLA, date=_day(4))
        lunch.subject = "Lunch?"
        contact = Contact(email=CARLA[1], name="Carla Customer")
        db.session.add(contact)
        db.session.commit()
        return contact.id, {m.subject: m.id for m in (offer, reply, by_subject, lunch)}


def test_thread_ids_follow_references_then_the_reply_subject():
    class M:
        def __init__(self, id, message_id, subject, day, in_reply_to=None, references=None):
            self.id, self.message_id, self.dedup_key, self.subject = id, message_id, message_id, subject
            self.date, self.in_reply_to, self.references = _day(day), in_reply_to, references

    threads = thread_ids([
        M(1, "a@x", "Offer", 1), M(2, "b@x", "Re: Offer", 2, in_reply_to="a@x", references="a@x"),
        M(3, "c@x", "RE: AW: offer", 3), M(4, "d@x", "Re: Re: Offer", 4, references="a@x b@x"),
        M(5, "e@x", "Offer", 5),  # a new e-mail with the same subject and no reply prefix: a new conversation
        M(6, "f@x", "Re: Something else", 6), M(7, "g@x", "Lunch", 7, in_reply_to="<zzz@elsewhere>"),
    ])
    assert threads[1] == threads[2] == threads[3] == threads[4]
    assert len({threads[1], threads[5], threads[6], threads[7]}) == 4


def test_the_timeline_groups_a_conversation_newest_thread_first(app, agent_client):
    contact_id, ids = _conversations(app)
    html = agent_client.get(f"/contacts/{contact_id}").get_data(as_text=True)
    lunch = html.index(f'href="/mail/messages/{ids["Lunch?"]}"')
    thread = re.search(r'<div class="thread"[^>]*>(.*?)</div>\s*(?=<div class="thread"|<a class|</section)', html,
                       re.S)
    assert thread, html
    inside = thread.group(1)
    # Newest first like the timeline: the newest in full, the older two collapsed to one line each.
    positions = [inside.index(f'href="/mail/messages/{ids[s]}"') for s in ("AW:  offer", "Re: Offer", "Offer")]
    assert positions == sorted(positions)
    assert inside.count("entry-collapsed") == 2
    assert lunch < html.index(thread.group(0))  # the newest conversation comes first
    assert "Carla Customer" in inside  # who wrote each message


def test_the_command_line_timeline_names_each_entrys_thread(app, runner):
    _contact_id, ids = _conversations(app)
    result = runner.invoke(args=["contacts", "timeline", CARLA[1], "--json"])
    assert result.exit_code == 0, result.output
    entries = {e["subject"]: e for e in json.loads(result.output)}
    assert entries["Offer"]["thread_id"] == entries["Re: Offer"]["thread_id"] == entries["AW:  offer"]["thread_id"]
    assert entries["Lunch?"]["thread_id"] != entries["Offer"]["thread_id"]
    assert entries["Re: Offer"]["from"] == CARLA[1] and entries["Offer"]["to"] == [CARLA[1]]


def test_a_thread_is_the_same_on_every_page_of_the_timeline(app):
    """ "AW:  offer" names no message: on a page without "Offer" it still joins Offer's thread, found on the
    older pages by its subject, and the JSON's thread_id is the same wherever each message is shown."""
    contact_id, ids = _conversations(app)
    from plugins.mail.timeline import timeline_entries

    with app.app_context():
        contact = db.session.get(Contact, contact_id)
        whole = {e.details["thread_id"] for e in timeline_entries(contact, None, 10) if e.title != "Lunch?"}
        assert len(whole) == 1
        paged, before = [], None
        while True:
            page = timeline_entries(contact, before, 1)  # one message per page: every thread is cut
            if not page:
                break
            paged += page
            before = page[-1].date
        by_title = {e.title: e.details["thread_id"] for e in paged}
        assert by_title["AW:  offer"] == by_title["Re: Offer"] == by_title["Offer"] == whole.pop()
        assert by_title["Lunch?"] != by_title["Offer"]


def test_the_timeline_filters_received_sent_and_by_inbox(app, agent_client):
    with app.app_context():
        rows = MailRows()
        first = rows.inbox("team@team.example", name="Secret desk name")
        second = rows.inbox("sales@team.example")
        rows.received(first, CARLA, date=_day(1)).subject = "From Carla to team"
        rows.sent(first, CARLA[1], date=_day(2)).subject = "Team to Carla"
        rows.received(second, CARLA, date=_day(3)).subject = "From Carla to sales"
        contact = Contact(email=CARLA[1], name="Carla Customer")
        db.session.add(contact)
        db.session.commit()
        contact_id, second_id = contact.id, second.id

    def titles(query):
        page = agent_client.get(f"/contacts/{contact_id}{query}")
        assert page.status_code == 200
        return re.findall(r'<a href="/mail/messages/\d+">([^<]+)</a>', page.get_data(as_text=True))

    assert titles("") == ["From Carla to sales", "Team to Carla", "From Carla to team"]
    assert titles("?direction=in") == ["From Carla to sales", "From Carla to team"]
    assert titles("?direction=out") == ["Team to Carla"]
    assert titles(f"?inbox_id={second_id}") == ["From Carla to sales"]
    assert titles(f"?inbox_id={second_id}&direction=out") == []
    page = agent_client.get(f"/contacts/{contact_id}").get_data(as_text=True)
    # Each inbox by its address and whose it is; its name is for admins only and never on timelines.
    assert f'<option value="{second_id}" >sales@team.example (Team inbox)</option>' in page
    assert "Secret desk name" not in page
