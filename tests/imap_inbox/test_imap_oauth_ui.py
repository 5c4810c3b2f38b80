"""Settings > Connected inboxes > Sign in: the authorization code flow with PKCE against the real provider,
the Google and Microsoft presets (checked without calling them), and what comes back in plain words."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from host_app.api import Agent
from host_app.extensions import db
from host_app.testing import ADMIN_PASSWORD, log_in, make_agent
from plugins.imap_inbox.crypto import decrypt_refresh_token
from plugins.imap_inbox.models import ImapInbox
from tests.imap_inbox.test_imap_oauth import oauth_config
from tests.support.imap_helpers import message, stored, sync


@pytest.fixture
def web(crm_app_factory, oidc_provider):
    """The app with the test provider as "Other OAuth 2.0 server", an admin signed in to the CRM, an owner."""
    app = crm_app_factory(**oauth_config(oidc_provider))
    make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True, name="Ada Admin")
    owner_id = make_agent(app, "owner@team.example", "owner-password-1", name="Olivia Owner")
    return app, log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD), owner_id


def start(client, mailbox, owner_id, provider="oidc", **extra) -> str:
    """Fill the form and press Sign in; the provider's authorization URL the browser is sent to."""
    data = {"name": "Signed-in desk", "owner_id": str(owner_id), **extra}
    if provider == "oidc":
        data.update(host=mailbox.host, port=str(mailbox.port), security="ssl", ca_file=mailbox.ca_file)
    response = client.post(f"/settings/inboxes/oauth/{provider}/new", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


def come_back(client, callback_url: str):
    parts = urlsplit(callback_url)
    return client.get(f"{parts.path}?{parts.query}")


def inboxes(app) -> list[ImapInbox]:
    with app.app_context():
        rows = db.session.scalars(db.select(ImapInbox)).all()
        for row in rows:
            db.session.expunge(row)
        return rows


def test_signing_in_shows_the_account_then_connects_and_syncs(web, oauth_mailbox, oidc_provider):
    app, client, owner_id = web
    oauth_mailbox.append("INBOX", message(1))
    authorization_url = start(client, oauth_mailbox, owner_id)
    query = parse_qs(urlsplit(authorization_url).query)
    assert authorization_url.startswith(oidc_provider.issuer)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"] and query["state"]
    assert query["scope"] == ["openid email offline_access"] and query["prompt"] == ["consent"]

    back = come_back(client, oidc_provider.answer(authorization_url, oauth_mailbox.username))
    assert back.status_code == 302 and back.headers["Location"].endswith("/settings/inboxes/oauth/confirm")
    confirm = client.get("/settings/inboxes/oauth/confirm").get_data(as_text=True)
    assert oauth_mailbox.username in confirm and "Connect this mailbox" in confirm
    assert inboxes(app) == []  # shown before saving

    done = client.post("/settings/inboxes/oauth/confirm", data={})
    assert done.status_code == 302, done.get_data(as_text=True)
    (inbox,) = inboxes(app)
    assert (inbox.username, inbox.auth, inbox.oauth_provider, inbox.name) == (
        oauth_mailbox.username, "oauth2", "oidc", "Signed-in desk")
    assert sync(app, inbox.id)["status"] == "ok"
    assert [m["subject"] for m in stored(app, inbox.id)] == ["Message 1"]
    listing = client.get("/settings/inboxes/").get_data(as_text=True)
    assert "Reconnect" in listing


def test_denied_consent_comes_back_in_plain_words_and_saves_nothing(web, oauth_mailbox, oidc_provider):
    app, client, owner_id = web
    authorization_url = start(client, oauth_mailbox, owner_id)
    back = come_back(client, oidc_provider.answer(authorization_url, oauth_mailbox.username, consent=False))
    assert back.status_code == 302 and back.headers["Location"].endswith("/settings/inboxes/oauth/oidc/new")
    page = client.get(back.headers["Location"]).get_data(as_text=True)
    assert "was cancelled, or access to the mailbox was not allowed" in page and "Nothing was saved." in page
    assert 'value="Signed-in desk"' in page  # what the admin typed stays
    assert inboxes(app) == []
    # And a made-up return (no sign-in started with this state) is refused too.
    forged = client.get("/settings/inboxes/oauth/callback?code=made-up&state=made-up")
    assert "could not be completed" in client.get(forged.headers["Location"]).get_data(as_text=True)
    assert inboxes(app) == []
    stale = client.get("/settings/inboxes/oauth/confirm")
    assert "took too long or was already used" in stale.get_data(as_text=True)


def test_reconnect_after_a_revoked_sign_in_takes_only_the_same_account(web, oauth_mailbox, oidc_provider):
    app, client, owner_id = web
    for n in range(3):
        oauth_mailbox.append("INBOX", message(n))
    start_url = start(client, oauth_mailbox, owner_id)
    come_back(client, oidc_provider.answer(start_url, oauth_mailbox.username))
    client.post("/settings/inboxes/oauth/confirm", data={})
    (inbox,) = inboxes(app)
    assert sync(app, inbox.id)["status"] == "ok"
    oidc_provider.revoke(oidc_provider.sign_in(oauth_mailbox.username)["refresh_token"])  # another grant: no effect
    assert sync(app, inbox.id)["status"] == "ok"

    with app.app_context():
        oidc_provider.revoke(decrypt_refresh_token(db.session.get(ImapInbox, inbox.id).refresh_token_encrypted))
    assert sync(app, inbox.id)["status"] == "needs_attention"
    page = client.get("/settings/inboxes/").get_data(as_text=True)
    assert "Needs attention: sign in again." in page and "Reconnect" in page

    # Signing in as someone else is refused; nothing changes.
    reconnect = client.post(f"/settings/inboxes/oauth/{inbox.id}/reconnect", data={})
    back = come_back(client, oidc_provider.answer(reconnect.headers["Location"], "someone-else@team.example"))
    assert "but this inbox is the mailbox of" in client.get(back.headers["Location"]).get_data(as_text=True)
    assert inboxes(app)[0].status == "needs_attention"

    reconnect = client.post(f"/settings/inboxes/oauth/{inbox.id}/reconnect", data={})
    back = come_back(client, oidc_provider.answer(reconnect.headers["Location"], oauth_mailbox.username))
    assert "Signed in again" in client.get(back.headers["Location"]).get_data(as_text=True)
    oauth_mailbox.append("INBOX", message(3))
    summary = sync(app, inbox.id)
    assert summary["status"] == "ok" and summary["new_messages"] == 1
    assert len(stored(app, inbox.id)) == 4


@pytest.mark.parametrize("provider, host, scope, extra", [
    ("google", "https://accounts.google.com/o/oauth2/v2/auth", "https://mail.google.com/ openid email",
     {"access_type": ["offline"], "prompt": ["consent"]}),
    ("microsoft", "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/authorize",
     "https://outlook.office.com/IMAP.AccessAsUser.All offline_access openid email", {"prompt": ["select_account"]}),
])
def test_presets_build_the_right_authorization_url_without_calling_the_provider(crm_app_factory, provider, host,
                                                                                 scope, extra):
    app = crm_app_factory(OAUTH_GOOGLE_CLIENT_ID="google-app", OAUTH_GOOGLE_CLIENT_SECRET="s1",
                          OAUTH_MICROSOFT_CLIENT_ID="microsoft-app", OAUTH_MICROSOFT_CLIENT_SECRET="s2",
                          OAUTH_MICROSOFT_TENANT="contoso.example")
    make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True, name="Ada Admin")
    client = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
    page = client.get(f"/settings/inboxes/oauth/{provider}/new").get_data(as_text=True)
    assert 'id="sign-in"' in page and 'name="host"' not in page  # the preset knows the IMAP server
    with app.app_context():
        owner_id = db.session.scalar(db.select(Agent.id))
    url = start(client, None, owner_id, provider=provider)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == host
    assert query["client_id"] == [f"{provider}-app"]
    assert query["scope"] == [scope]
    assert query["response_type"] == ["code"] and query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == ["http://localhost/settings/inboxes/oauth/callback"]
    for key, value in extra.items():
        assert query[key] == value


def test_a_provider_without_a_client_id_says_so_instead_of_a_button(admin_client):
    for provider, setting in (("google", "CRM_OAUTH_GOOGLE_CLIENT_ID"), ("microsoft", "CRM_OAUTH_MICROSOFT_CLIENT_ID"),
                              ("oidc", "CRM_OAUTH_OIDC_CLIENT_ID")):
        page = admin_client.get(f"/settings/inboxes/oauth/{provider}/new").get_data(as_text=True)
        assert "is not set up in this installation" in page and setting in page
        assert 'id="sign-in"' not in page
    assert admin_client.get("/settings/inboxes/oauth/yahoo/new").status_code == 404


def test_a_signed_in_inbox_is_edited_but_keeps_its_server_account_and_sign_in(web, oauth_mailbox, oidc_provider):
    app, client, owner_id = web
    authorization_url = start(client, oauth_mailbox, owner_id)
    come_back(client, oidc_provider.answer(authorization_url, oauth_mailbox.username))
    client.post("/settings/inboxes/oauth/confirm", data={})
    (inbox,) = inboxes(app)
    assert client.get(f"/settings/inboxes/{inbox.id}/edit").status_code == 200
    form = {"name": "Renamed desk", "provider": "other", "host": inbox.host, "username": inbox.username,
            "port": str(inbox.port), "security": "ssl", "ca_file": inbox.ca_file, "owner_id": str(owner_id)}
    assert client.post(f"/settings/inboxes/{inbox.id}/edit", data=form).status_code == 302
    for change, says in (({"password": "a-password-1"}, "it has no password to change"),
                         ({"username": "other@team.example"}, "use Reconnect to sign in with another account"),
                         ({"host": "localhost"}, "keeps the mail server it was connected to")):
        page = client.post(f"/settings/inboxes/{inbox.id}/edit", data={**form, **change})
        assert page.status_code == 200 and says in page.get_data(as_text=True)
    (after,) = inboxes(app)
    assert (after.name, after.host, after.username) == ("Renamed desk", inbox.host, inbox.username)
    assert after.refresh_token_encrypted == inbox.refresh_token_encrypted and after.password_encrypted is None
