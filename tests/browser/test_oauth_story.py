"""In Chromium: connect a mailbox by signing in at a real OpenID provider (oidc-provider) whose tokens a real
Dovecot checks; consent denied; the sign-in revoked; Reconnect. Screenshots of our side for docs/oauth.md."""
from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from host_app.extensions import db
from host_app.models import Contact
from plugins.imap_inbox.crypto import decrypt_refresh_token
from plugins.imap_inbox.models import ImapInbox
from plugins.imap_inbox.testing.mailgen import generate_mailbox, make_message

from .conftest import TIMEOUT_MS, VIEWPORT, LiveServer, RQWorkerProcess
from .helpers import OWNER_LABEL, create_contact, inbox_row, log_in, wait_for_sync_ok

CONTACT_EMAIL = "anna.berger@customer.example"
SUBJECT = "Our order for the Cologne office"
GENERATED = 150


@pytest.fixture
def live_server(app, admin, tmp_path, oidc_provider) -> Iterator[LiveServer]:
    """The app and its worker (as in conftest.py), registered as a client of the test provider: its callback
    URL is known only once the server listens, so the client is registered then (RFC 7591)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    client_id, client_secret = oidc_provider.register_client([f"{url}/settings/inboxes/oauth/callback"])
    settings = {"OAUTH_OIDC_ISSUER": oidc_provider.issuer, "OAUTH_OIDC_CLIENT_ID": client_id,
                "OAUTH_OIDC_CLIENT_SECRET": client_secret, "OAUTH_CA_FILE": oidc_provider.ca_file}
    app.config.update(settings)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    worker = RQWorkerProcess(app, tmp_path / "worker.log")
    worker.settings.update(settings)
    worker.start()
    try:
        yield LiveServer(url, app, worker)
    finally:
        worker.stop()
        server.shutdown()
        thread.join(timeout=30)
        server.server_close()


@pytest.fixture
def page(browser, live_server):
    """A fresh context on the live server. The provider's pages are HTTPS from a test CA, which this browser
    is told to accept (the CRM itself checks that certificate against CRM_OAUTH_CA_FILE)."""
    context = browser.new_context(viewport=VIEWPORT, base_url=live_server.url, locale="en-US", timezone_id="UTC",
                                  color_scheme="light", ignore_https_errors=True)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    js_errors: list[str] = []
    tab.on("pageerror", lambda error: js_errors.append(f"{tab.url}: {error}"))
    yield tab
    context.close()
    assert js_errors == []


def put_mail_in(mailbox) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    generated = [raw for folder, raw in generate_mailbox(GENERATED, 0, owner=mailbox.username, correspondents=30,
                                                         seed=11) if folder == "INBOX"]
    order = make_message(("Anna Berger", CONTACT_EMAIL), mailbox.username, SUBJECT, date=now - timedelta(days=1),
                         message_id="<order-1@customer.example>", body="Hello, here is our order.\n")
    mailbox.write("INBOX", [*generated, order])


def sign_in_at_provider(page, email: str, allow: bool = True) -> None:
    """On the provider's pages: sign in (unless the provider remembers the browser), then allow or deny."""
    heading = page.locator("h1")
    expect(heading).to_have_text(re.compile("Sign in to the test provider|to access your mail"))
    if heading.inner_text().startswith("Sign in"):
        page.get_by_label("E-mail").fill(email)
        page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name=re.compile("to access your mail"))).to_be_visible()
    expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
    page.get_by_role("button", name="Allow" if allow else "Deny").click()


def start_sign_in(page, mailbox, name: str) -> None:
    page.goto("/settings/inboxes/new")
    page.get_by_role("link", name="Other OAuth 2.0 / OpenID Connect server").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("IMAP host name").fill(mailbox.host)
    page.get_by_label("Port").fill(str(mailbox.port))
    page.get_by_label("Security").select_option("ssl")
    page.get_by_label("CA file").fill(mailbox.ca_file)
    page.get_by_label("Owner").select_option(label=OWNER_LABEL)
    page.locator("#sign-in").click()


def test_sign_in_connect_sync_revoke_and_reconnect(page, live_server, oauth_mailbox, oidc_provider, screenshot):
    put_mail_in(oauth_mailbox)
    log_in(page)
    create_contact(page, CONTACT_EMAIL, "Anna Berger")

    # Consent denied: back on the form in plain words, nothing saved.
    start_sign_in(page, oauth_mailbox, "Signed-in desk")
    sign_in_at_provider(page, oauth_mailbox.username, allow=False)
    expect(page.locator(".flash-error")).to_contain_text("access to the mailbox was not allowed")
    expect(page.locator(".flash-error")).to_contain_text("Nothing was saved.")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Signed-in desk")
    screenshot("oauth_consent_denied")

    # Sign in and allow: the account is shown before saving; then the first sync fills the list row.
    page.locator("#sign-in").click()
    sign_in_at_provider(page, oauth_mailbox.username)
    expect(page.locator("#signed-in-as")).to_have_text(oauth_mailbox.username)
    screenshot("oauth_confirm")
    page.get_by_role("button", name="Connect this mailbox").click()
    expect(page.locator(".flash-success")).to_contain_text(f"Connected to {oauth_mailbox.username}")
    row = inbox_row(page, "Signed-in desk")
    wait_for_sync_ok(row, GENERATED + 1)
    screenshot("oauth_inboxes_list")

    # The mail is on the contact's timeline.
    with live_server.app.app_context():
        contact_id = db.session.scalar(db.select(Contact.id).where(Contact.email == CONTACT_EMAIL))
        inbox = db.session.scalar(db.select(ImapInbox))
        refresh_token = decrypt_refresh_token(inbox.refresh_token_encrypted)
        db.session.remove()
    page.goto(f"/contacts/{contact_id}")
    expect(page.get_by_text(SUBJECT)).to_be_visible()

    # The sign-in is revoked at the provider: the next sync needs attention, with a Reconnect button.
    oidc_provider.revoke(refresh_token)
    page.goto("/settings/inboxes/")
    row = inbox_row(page, "Signed-in desk")
    row.get_by_role("button", name="Sync now").click()
    row = inbox_row(page, "Signed-in desk")
    expect(row.locator("[data-role=error]")).to_contain_text("Needs attention: sign in again.",
                                                             timeout=TIMEOUT_MS * 2)
    screenshot("oauth_sign_in_again")

    # Reconnect: the same account signs in again; the mail stays, nothing is stored twice.
    oauth_mailbox.append("INBOX", make_message(("Anna Berger", CONTACT_EMAIL), oauth_mailbox.username,
                                               "One more thing", message_id="<more-1@customer.example>"))
    page.reload()
    inbox_row(page, "Signed-in desk").get_by_role("button", name="Reconnect").click()
    sign_in_at_provider(page, oauth_mailbox.username)
    expect(page.locator(".flash-success")).to_contain_text("Signed in again")
    wait_for_sync_ok(inbox_row(page, "Signed-in desk"), GENERATED + 2)
    page.goto(f"/contacts/{contact_id}")
    expect(page.get_by_text(SUBJECT)).to_have_count(1)
    expect(page.get_by_text("One more thing")).to_be_visible()
    assert refresh_token not in page.content()


def test_choosing_gmail_or_microsoft_offers_signing_in_first(page, live_server):
    log_in(page)
    page.goto("/settings/inboxes/new")
    google = page.locator(".oauth-preferred").get_by_role("link", name="Sign in with Google")
    microsoft = page.locator(".oauth-preferred").get_by_role("link", name="Sign in with Microsoft")
    expect(google).to_be_hidden()
    page.get_by_label("Provider").select_option(label="Gmail")
    expect(google).to_be_visible()
    expect(microsoft).to_be_hidden()
    page.get_by_label("Provider").select_option(label="Outlook / Microsoft 365")
    expect(microsoft).to_be_visible()
    expect(google).to_be_hidden()
    page.get_by_label("Provider").select_option("other")
    expect(microsoft).to_be_hidden()
    page.get_by_label("Provider").select_option(label="Gmail")
    google.click()
    # Google is not set up in this installation: said plainly, no button that would fail.
    expect(page.locator("#not-configured")).to_contain_text("CRM_OAUTH_GOOGLE_CLIENT_ID")
    expect(page.locator("#sign-in")).to_have_count(0)
