"""The issue's end-to-end story in a real browser, against the real Dovecot, RQ worker and database.

Log in, connect a team mailbox via IMAP (presets, a wrong password explained on the form, then the right
one), watch the first sync finish on the list page, read the e-mails on a contact's timeline, build an
automation with the "IMAP email" condition, and see it fire when the contact replies again.
"""
from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

from playwright.sync_api import expect

from host_app.extensions import db
from host_app.models import AutomationRule, Contact
from plugins.imap_inbox.testing.mailgen import generate_mailbox, make_message

from .helpers import (
    ADMIN_EMAIL,
    OWNER_LABEL,
    connect_inbox,
    create_contact,
    fill_server_fields,
    inbox_row,
    log_in,
    wait_for_sync_ok,
)

CONTACT_NAME = "Anna Berger"
CONTACT_EMAIL = "anna.berger@customer.example"
COLOGNE = "Grüße aus Köln"
# Written by hand (not by a library) so the test sees exactly the header a mail client sends.
COLOGNE_ENCODED = "=?UTF-8?B?" + base64.b64encode(COLOGNE.encode()).decode() + "?="
OFFER_SUBJECT = "Proposal for the Cologne office"
OFFER_ID = "<offer-2025-1@team.example>"
GENERATED_INBOX, GENERATED_SENT = 220, 76
TOTAL_MESSAGES = GENERATED_INBOX + GENERATED_SENT + 4


def put_mail_in(mailbox) -> None:
    """300 messages: a realistic generated INBOX/Sent mix, and a conversation with the contact."""
    now = datetime.now(UTC).replace(microsecond=0)
    team = mailbox.username
    generated: dict[str, list[bytes]] = {"INBOX": [], "Sent": []}
    for folder, raw in generate_mailbox(GENERATED_INBOX, GENERATED_SENT, owner=team, correspondents=60, seed=7):
        generated[folder].append(raw)
    contact = (CONTACT_NAME, CONTACT_EMAIL)
    offer = make_message(("Ada Admin", team), contact, OFFER_SUBJECT, date=now - timedelta(days=3),
                         message_id=OFFER_ID, body="Hello Anna,\n\nplease find our proposal attached.\n")
    greeting = make_message(contact, team, COLOGNE_ENCODED, date=now - timedelta(days=2),
                            message_id="<koeln-1@customer.example>", body="Viele Grüße aus Köln!\n")
    reply = make_message(contact, team, f"Re: {OFFER_SUBJECT}", date=now - timedelta(days=1),
                         message_id="<reply-1@customer.example>", in_reply_to=OFFER_ID, references=OFFER_ID,
                         body="Thanks, looks good. Let's talk on Monday.\n")
    thanks = make_message(("Ada Admin", team), contact, f"Re: {COLOGNE}", date=now - timedelta(hours=20),
                          message_id="<thanks-1@team.example>", in_reply_to="<koeln-1@customer.example>",
                          body="Danke, Anna!\n")
    assert mailbox.write("INBOX", [*generated["INBOX"], greeting, reply]) == GENERATED_INBOX + 2
    assert mailbox.write("Sent", [*generated["Sent"], offer, thanks]) == GENERATED_SENT + 2


def test_connect_a_mailbox_read_the_timeline_and_automate_replies(page, live_server, mailbox, screenshot):
    put_mail_in(mailbox)
    log_in(page)
    create_contact(page, CONTACT_EMAIL, CONTACT_NAME)

    # Settings > Connected inboxes > Connect via IMAP
    page.locator("header nav").get_by_role("link", name="Settings").click()
    page.get_by_role("link", name=re.compile("Connected inboxes")).click()
    expect(page.get_by_text("No inboxes connected yet.")).to_be_visible()
    page.get_by_role("link", name="Connect via IMAP").first.click()
    expect(page.get_by_role("heading", name=re.compile("Connect via IMAP"))).to_be_visible()

    # A preset fills the server and explains what the provider needs.
    hint = page.locator("#provider-hint")
    page.get_by_label("Provider").select_option(label="Gmail")
    expect(page.get_by_label("Host name")).to_have_value("imap.gmail.com")
    expect(page.get_by_label("Port")).to_have_value("993")
    expect(page.get_by_label("Security")).to_have_value("ssl")
    expect(hint).to_be_visible()
    expect(hint).to_contain_text("app password")
    expect(hint.get_by_role("link")).to_have_attribute("href", re.compile(r"^https://support\.google\.com/"))
    page.get_by_label("Name", exact=True).fill("Support")
    screenshot("connect_form_preset")

    page.get_by_label("Provider").select_option(label="Outlook / Microsoft 365")
    expect(page.get_by_label("Host name")).to_have_value("outlook.office365.com")
    expect(hint).to_contain_text("outlook.office365.com")
    # "Other": the provider's server is cleared so it is not kept by mistake.
    page.get_by_label("Provider").select_option("other")
    expect(page.get_by_label("Host name")).to_have_value("")
    expect(hint).to_contain_text("Ask your e-mail provider")

    # First with a wrong password: explained in plain words, fields kept, password empty.
    fill_server_fields(page, mailbox, "wrong-password-123")
    page.get_by_label("Owner").select_option(label=OWNER_LABEL)
    page.get_by_role("button", name="Create IMAP").click()
    problem = page.locator("#connect-error")
    expect(problem).to_be_visible()
    expect(problem).to_contain_text(re.compile(r"password", re.I))
    expect(page.locator("#field-password .error")).to_be_visible()
    expect(page.get_by_label("Name", exact=True)).to_have_value("Support")
    expect(page.get_by_label("Host name")).to_have_value(mailbox.host)
    expect(page.get_by_label("Username")).to_have_value(mailbox.username)
    expect(page.get_by_label("Port")).to_have_value(str(mailbox.port))
    expect(page.get_by_label("CA file")).to_have_value(mailbox.ca_file)
    expect(page.get_by_label("Owner")).to_have_value(str(owner_id(live_server)))
    expect(page.get_by_label("Password or app password")).to_have_value("")
    assert "wrong-password-123" not in page.content()
    problem.scroll_into_view_if_needed()
    screenshot("connect_wrong_password")

    # The right password: saved, and the first sync starts; the list page follows it by polling the status JSON.
    polled: list[dict] = []
    page.on("response", lambda r: polled.extend(r.json()) if r.url.endswith("/settings/inboxes/status.json") else None)
    page.get_by_label("Password or app password").fill(mailbox.password)
    page.get_by_role("button", name="Create IMAP").click()
    expect(page).to_have_url(re.compile(r"/settings/inboxes/$"))
    expect(page.locator(".flash-success")).to_contain_text(f"Connected to {mailbox.username}")
    page.evaluate("window.__notReloaded = true")
    row = inbox_row(page, "Support")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(mailbox.username)
    expect(row).to_contain_text("Ada Admin")
    wait_for_sync_ok(row, TOTAL_MESSAGES)
    assert page.evaluate("window.__notReloaded") is True, "the list page reloaded instead of updating in place"
    assert mailbox.password not in page.content()
    screenshot("inboxes_list")
    assert_progress_made_sense(polled, TOTAL_MESSAGES)
    assert live_server.worker.failed_jobs() == []

    # The contact's timeline: e-mails in and out, subjects decoded.
    page.locator("header nav").get_by_role("link", name="Contacts").click()
    page.get_by_role("link", name=CONTACT_NAME).click()
    timeline = page.locator("section.timeline")
    entries = timeline.locator("article.entry")
    expect(entries).to_have_count(4)
    expect(entries.locator(".entry-title")).to_have_text(
        [f"Re: {COLOGNE}", COLOGNE, f"Re: {OFFER_SUBJECT}", OFFER_SUBJECT]  # two conversations, newest first
    )
    expect(entries.locator(".badge")).to_have_text(["sent", "received", "received", "sent"])
    expect(timeline.locator(".thread")).to_have_count(2)
    expect(timeline).not_to_contain_text("=?")
    screenshot("timeline")

    # An automation: when the contact replies, and they responded to one of our e-mails, tag them.
    page.locator("header nav").get_by_role("link", name="Automations").click()
    page.get_by_role("link", name="New automation").click()
    page.get_by_label("Name").fill("Tag people who reply")
    page.get_by_label("When").select_option(label="Contact replied to our e-mail")
    page.locator("select[name=new_condition]").select_option(label="IMAP email")
    page.get_by_role("button", name="Add condition").click()
    condition = page.locator(".part[data-key=imap_email]")
    expect(condition.get_by_role("heading", name="IMAP email")).to_be_visible()
    responded = page.locator("[name='cond-0-responded']")
    expect(responded).to_be_visible()
    responded.select_option(label="has responded to one of our e-mails")
    inbox_choice = page.locator("[name='cond-0-inbox_id']")
    expect(inbox_choice.locator("option")).to_have_text(["Any team inbox", f"Ada Admin <{mailbox.username}>"])
    page.locator("select[name=new_action]").select_option("add_tag")
    page.get_by_role("button", name="Add action").click()
    expect(responded).to_have_value("True")
    page.locator("[name='act-0-tag']").fill("replied")
    page.locator("#field-name").evaluate("field => field.scrollIntoView({block: 'start'})")
    screenshot("automation_imap_condition")
    page.get_by_role("button", name="Save automation").click()
    expect(page.get_by_text("Automation “Tag people who reply” saved.")).to_be_visible()
    expect(page.locator("table.list tbody tr").filter(has_text="Tag people who reply")).to_contain_text(
        "IMAP email: has responded to one of our e-mails"
    )
    with live_server.app.app_context():
        rule = db.session.scalar(db.select(AutomationRule))
        assert rule.trigger == "contact_replied"
        assert [c["key"] for c in rule.conditions] == ["imap_email"]
        assert rule.conditions[0]["params"]["responded"] is True
        assert rule.actions == [{"key": "add_tag", "params": {"tag": "replied"}}]
    # Opened again, the builder shows what was saved.
    page.get_by_role("link", name="Tag people who reply", exact=True).click()
    expect(page.get_by_label("When")).to_have_value("contact_replied")
    expect(page.locator("[name='cond-0-responded']")).to_have_value("True")
    expect(page.locator("[name='cond-0-inbox_id'] option:checked")).to_have_text("Any team inbox")
    expect(page.locator("[name='act-0-tag']")).to_have_value("replied")

    # Anna replies again; "Sync now" brings the reply, the event fires the automation.
    mailbox.append("INBOX", make_message(
        (CONTACT_NAME, CONTACT_EMAIL), mailbox.username, f"Re: {OFFER_SUBJECT}",
        message_id="<reply-2@customer.example>", in_reply_to=OFFER_ID, references=OFFER_ID,
        body="One more thing: can we meet in Köln?\n"))
    page.goto("/settings/inboxes/")
    row = inbox_row(page, "Support")
    row.get_by_role("button", name="Sync now").click()
    expect(page.locator(".flash-success")).to_contain_text("Sync of Support queued")
    wait_for_sync_ok(row, TOTAL_MESSAGES + 1)
    live_server.worker.wait_until_idle()  # the reply matching, a job of its own after the sync

    page.goto("/contacts/?tag=replied")
    expect(page.get_by_role("link", name=CONTACT_NAME)).to_be_visible()
    page.get_by_role("link", name=CONTACT_NAME).click()
    expect(page.locator(".side .tag")).to_have_text(["replied"])
    expect(page.locator("article.entry").first.locator(".entry-title")).to_have_text(f"Re: {OFFER_SUBJECT}")
    page.goto("/automations/runs")
    run = page.locator("table.list tbody tr").filter(has_text=CONTACT_EMAIL)
    expect(run).to_have_count(1)
    expect(run).to_contain_text("fired")
    assert live_server.worker.failed_jobs() == []


def assert_progress_made_sense(polled: list[dict], total: int) -> None:
    """Whatever the page saw while polling (maybe nothing, if the sync was quick): only progress, never secrets."""
    keys = {"id", "status", "progress_done", "progress_total", "error", "error_hint", "last_synced_at",
            "next_sync_at", "message_count", "watch"}  # watch: Live, Polling or hourly
    done = 0
    for status in polled:
        assert set(status) == keys
        assert status["status"] in ("queued", "syncing", "ok"), status
        if status["status"] == "syncing":
            assert status["progress_done"] >= done, f"progress went backwards: {polled}"
            assert status["progress_done"] <= max(status["progress_total"], total), status
            done = status["progress_done"]
    if polled:
        assert polled[-1]["status"] == "ok" and polled[-1]["message_count"] == total


def owner_id(live_server) -> int:
    from host_app.models import Agent

    with live_server.app.app_context():
        return db.session.scalar(db.select(Agent.id).where(Agent.email == ADMIN_EMAIL))


XSS_SUBJECT = "<script>window.__xss=1</script>"
XSS_NAME = "<img src=x onerror=window.__xss=2>"
XSS_INBOX_NAME = "Support <script>window.__xss=4</script>"


def test_script_in_mail_headers_is_shown_as_text(page, live_server, mailbox):
    now = datetime.now(UTC).replace(microsecond=0)
    attacker = (XSS_NAME, "mallory@attacker.example")
    mailbox.write("INBOX", [
        make_message(attacker, mailbox.username, XSS_SUBJECT, date=now - timedelta(hours=2),
                     body="<script>window.__xss=3</script>\n"),
        make_message(attacker, mailbox.username, '"><svg onload=window.__xss=5>', date=now - timedelta(hours=1)),
    ])
    mailbox.write("Sent", [make_message(("Ada Admin", mailbox.username), attacker,
                                        "Re: <b>bold</b> & <i>not</i>", date=now - timedelta(minutes=30))])

    log_in(page)
    row = connect_inbox(page, mailbox, name=XSS_INBOX_NAME, create_users=True)
    expect(row).to_have_count(1)
    wait_for_sync_ok(row, 3)
    expect(row.locator("strong").first).to_have_text(XSS_INBOX_NAME)
    assert_no_script_ran(page)
    live_server.worker.wait_until_idle()  # the contacts import, a job of its own after the sync

    # "Create users" made a contact of the sender, with the hostile display name as plain text.
    with live_server.app.app_context():
        contact = db.session.scalar(db.select(Contact).where(Contact.email == "mallory@attacker.example"))
        assert contact is not None, "Create users did not create the sender"
        contact_id = contact.id
    page.goto("/contacts/")
    expect(page.locator("table.list")).to_contain_text("mallory@attacker.example")
    expect(page.locator("table.list")).to_contain_text("img src=x onerror=window.__xss=2")
    assert_no_script_ran(page)

    page.goto(f"/contacts/{contact_id}")
    titles = page.locator("article.entry .entry-title")
    expect(titles).to_have_text(["Re: <b>bold</b> & <i>not</i>", '"><svg onload=window.__xss=5>', XSS_SUBJECT])
    expect(page.get_by_role("heading", level=1)).to_contain_text("img src=x onerror=window.__xss=2")
    assert_no_script_ran(page)


def assert_no_script_ran(page) -> None:
    """Nothing from the mail ran, and none of it became an element."""
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("main img, main svg, main b, main i, [onerror], [onload]").count() == 0
    injected = page.evaluate(
        "() => Array.from(document.scripts)"
        ".filter(s => s.textContent.includes('__xss') && s.type !== 'application/json').length"
    )
    assert injected == 0
