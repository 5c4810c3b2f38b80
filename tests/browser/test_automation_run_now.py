"""Run now in a real browser: choose the contacts, see the preview count, follow the worker's progress."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from host_app.extensions import db
from host_app.models import AutomationRule, Contact

LEADS = 1100  # more than two chunks of the run, so the bar has steps to show


def test_run_now_shows_the_preview_count_then_the_progress_until_done(admin_page, live_server, screenshot):
    page = admin_page
    with live_server.app.app_context():
        rows = [Contact(email=f"lead{i}@customer.example") for i in range(LEADS)]
        rows += [Contact(email=f"other{i}@customer.example") for i in range(20)]
        for row in rows[:LEADS]:
            row.add_tag("lead")
        db.session.add_all(rows)
        db.session.add(AutomationRule(
            name="Follow up leads", trigger="manual", match="all",
            conditions=[{"key": "has_tag", "params": {"tag": "lead"}}],
            actions=[{"key": "add_tag", "params": {"tag": "needs-follow-up"}}],
        ))
        db.session.commit()

    page.goto("/automations/")
    page.locator("tr").filter(has_text="Follow up leads").get_by_role("link", name="Run now").click()
    expect(page.get_by_role("heading", name=re.compile("Run now"))).to_be_visible()
    page.get_by_label("Contacts").select_option(label="All contacts")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("[data-role=preview]")).to_have_text("1,100 of 1,120 contacts match.")
    screenshot("automation_run_now_preview")

    page.get_by_role("button", name="Run the actions on 1,100 contacts").click()
    expect(page).to_have_url(re.compile(r"/automations/bulk-runs/\d+$"))
    status = page.get_by_role("status")
    expect(status).to_have_text("Done: 1,120 evaluated, 1,100 matched, 1,100 acted on.", timeout=60_000)
    bar = page.get_by_label("Progress of the run")
    assert bar.evaluate("b => [b.value, b.max]") == [LEADS, LEADS]
    screenshot("automation_run_now_done")
    assert live_server.worker.failed_jobs() == []

    with live_server.app.app_context():
        tagged = db.session.scalar(db.text("SELECT count(*) FROM contact_tag WHERE tag = 'needs-follow-up'"))
        assert tagged == LEADS
    page.get_by_role("link", name="The contacts acted on, in the run log").click()
    expect(page.locator("table.bulk-runs tbody tr")).to_have_count(1)
    expect(page.locator("table.bulk-runs tbody tr")).to_contain_text("done")
    expect(page.locator("nav.pager")).to_contain_text("1100 in all")
