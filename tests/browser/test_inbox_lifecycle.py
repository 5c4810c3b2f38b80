"""A connected inbox over time, in a real browser: a password changed on the server, what agents see,
long timelines, and deleting the inbox."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from playwright.sync_api import expect

from host_app.extensions import db
from host_app.testing import AGENT_PASSWORD
from plugins.imap_inbox.models import ImapInbox
from plugins.imap_inbox.testing.mailgen import make_message

from .helpers import AGENT_EMAIL, SYNC_TIMEOUT_MS, connect_inbox, create_contact, inbox_row, log_in, wait_for_sync_ok

CUSTOMER = ("Carol Chen", "carol@customer.example")


def conversation(mailbox, count: int, subject: str = "Order {n}") -> None:
    """``count`` e-mails with the customer, one an hour, alternating received and sent; the newest is n=count."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=count + 1)
    inbox, sent = [], []
    for n in range(1, count + 1):
        date = start + timedelta(hours=n)
        if n % 2:
            inbox.append(make_message(CUSTOMER, mailbox.username, subject.format(n=n), date=date))
        else:
            sent.append(make_message(("Ada Admin", mailbox.username), CUSTOMER, subject.format(n=n), date=date))
    mailbox.write("INBOX", inbox)
    mailbox.write("Sent", sent)


def test_a_password_changed_on_the_server_needs_attention_until_fixed(page, live_server, mailbox, screenshot):
    conversation(mailbox, 5)
    log_in(page)
    row = connect_inbox(page, mailbox)
    wait_for_sync_ok(row, 5)

    new_password = "changed-on-the-server-1"
    mailbox.server.add_user(mailbox.username, new_password)
    row.get_by_role("button", name="Sync now").click()
    expect(page.locator(".flash-success")).to_contain_text("Sync of Support queued")
    row = inbox_row(page, "Support")
    expect(row.locator("[data-role=label]")).to_have_text("Needs attention", timeout=SYNC_TIMEOUT_MS)
    expect(row.locator("[data-role=error]")).to_be_visible()
    expect(row.locator("[data-role=error]")).to_contain_text(re.compile("password", re.I))
    expect(row.locator("[data-role=fix]")).to_be_visible()
    expect(row.locator("[data-role=next-sync]")).to_have_text("Paused until fixed")
    expect(row.locator("[data-role=message-count]")).to_have_text("5")  # the stored e-mails stay
    assert new_password not in page.content() and mailbox.password not in page.content()
    screenshot("inboxes_needs_attention")

    row.get_by_role("link", name="fix the settings").click()
    expect(page.get_by_role("heading", name=re.compile("Edit Support"))).to_be_visible()
    password = page.get_by_label("Password or app password")
    expect(password).to_have_value("")
    expect(password).to_have_attribute("placeholder", "Unchanged")
    expect(page.get_by_label("Host name")).to_have_value(mailbox.host)
    expect(page.get_by_label("Username")).to_have_value(mailbox.username)

    # Saving with the old (now wrong) password again is refused on the form; nothing changes.
    password.fill(mailbox.password)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#connect-error")).to_contain_text(re.compile("password", re.I))
    expect(page.get_by_label("Password or app password")).to_have_value("")

    page.get_by_label("Password or app password").fill(new_password)
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash-success")).to_contain_text("Saved Support")
    wait_for_sync_ok(inbox_row(page, "Support"), 5)
    with live_server.app.app_context():
        stored = db.session.scalar(db.select(ImapInbox)).password_encrypted
        assert new_password.encode() not in bytes(stored)


def test_agents_read_timelines_but_never_see_inbox_settings(page, live_server, mailbox, agent):
    conversation(mailbox, 2, subject="Delivery {n}")
    log_in(page)
    create_contact(page, CUSTOMER[1], CUSTOMER[0])
    row = connect_inbox(page, mailbox, name="Secret Ops Mailbox")
    wait_for_sync_ok(row, 2)
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()

    log_in(page, AGENT_EMAIL, AGENT_PASSWORD)
    nav = page.locator("header nav")
    expect(nav.get_by_role("link", name="Contacts")).to_be_visible()
    expect(nav.get_by_role("link", name="Settings")).to_have_count(0)
    expect(nav.get_by_role("link", name="Automations")).to_have_count(0)
    nav.get_by_role("link", name="Contacts").click()
    page.get_by_role("link", name=CUSTOMER[0]).click()
    entries = page.locator("article.entry")
    expect(entries.locator(".entry-title")).to_have_text(["Delivery 2", "Delivery 1"])
    expect(entries.locator(".badge")).to_have_text(["sent", "received"])
    # The source is the inbox's owner; the inbox's name is for admins only.
    expect(entries.locator(".source")).to_have_text(["Ada Admin", "Ada Admin"])
    assert "Secret Ops Mailbox" not in page.content()

    for path in ("/settings/inboxes/", "/settings/inboxes/status.json", "/settings/inboxes/new"):
        assert page.goto(path).status == 403, path


def test_long_timelines_page_back_and_deleting_the_inbox_removes_its_emails(page, live_server, mailbox):
    conversation(mailbox, 45)
    log_in(page)
    create_contact(page, CUSTOMER[1], CUSTOMER[0])
    row = connect_inbox(page, mailbox)
    wait_for_sync_ok(row, 45)

    page.goto("/contacts/")
    page.get_by_role("link", name=CUSTOMER[0]).click()
    titles = page.locator("article.entry .entry-title")
    expect(titles).to_have_count(30)  # TIMELINE_PER_PAGE
    first_page = titles.all_text_contents()
    page.get_by_role("link", name="Older ›").click()
    expect(titles).to_have_count(15)
    second_page = titles.all_text_contents()
    expect(page.get_by_role("link", name="Older ›")).to_have_count(0)
    assert first_page + second_page == [f"Order {n}" for n in range(45, 0, -1)]

    # Delete: the confirmation says what goes, and nothing goes without the box ticked.
    page.goto("/settings/inboxes/")
    inbox_row(page, "Support").get_by_role("link", name="Delete: Support…").click()
    expect(page.locator(".warning")).to_contain_text("45 e-mails")
    confirm = page.get_by_label(re.compile("Yes, delete this inbox"))
    page.get_by_role("button", name="Delete inbox and its e-mails").click()
    assert confirm.evaluate("box => box.validity.valueMissing") is True  # the browser asks to tick it
    expect(page).to_have_url(re.compile(r"/delete$"))
    confirm.check()
    page.get_by_role("button", name="Delete inbox and its e-mails").click()
    expect(page.locator(".flash-success")).to_contain_text("Deleted Support")
    expect(page.get_by_text("No inboxes connected yet.")).to_be_visible()

    page.goto("/contacts/")
    page.get_by_role("link", name=CUSTOMER[0]).click()
    expect(page.get_by_text("Nothing on this timeline yet.")).to_be_visible()
    # The mailbox on the server is untouched.
    with mailbox.client() as imap:
        assert imap.select_folder("INBOX", readonly=True)[b"EXISTS"] == 23
        assert imap.select_folder("Sent", readonly=True)[b"EXISTS"] == 22
