"""The issue's "done when": an admin builds "N after we e-mail a lead, if they have not answered, tag them for
follow-up" in the builder, and it works on its own across a restart: real Dovecot mail, the real sync, an RQ
worker killed and started again during the wait, and the scheduler (``manage.py scheduler``) checking the wait.

The wait is the shortest the builder offers, 1 minute; the scheduler looks for due waits every 2 seconds
(``CRM_AUTOMATION_TICK_SECONDS``) instead of every minute, so the test does not wait for its minute to turn.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from playwright.sync_api import expect

from host_app.extensions import db
from host_app.models import AutomationRule, AutomationRun, Contact
from plugins.imap_inbox.testing.mailgen import make_message
from tests.support.reliability_helpers import SchedulerProcess, wait_for

from .helpers import connect_inbox, wait_for_sync_ok

FOLLOW_UP = "needs-follow-up"


def _contacts(app) -> dict[str, int]:
    with app.app_context():
        rows = [Contact(email="ann@client.example", name="Ann"), Contact(email="ben@client.example", name="Ben"),
                Contact(email="cat@client.example", name="Cat")]
        rows[0].add_tag("lead")
        rows[1].add_tag("lead")  # Cat is not a lead
        db.session.add_all(rows)
        db.session.commit()
        return {c.email: c.id for c in rows}


def _runs(app) -> dict[str, tuple[str, str]]:
    with app.app_context():
        rows = db.session.execute(db.select(Contact.email, AutomationRun.status, AutomationRun.detail)
                                  .join(Contact, Contact.id == AutomationRun.contact_id)).all()
        db.session.remove()
    return {email: (status, detail) for email, status, detail in rows}


def test_the_follow_up_built_in_the_builder_tags_who_did_not_answer_on_its_own_across_a_restart(
        admin_page, live_server, mailbox, tmp_path):
    page = admin_page
    ids = _contacts(live_server.app)
    now = datetime.now(UTC).replace(microsecond=0)
    team = ("Ada Admin", mailbox.username)
    for name in ("ann", "ben", "cat"):
        mailbox.append("Sent", make_message(team, f"{name}@client.example", "Our offer",
                                            date=now - timedelta(minutes=5), message_id=f"<offer-{name}@team.example>"))
    # Ben answers at once; Ann never does.
    mailbox.append("INBOX", make_message("ben@client.example", mailbox.username, "Re: Our offer", date=now,
                                         in_reply_to="<offer-ben@team.example>"))

    # The builder: when, wait, if, then.
    page.goto("/automations/")
    page.get_by_role("link", name="New automation").click()
    page.get_by_label("Name").fill("Follow up leads")
    page.get_by_label("When").select_option(label="We sent an e-mail to the contact (IMAP inbox)")
    page.get_by_label("Wait", exact=True).fill("1")
    page.get_by_label("Unit").select_option(label="minutes")
    page.get_by_label("Condition to add").select_option(label="Has tag")
    page.get_by_role("button", name="Add condition").click()
    page.locator(".part[data-key=has_tag]").get_by_label("Tag").fill("lead")
    page.get_by_label("Condition to add").select_option(label="IMAP email")
    page.get_by_role("button", name="Add condition").click()
    reply = page.locator(".part[data-key=imap_email]")
    reply.get_by_label("The contact").select_option(label="has not responded to any of our e-mails")
    reply.get_by_label("Responses that count").select_option(
        label="only responses after the e-mail that started the automation")
    page.get_by_label("Action to add").select_option(label="Add tag")
    page.get_by_role("button", name="Add action").click()
    page.locator(".part[data-key=add_tag]").get_by_label("Tag").fill(FOLLOW_UP)
    # What was typed before each "Add ..." round trip is still there.
    expect(page.get_by_label("Name")).to_have_value("Follow up leads")
    expect(page.get_by_label("Wait", exact=True)).to_have_value("1")
    expect(page.locator(".part[data-key=has_tag]").get_by_label("Tag")).to_have_value("lead")
    page.get_by_role("button", name="Save automation").click()
    expect(page).to_have_url(re.compile(r"/automations/$"))
    expect(page.locator("body")).to_contain_text("then wait 1 minute")
    with live_server.app.app_context():
        rule = db.session.scalar(db.select(AutomationRule))
        assert (rule.trigger, rule.wait_seconds, rule.match, rule.enabled) == ("email_sent", 60, "all", True)
        assert rule.conditions == [
            {"key": "has_tag", "params": {"tag": "lead"}},
            {"key": "imap_email", "params": {"responded": False, "within_days": None, "after_trigger": True,
                                             "inbox_id": None}},
        ]
        assert rule.actions == [{"key": "add_tag", "params": {"tag": FOLLOW_UP}}]

    # The sync sees our three e-mails: the automation starts a wait for each contact.
    row = connect_inbox(page, mailbox, name="Sales")
    wait_for_sync_ok(row, 4)
    live_server.worker.wait_until_idle()
    assert {email: status for email, (status, _) in _runs(live_server.app).items()} == {
        "ann@client.example": "waiting", "ben@client.example": "waiting", "cat@client.example": "waiting"}
    page.goto(f"/contacts/{ids['ann@client.example']}")
    expect(page.locator("ul.pending-waits")).to_contain_text("Follow up leads: checks on")

    # A restart during the wait: the worker is killed and a new one started, and the scheduler starts.
    live_server.worker.kill()
    live_server.worker.start()
    scheduler = SchedulerProcess(live_server.app, tmp_path / "scheduler.log", TESTING="true",
                                 AUTOMATION_TICK_SECONDS="2").start()
    try:
        wait_for(lambda: "waiting" not in {status for status, _ in _runs(live_server.app).values()}, 150,
                 "the scheduler and the new worker to check the waits", interval=1,
                 details=lambda: f"{live_server.worker.log_tail()}\n{scheduler.log_tail()}")
    finally:
        scheduler.stop()
    runs = _runs(live_server.app)
    assert runs == {
        "ann@client.example": ("fired", f"waited 1 minute; evaluated: conditions met; tagged {FOLLOW_UP}"),
        "ben@client.example": ("not_matched", "waited 1 minute; evaluated: conditions not met"),
        "cat@client.example": ("not_matched", "waited 1 minute; evaluated: conditions not met"),
    }
    assert live_server.worker.failed_jobs() == []

    page.goto(f"/contacts/{ids['ann@client.example']}")
    expect(page.locator("body")).to_contain_text(FOLLOW_UP)
    expect(page.locator("ul.pending-waits")).to_have_count(0)
    with live_server.app.app_context():
        tags = {c.email: c.tags for c in db.session.scalars(db.select(Contact))}
    assert tags == {"ann@client.example": ["lead", FOLLOW_UP], "ben@client.example": ["lead"],
                    "cat@client.example": []}
    page.goto("/automations/runs")
    expect(page.locator("body")).to_contain_text(f"waited 1 minute; evaluated: conditions met; tagged {FOLLOW_UP}")
