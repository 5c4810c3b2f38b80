"""Form hints and errors are tied to their inputs (aria-describedby), so a screen reader reads them with the field."""
from __future__ import annotations

from host_app.extensions import db
from host_app.models import AutomationRule
from tests.support.html_tree import Page, field_notes


def page(client, path: str, **post) -> Page:
    r = client.post(path, data=post) if post else client.get(path)
    assert r.status_code == 200, path
    return Page(r.get_data(as_text=True))


def test_contact_form_ties_its_hint_to_the_tags_input(admin_client):
    form = page(admin_client, "/contacts/new")
    tags = form.by_id("tags")
    assert [e.text() for e in form.described_by(tags)] == ["Comma-separated"]
    assert form.by_id("email").get("aria-describedby") is None  # no hint, no empty reference
    assert field_notes(form) == (1, [])


def test_errors_are_tied_too_and_mark_the_input_invalid(admin_client):
    form = page(admin_client, "/contacts/new", email="not an address", name="", tags="a, b")
    email = form.by_id("email")
    assert email.get("aria-invalid") == "true"
    described = form.described_by(email)
    assert described and all("error" in e.classes for e in described)
    assert "Invalid email address." in [e.text() for e in described]
    assert form.by_id("tags").get("aria-invalid") is None
    checked, problems = field_notes(form)
    assert problems == [] and checked >= 2


def test_automation_builder_ties_the_time_and_wait_hints(admin_client):
    form = page(admin_client, "/automations/new")
    assert form.described_by(form.by_id("daily_at"))[0].text().startswith("For “Every day at…”")
    assert form.described_by(form.by_id("wait_amount"))[0].text().startswith("After the event, wait")
    checked, problems = field_notes(form)
    assert problems == [] and checked >= 2


def test_run_now_ties_the_audience_hint_and_the_recheck_note(app, admin_client):
    with app.app_context():
        rule = AutomationRule(name="Follow up", trigger="manual", match="all", enabled=True, conditions=[],
                              actions=[{"key": "add_tag", "params": {"tag": "x"}}])
        db.session.add(rule)
        db.session.commit()
        rule_id = rule.id
    form = page(admin_client, f"/automations/{rule_id}/run")
    assert form.described_by(form.by_id("audience"))[0].text().startswith("The conditions are checked")
    assert field_notes(form) == (1, [])
    previewed = page(admin_client, f"/automations/{rule_id}/run", audience="all:", op="preview")
    [run] = previewed.find_all(lambda e: e.tag == "button" and e.get("value") == "run")
    assert [e.text() for e in previewed.described_by(run)] == [
        "The run checks the conditions again when it starts, so the count may change a little."]
