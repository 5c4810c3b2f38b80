"""The reply condition's field hints are tied to its inputs in the automation builder (aria-describedby)."""
from __future__ import annotations

from tests.support.html_tree import Page, field_notes


def test_the_conditions_hints_are_read_with_its_fields(admin_client):
    r = admin_client.post("/automations/new", data={
        "name": "Chase", "trigger": "manual", "match": "all", "op": "add_condition", "new_condition": "imap_email"})
    assert r.status_code == 200
    form = Page(r.get_data(as_text=True))
    within = form.find_all(lambda e: (e.get("name") or "").endswith("within_days"))
    assert len(within) == 1
    assert [e.text() for e in form.described_by(within[0])] == [
        "Optional: the response came at most this many days after our e-mail."]
    checked, problems = field_notes(form)
    assert problems == [] and checked >= 5  # the builder's own two and the condition's three
