"""The inbox forms tie every hint to its input (aria-describedby): the field notes, the provider's note, the
kept CA certificate, the errors; against the real Dovecot and OAuth 2.0 provider where a page needs them."""
from __future__ import annotations

from pathlib import Path

from host_app.testing import ADMIN_PASSWORD, log_in, make_agent
from tests.imap_inbox.test_imap_oauth import oauth_config
from tests.support.html_tree import Page, field_notes
from tests.support.imap_helpers import connect_inbox

BASE = "/settings/inboxes"


def page(client, path: str, **post) -> Page:
    r = client.post(path, data=post) if post else client.get(path)
    assert r.status_code == 200, path
    return Page(r.get_data(as_text=True))


def descriptions(form: Page, control_id: str) -> list[str]:
    return [e.get("id") for e in form.described_by(form.by_id(control_id))]


def test_connect_form_ties_each_hint_and_the_provider_note(admin_client, admin):
    form = page(admin_client, f"{BASE}/new")
    checked, problems = field_notes(form)
    assert problems == [] and checked >= 9
    # The provider's note (filled in by inbox_form.js) is read with the provider choice, after its own hint.
    assert descriptions(form, "provider") == ["provider-description", "provider-hint"]
    assert descriptions(form, "password") == ["password-description"]


def test_refused_fields_are_described_by_their_errors(admin_client, admin):
    form = page(admin_client, f"{BASE}/new", name="", provider="other", host="", username="u", password="p",
                port="99999", security="ssl", owner_id=str(admin))
    checked, problems = field_notes(form)
    assert problems == []
    port = form.by_id("port")
    assert port.get("aria-invalid") == "true"
    assert any(e.get("role") == "alert" for e in form.described_by(port))


def test_edit_form_ties_the_kept_ca_certificate_note_to_both_ca_fields(app, admin_client, admin, mailbox):
    inbox_id = connect_inbox(app, mailbox, admin, ca_file=None, ca_pem=Path(mailbox.ca_file).read_text())
    form = page(admin_client, f"{BASE}/{inbox_id}/edit")
    assert field_notes(form)[1] == []
    assert "ca-upload-kept" in descriptions(form, "forget_ca_upload")
    assert "ca-upload-kept" in descriptions(form, "ca_upload")


def test_the_sign_in_form_ties_its_hints(crm_app_factory, oidc_provider):
    app = crm_app_factory(**oauth_config(oidc_provider))
    make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True, name="Ada Admin")
    client = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
    form = page(client, f"{BASE}/oauth/oidc/new")
    checked, problems = field_notes(form)
    assert problems == [] and checked >= 4
