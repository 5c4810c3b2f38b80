"""Finding an e-mail by a word in it, in Chromium: from the contact's page, everyone's e-mails, the contacts list."""
from __future__ import annotations

import datetime as dt
import re

from playwright.sync_api import expect

from host_app.extensions import db
from host_app.models import Contact
from plugins.imap_inbox.testing import mailgen
from tests.support.imap_helpers import connect_inbox, make_owner, sync

from .helpers import log_in

CARLA = ("Carla Customer", "carla@customer.example")


def _mail(n, subject, body):
    return mailgen.make_message(CARLA, ["team@team.example"], subject, body=body, message_id=f"<b{n}@customer.example>",
                                date=dt.datetime(2024, 5, 1, 9, tzinfo=dt.UTC) + dt.timedelta(hours=n))


def test_search_finds_the_email_with_the_order_number_highlighted(page, live_server, mailbox):
    app = live_server.app
    mailbox.write("INBOX", [
        _mail(1, "<img src=x onerror=window.pwned=1> Delivery", "Your order 58213 ships on Monday with the crates."),
        _mail(2, "Lunch", "See you at noon."),
    ])
    assert sync(app, connect_inbox(app, mailbox, make_owner(app)))["status"] == "ok"
    with app.app_context():
        contact = Contact(email=CARLA[1], name=CARLA[0])
        db.session.add(contact)
        db.session.commit()
        contact_id = contact.id

    log_in(page)
    page.goto(f"/contacts/{contact_id}")
    page.get_by_role("searchbox", name="Search Carla Customer's e-mails").fill("order 58213")
    page.get_by_role("searchbox", name="Search Carla Customer's e-mails").press("Enter")
    expect(page).to_have_url(re.compile(rf"/mail/search\?contact={contact_id}&q=order\+58213$"))
    results = page.get_by_role("region", name="Search results")
    expect(results.locator("article")).to_have_count(1)
    expect(results.locator("mark")).to_have_text(["order", "58213"])
    expect(results).to_contain_text("<img src=x onerror=window.pwned=1> Delivery")  # shown as text
    assert page.evaluate("() => window.pwned") is None

    # Everyone's e-mails: a stemmed word; the result opens the message.
    page.get_by_role("link", name="search everyone's e-mails").click()
    page.get_by_role("searchbox", name="Words to search for").fill("crate")
    page.get_by_role("button", name="Search").click()
    expect(results.locator("mark")).to_have_text(["crates"])
    results.get_by_role("link", name=re.compile("Delivery")).click()
    expect(page).to_have_url(re.compile(r"/mail/messages/\d+$"))

    # The contacts list finds Carla by a word only her e-mail has.
    page.goto("/contacts/")
    page.get_by_role("searchbox", name="Search").fill("crates")
    page.get_by_role("searchbox", name="Search").press("Enter")
    expect(page.locator("table.list tbody")).to_contain_text(CARLA[1])

    page.set_viewport_size({"width": 375, "height": 740})
    for path in (f"/mail/search?q=crates&contact={contact_id}", f"/contacts/{contact_id}"):
        page.goto(path)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 375, path
