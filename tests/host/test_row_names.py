"""Buttons and links in table rows say which row they act on ("Deactivate: Alan Agent"), so a screen reader
user moving from button to button knows whose they are."""
from __future__ import annotations

from host_app.extensions import db
from host_app.models import AutomationRule, Contact
from tests.support.html_tree import Page, row_controls_not_naming_their_row


def table(client, path: str) -> tuple[Page, object]:
    r = client.get(path)
    assert r.status_code == 200, path
    page = Page(r.get_data(as_text=True))
    [found] = page.find_all(lambda e: e.tag == "table")
    return page, found


def test_agents(admin_client, agent):
    page, rows = table(admin_client, "/settings/agents")
    checked, problems = row_controls_not_naming_their_row(page, rows)
    assert problems == [] and checked == 4  # two agents, two buttons each
    [deactivate] = page.find_all(lambda e: e.tag == "button" and e.text() == "Deactivate"
                                 and "Alan Agent" in page.accessible_name(e))
    assert page.accessible_name(deactivate) == "Deactivate: Alan Agent"


def test_plugins(admin_client):
    page, rows = table(admin_client, "/settings/plugins")
    checked, problems = row_controls_not_naming_their_row(page, rows)
    assert problems == [] and checked >= 4  # one Enable or Disable per plugin


def test_automations(app, admin_client):
    with app.app_context():
        for name, trigger in (("Follow up leads", "manual"), ("Welcome", "contact_created")):
            db.session.add(AutomationRule(name=name, trigger=trigger, match="all", enabled=True, conditions=[],
                                          actions=[{"key": "add_tag", "params": {"tag": "x"}}]))
        db.session.commit()
    page, rows = table(admin_client, "/automations/")
    checked, problems = row_controls_not_naming_their_row(page, rows)
    # Each: its name (the link to edit it), runs, delete; the manual one also Run now.
    assert problems == [] and checked == 7


def test_contacts_a_contact_without_a_name_is_named_by_its_address(app, admin_client):
    with app.app_context():
        named = Contact(email="carla@customer.example", name="Carla Customer")
        named.add_tag("lead")
        db.session.add_all([named, Contact(email="nameless@customer.example")])
        db.session.commit()
    page, rows = table(admin_client, "/contacts/")

    def contact_name(row):
        cells = [e for e in row.iter() if e.tag == "td"]
        return cells[0].text() if cells[0].text() != "—" else cells[1].text()

    # A tag link lists everyone with that tag: it is about the tag, not the row, and says the tag.
    checked, problems = row_controls_not_naming_their_row(page, rows, contact_name,
                                                          skip=lambda e: "tag" in e.classes)
    assert problems == [] and checked == 2
    [nameless] = page.find_all(lambda e: e.tag == "a" and e.text() == "—")
    assert page.accessible_name(nameless) == "nameless@customer.example (no name)"
