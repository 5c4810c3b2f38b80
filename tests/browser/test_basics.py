"""The host in a real browser: logging in, CSRF, contacts, and the automation builder with the host's has_tag."""
from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from host_app.extensions import db
from host_app.models import AutomationRule, AutomationRun, Contact

from .helpers import ADMIN_EMAIL, create_contact, log_in


def test_login_page_refuses_a_wrong_password_and_lets_the_admin_in(page, screenshot):
    page.goto("/contacts/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    screenshot("login")

    page.get_by_label("E-mail").fill(ADMIN_EMAIL)
    page.get_by_label("Password", exact=True).fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Wrong e-mail or password.")).to_be_visible()
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)

    log_in(page)
    expect(page.locator(".whoami")).to_have_text("Ada Admin (admin)")
    for section in ("Contacts", "Automations", "Settings"):
        expect(page.locator("header nav").get_by_role("link", name=section)).to_be_visible()


def test_forms_are_refused_without_their_csrf_token(admin_page, live_server):
    page = admin_page
    page.goto("/contacts/new")
    page.get_by_label("E-mail").fill("csrf@customer.example")
    # A form posted from another site has no valid token: drop the one the page carries.
    page.locator("input[name=csrf_token]").evaluate_all("inputs => inputs.forEach(i => i.remove())")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Save").click()
    assert posted.value.status == 400
    expect(page.get_by_text(re.compile("CSRF token", re.I))).to_be_visible()
    with live_server.app.app_context():
        assert db.session.scalar(db.select(Contact).where(Contact.email == "csrf@customer.example")) is None


def test_create_a_contact_and_find_it(admin_page, live_server):
    page = admin_page
    page.get_by_role("link", name="Contacts").click()
    expect(page.get_by_text("No contacts yet.")).to_be_visible()
    page.get_by_role("link", name="New contact").click()

    # The browser itself refuses what is not an address; the server refuses what the browser lets through.
    page.get_by_label("E-mail").fill("not an address")
    page.get_by_role("button", name="Save").click()
    assert page.get_by_label("E-mail").evaluate("input => input.validity.valid") is False
    page.get_by_label("E-mail").fill("anna@localhost")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#field-email .error")).to_be_visible()

    page.get_by_label("E-mail").fill("  Anna.Berger@Customer.example ")
    page.get_by_label("Name").fill("Anna Berger")
    page.get_by_label("Tags").fill("lead, berlin")
    page.get_by_label("Owner").select_option(label="Ada Admin <admin@team.example>")
    page.get_by_role("button", name="Save").click()

    expect(page.get_by_text("Contact created.")).to_be_visible()
    expect(page.get_by_role("heading", name="Anna Berger")).to_be_visible()
    expect(page.locator("dd").filter(has_text="anna.berger@customer.example")).to_be_visible()
    expect(page.locator(".side .tag")).to_have_text(["berlin", "lead"])
    expect(page.get_by_text("Nothing on this timeline yet.")).to_be_visible()

    page.get_by_role("link", name="Contacts").click()
    page.get_by_label("Search").fill("berger")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("table.list tbody tr")).to_have_count(1)
    expect(page.get_by_role("link", name="Anna Berger")).to_be_visible()
    page.get_by_label("Search").fill("nobody-like-this")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("No contacts match.")).to_be_visible()

    with live_server.app.app_context():
        contact = db.session.scalar(db.select(Contact).where(Contact.email == "anna.berger@customer.example"))
        assert contact is not None and contact.owner.email == ADMIN_EMAIL


def test_automation_builder_with_has_tag_saves_a_rule_that_runs(admin_page, live_server, screenshot):
    page = admin_page
    page.get_by_role("link", name="Automations").click()
    expect(page.get_by_text("No automations yet.")).to_be_visible()
    page.get_by_role("link", name="New automation").click()

    page.get_by_label("Name").fill("Welcome VIPs")
    page.get_by_label("When").select_option(label="Contact created")

    # Saving without an action is refused and keeps what was typed.
    page.get_by_role("button", name="Save automation").click()
    expect(page.get_by_text("Add at least one action.")).to_be_visible()
    expect(page.get_by_label("Name")).to_have_value("Welcome VIPs")

    page.locator("select[name=new_condition]").select_option("has_tag")
    page.get_by_role("button", name="Add condition").click()
    condition = page.locator(".part[data-key=has_tag]")
    expect(condition.get_by_role("heading", name="Has tag")).to_be_visible()
    page.locator("[name='cond-0-tag']").fill("vip")

    page.locator("select[name=new_action]").select_option("add_tag")
    page.get_by_role("button", name="Add action").click()
    expect(page.locator(".part[data-key=add_tag]")).to_be_visible()
    # Adding the action kept the condition's value (the builder round-trips through the server).
    expect(page.locator("[name='cond-0-tag']")).to_have_value("vip")
    page.locator("[name='act-0-tag']").fill("welcomed")
    screenshot("automation_builder")
    page.get_by_role("button", name="Save automation").click()

    expect(page.get_by_text("Automation “Welcome VIPs” saved.")).to_be_visible()
    row = page.locator("table.list tbody tr").filter(has_text="Welcome VIPs")
    expect(row).to_contain_text("Contact created")
    expect(row).to_contain_text("Has tag vip")  # labels, never raw keys
    expect(row).to_contain_text("Add tag: welcomed")
    with live_server.app.app_context():
        rule = db.session.scalar(db.select(AutomationRule))
        assert (rule.trigger, rule.match, rule.enabled) == ("contact_created", "all", True)
        assert rule.conditions == [{"key": "has_tag", "params": {"tag": "vip"}}]
        assert rule.actions == [{"key": "add_tag", "params": {"tag": "welcomed"}}]

    # The rule runs: a VIP gets the tag, somebody else does not.
    create_contact(page, "vip@customer.example", tags="vip")
    create_contact(page, "plain@customer.example", tags="lead")
    page.goto("/contacts/?tag=welcomed")
    expect(page.locator("table.list tbody tr")).to_have_count(1)
    expect(page.locator("table.list tbody")).to_contain_text("vip@customer.example")

    page.goto("/automations/runs")
    expect(page.locator("table.list tbody tr")).to_have_count(2)
    expect(page.locator("tr").filter(has_text="vip@customer.example")).to_contain_text("fired")
    expect(page.locator("tr").filter(has_text="plain@customer.example")).to_contain_text("not matched")


def test_the_browser_gets_the_security_headers_and_the_delete_confirmation_still_asks(admin_page, live_server):
    with live_server.app.app_context():
        db.session.add(AutomationRule(name="Keep me", trigger="contact_created",
                                      actions=[{"key": "add_tag", "params": {"tag": "x"}}]))
        db.session.commit()
    response = admin_page.goto("/automations/")
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    # The question now comes from static/confirm.js (no inline handler): dismissing it keeps the rule.
    admin_page.once("dialog", lambda dialog: dialog.dismiss())
    admin_page.get_by_role("button", name="delete").click()
    expect(admin_page.get_by_role("cell", name="Keep me", exact=True)).to_be_visible()
    admin_page.once("dialog", lambda dialog: dialog.accept())
    admin_page.get_by_role("button", name="delete").click()
    expect(admin_page.get_by_text("No automations yet.")).to_be_visible()


@pytest.mark.parametrize("context_options", [{"timezone_id": "Asia/Tokyo"}])
def test_times_show_in_the_readers_time_zone(admin_page, live_server):
    """A run logged at 12:00 UTC reads 9 PM to a reader in Tokyo (the page's UTC text is only the no-script form)."""
    page = admin_page
    with live_server.app.app_context():
        contact = Contact(email="tz@customer.example", name="Tee Zed")
        rule = AutomationRule(name="Time zones", trigger="manual", actions=[{"key": "add_tag", "params": {"tag": "t"}}])
        db.session.add_all([contact, rule])
        db.session.flush()
        db.session.add(AutomationRun(rule_id=rule.id, contact_id=contact.id, event_type="manual", event_key="tz",
                                     status="fired", created_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC)))
        db.session.commit()
    page.goto("/automations/runs")
    when = page.locator("time.local-time").first
    expect(when).to_have_attribute("datetime", "2026-03-01T12:00:00+00:00")
    expect(when).to_have_text(re.compile(r"Mar 1, 2026, 09:00\s?PM GMT\+9"))
