"""The block list for screen readers: its hint is read with the input, each remove button names its entry."""
from __future__ import annotations

from tests.support.html_tree import Page, row_controls_not_naming_their_row

BASE = "/settings/contacts-import"


def test_block_list_hint_and_remove_buttons(admin_client):
    for entry in ("spam.example", "pest@annoying.example"):
        assert admin_client.post(f"{BASE}/block", data={"entry": entry}).status_code == 302
    r = admin_client.get(f"{BASE}/")
    assert r.status_code == 200
    page = Page(r.get_data(as_text=True))
    [entry_input] = page.find_all(lambda e: e.tag == "input" and e.get("name") == "entry")
    assert [e.text() for e in page.described_by(entry_input)] == [
        "Addresses and domains never imported. A domain also covers its subdomains."]
    [table] = page.find_all(lambda e: e.tag == "table" and "block-list" in e.classes)
    checked, problems = row_controls_not_naming_their_row(page, table)
    assert problems == [] and checked == 2
