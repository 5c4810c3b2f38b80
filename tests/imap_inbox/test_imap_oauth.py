"""OAuth 2.0 mailboxes against the real provider and Dovecot: SASL login, refreshing access tokens,
a revoked sign-in needing attention, signing in again, and the refresh token encrypted like passwords."""
from __future__ import annotations

import json
import time

import pytest
from cryptography.fernet import Fernet

from host_app.extensions import db
from tests.support.imap_helpers import message, stored, sync


@pytest.fixture
def oauth_app(crm_app_factory, oidc_provider):
    """The app with the test provider registered as the "Other OAuth 2.0 / OpenID Connect server"."""
    return crm_app_factory(**oauth_config(oidc_provider))


def oauth_config(provider) -> dict:
    return {"OAUTH_OIDC_ISSUER": provider.issuer, "OAUTH_OIDC_CLIENT_ID": provider.client_id,
            "OAUTH_OIDC_CLIENT_SECRET": provider.client_secret, "OAUTH_CA_FILE": provider.ca_file}


def connect_oauth(app, mailbox, owner_id, **overrides) -> int:
    from plugins.imap_inbox import service

    values = dict(name="Signed-in desk", provider="oidc", username=mailbox.username,
                  refresh_token=mailbox.tokens["refresh_token"], owner_id=owner_id, host=mailbox.host,
                  port=mailbox.port, security="ssl", ca_file=mailbox.ca_file)
    values.update(overrides)
    with app.app_context():
        return service.create_oauth_inbox(**values).id


def inbox_row(app, inbox_id: int):
    from plugins.imap_inbox.models import ImapInbox

    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        db.session.expunge(inbox)
        return inbox


def dovecot_logins(server, username: str) -> list[str]:
    """Dovecot's log lines of the CRM's logins (the test's own APPENDs log in with a password, PLAIN)."""
    return [line for line in server.log_path.read_text().splitlines()
            if f"Login: user=<{username}>" in line and "method=PLAIN" not in line]


def test_a_signed_in_mailbox_syncs_over_oauthbearer_with_its_refresh_token_encrypted(oauth_app, oauth_mailbox, owner):
    from plugins.imap_inbox.crypto import decrypt_refresh_token

    for n in range(3):
        oauth_mailbox.append("INBOX", message(n))
    inbox_id = connect_oauth(oauth_app, oauth_mailbox, owner)
    inbox = inbox_row(oauth_app, inbox_id)
    assert (inbox.auth, inbox.oauth_provider, inbox.password_encrypted) == ("oauth2", "oidc", None)
    refresh_token = oauth_mailbox.tokens["refresh_token"]
    assert refresh_token.encode() not in bytes(inbox.refresh_token_encrypted)
    with oauth_app.app_context():
        assert decrypt_refresh_token(inbox.refresh_token_encrypted) == refresh_token

    summary = sync(oauth_app, inbox_id)
    assert summary["status"] == "ok", summary
    assert [m["subject"] for m in stored(oauth_app, inbox_id, "INBOX")] == ["Message 0", "Message 1", "Message 2"]
    # Dovecot offers both mechanisms: the standard one is chosen.
    logins = dovecot_logins(oauth_mailbox.server, oauth_mailbox.username)
    assert logins and all("method=OAUTHBEARER" in line for line in logins)


def test_xoauth2_is_used_when_the_server_offers_only_that(oauth_app, oauth_mailbox, owner, monkeypatch):
    from plugins.imap_inbox import connection

    offered = connection.IMAPClient.capabilities

    def without_oauthbearer(self):
        return tuple(c for c in offered(self) if c != b"AUTH=OAUTHBEARER")

    monkeypatch.setattr(connection.IMAPClient, "capabilities", without_oauthbearer)
    inbox_id = connect_oauth(oauth_app, oauth_mailbox, owner)
    assert sync(oauth_app, inbox_id)["status"] == "ok"
    assert "method=XOAUTH2" in dovecot_logins(oauth_mailbox.server, oauth_mailbox.username)[-1]


def test_an_expired_access_token_is_refreshed_before_logging_in(oauth_app, oauth_mailbox, oidc_provider):
    from plugins.imap_inbox.oauth_providers import get_provider
    from plugins.imap_inbox.oauth_tokens import AccessTokens

    tokens = oauth_mailbox.tokens
    with oauth_app.app_context():
        source = AccessTokens(get_provider("oidc"), tokens["refresh_token"], access_token=tokens["access_token"],
                              expires_at=tokens["obtained_at"] + tokens["expires_in"])
        assert source.current() == tokens["access_token"]  # still young: used as it is
        time.sleep(tokens["expires_in"])
        renewed = source.current()
        assert renewed != tokens["access_token"] and source.fresh
        # Handed out again for a later login it is no longer fresh: a refusal of it is worth one refresh.
        assert source.current() == renewed and not source.fresh
    assert oidc_provider.introspect(renewed)["active"] is True


def test_a_refused_token_that_looked_valid_is_refreshed_once_and_the_login_retried(oauth_app, oauth_mailbox, owner):
    from plugins.imap_inbox import service

    tokens = oauth_mailbox.tokens
    # Valid for another hour as far as the CRM knows, but not for the server (revoking an access token
    # with oidc-provider revokes its whole grant, so a token the provider never issued stands in).
    with oauth_app.app_context():
        inbox = service.create_oauth_inbox(
            name="Retry", provider="oidc", username=oauth_mailbox.username, refresh_token=tokens["refresh_token"],
            access_token="refused-by-the-server", expires_at=time.time() + 3600, owner_id=owner,
            host=oauth_mailbox.host, port=oauth_mailbox.port, security="ssl", ca_file=oauth_mailbox.ca_file)
        assert inbox.id
    refused = [line for line in oauth_mailbox.server.log_path.read_text().splitlines()
               if f"oauth2({oauth_mailbox.username}," in line and "Introspection failed" in line]
    assert len(refused) == 1
    assert dovecot_logins(oauth_mailbox.server, oauth_mailbox.username)


def test_a_revoked_sign_in_needs_attention_and_signing_in_again_keeps_the_mail(oauth_app, oauth_mailbox, owner,
                                                                              oidc_provider):
    from plugins.imap_inbox import service
    from plugins.imap_inbox.models import ImapInbox

    for n in range(4):
        oauth_mailbox.append("INBOX", message(n))
    inbox_id = connect_oauth(oauth_app, oauth_mailbox, owner)
    assert sync(oauth_app, inbox_id)["status"] == "ok"
    before = stored(oauth_app, inbox_id)

    oidc_provider.revoke(oauth_mailbox.tokens["refresh_token"])
    summary = sync(oauth_app, inbox_id)
    assert (summary["status"], summary["error_kind"]) == ("needs_attention", "sign_in_again"), summary
    inbox = inbox_row(oauth_app, inbox_id)
    assert inbox.status == "needs_attention"
    assert inbox.error.startswith("Needs attention: sign in again.")
    assert "Reconnect" in inbox.error_hint

    # Another account's sign-in is refused and changes nothing.
    stranger = oidc_provider.sign_in("stranger@team.example")
    with oauth_app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        with pytest.raises(service.InvalidInboxSettings, match="stranger@team.example"):
            service.reconnect_oauth_inbox(inbox, signed_in_as="stranger@team.example",
                                          refresh_token=stranger["refresh_token"])
        db.session.rollback()
    assert inbox_row(oauth_app, inbox_id).status == "needs_attention"

    oauth_mailbox.append("INBOX", message(4))
    again = oidc_provider.sign_in(oauth_mailbox.username)
    with oauth_app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        service.reconnect_oauth_inbox(inbox, signed_in_as=oauth_mailbox.username.upper(),
                                      refresh_token=again["refresh_token"], access_token=again["access_token"])
        assert (inbox.status, inbox.error) == ("queued", None)
    summary = sync(oauth_app, inbox_id)
    assert summary["status"] == "ok" and summary["new_messages"] == 1, summary
    after = stored(oauth_app, inbox_id)
    assert after[:4] == before and len(after) == 5


def test_rotate_key_re_encrypts_the_refresh_token(crm_app_factory, oidc_provider, oauth_mailbox, owner):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app = crm_app_factory(IMAP_ENCRYPTION_KEYS=old_key, **oauth_config(oidc_provider))
    inbox_id = connect_oauth(app, oauth_mailbox, owner)
    rotating = crm_app_factory(IMAP_ENCRYPTION_KEYS=f"{new_key},{old_key}", **oauth_config(oidc_provider))
    result = rotating.test_cli_runner().invoke(args=["inboxes", "rotate-key"])
    assert result.exit_code == 0, result.output
    new_only = crm_app_factory(IMAP_ENCRYPTION_KEYS=new_key, **oauth_config(oidc_provider))
    assert sync(new_only, inbox_id)["status"] == "ok"


def test_a_provider_without_a_client_id_says_which_settings_to_set(app):
    from plugins.imap_inbox.oauth_providers import OAuthNotConfigured, get_provider

    with app.app_context():
        for key, names in (("google", "CRM_OAUTH_GOOGLE_CLIENT_ID and CRM_OAUTH_GOOGLE_CLIENT_SECRET"),
                           ("microsoft", "CRM_OAUTH_MICROSOFT_CLIENT_ID and CRM_OAUTH_MICROSOFT_CLIENT_SECRET"),
                           ("oidc", "CRM_OAUTH_OIDC_CLIENT_ID and CRM_OAUTH_OIDC_CLIENT_SECRET")):
            with pytest.raises(OAuthNotConfigured, match=names):
                get_provider(key)



# --------------------------------------------------------------------------- manage.py inboxes


def oauth_connect_args(mailbox, *extra):
    return ["inboxes", "connect", "--name", "Signed in", "--provider", "oidc", "--username", mailbox.username,
            "--refresh-token-stdin", "--owner", "owner@team.example", "--host", mailbox.host,
            "--port", str(mailbox.port), "--ca-file", mailbox.ca_file, *extra]


def test_cli_connects_with_a_refresh_token_and_lists_auth_provider_and_status(oauth_app, oauth_mailbox, owner,
                                                                             oidc_provider):
    runner = oauth_app.test_cli_runner()
    refresh_token = oauth_mailbox.tokens["refresh_token"]
    result = runner.invoke(args=oauth_connect_args(oauth_mailbox), input=refresh_token + "\n")
    assert result.exit_code == 0, result.output
    inbox_id = json.loads(result.stdout)["id"]
    assert sync(oauth_app, inbox_id)["status"] == "ok"

    listed = runner.invoke(args=["inboxes", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert (row["id"], row["auth"], row["provider"], row["status"]) == (inbox_id, "oauth2", "oidc", "ok")

    oidc_provider.revoke(refresh_token)
    synced = runner.invoke(args=["inboxes", "sync", str(inbox_id)])
    assert synced.exit_code == 1 and "sign in again" in synced.stderr
    (row,) = json.loads(runner.invoke(args=["inboxes", "list", "--json"]).stdout)
    assert row["status"] == "needs_attention" and row["error"].startswith("Needs attention: sign in again.")
    for output in (result.output, listed.output, synced.output):
        assert refresh_token not in output


def test_cli_refuses_a_revoked_refresh_token_and_saves_nothing(oauth_app, oauth_mailbox, owner, oidc_provider):
    from plugins.imap_inbox.models import ImapInbox

    refresh_token = oauth_mailbox.tokens["refresh_token"]
    oidc_provider.revoke(refresh_token)
    result = oauth_app.test_cli_runner().invoke(args=oauth_connect_args(oauth_mailbox), input=refresh_token + "\n")
    assert result.exit_code == 1
    assert "Could not log in (sign_in_again)" in result.stderr and "Hint:" in result.stderr
    assert refresh_token not in result.output
    with oauth_app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(ImapInbox)) == 0


@pytest.mark.parametrize("args, stdin, says", [
    (["--provider", "oidc"], "token\n", "--provider needs --refresh-token-stdin"),
    (["--refresh-token-stdin"], "token\n", "--refresh-token-stdin needs --provider"),
    (["--provider", "oidc", "--refresh-token-stdin", "--password-stdin"], "token\n", "either --password-stdin"),
    (["--provider", "oidc", "--refresh-token-stdin"], "\n", "No refresh token on standard input"),
    (["--provider", "google", "--refresh-token-stdin"], "token\n", "set CRM_OAUTH_GOOGLE_CLIENT_ID"),
    (["--provider", "oidc", "--refresh-token-stdin"], "token\n", "Enter the IMAP server name"),
])
def test_cli_connect_mistakes_are_said_in_plain_words(oauth_app, owner, args, stdin, says):
    result = oauth_app.test_cli_runner().invoke(
        args=["inboxes", "connect", "--name", "N", "--username", "u@team.example", "--owner", "owner@team.example",
              *args], input=stdin)
    assert result.exit_code == 1
    assert says in result.stderr


def test_a_token_expiring_in_the_middle_of_a_large_first_sync_does_not_stop_it(oauth_app, oauth_mailbox, owner,
                                                                                 monkeypatch):
    """The server drops the connection after the access token has expired: the reconnect refreshes it."""
    from plugins.imap_inbox.oauth_tokens import AccessTokens
    from tests.conftest import OAUTH_ACCESS_TOKEN_TTL
    from tests.support.faultproxy import Cut, FaultProxy

    body = "A long enough line of a quote we sent.\n" * 40
    oauth_mailbox.write("INBOX", [message(n, body=body) for n in range(600)])
    refreshes = []
    refresh = AccessTokens.refresh

    def counted(self):
        refreshes.append(time.monotonic())
        return refresh(self)

    monkeypatch.setattr(AccessTokens, "refresh", counted)
    # About 480 kB at 40 kB/s: the first connection is cut after ~7.5 s, past the token's 5 s.
    with FaultProxy(oauth_mailbox.host, oauth_mailbox.port, down_rate=40_000) as proxy:
        inbox_id = connect_oauth(oauth_app, oauth_mailbox, owner, port=proxy.port)
        proxy.arm(Cut("down", 300_000, "rst"))
        refreshes.clear()
        first_connection = None

        def progress(done, total):
            nonlocal first_connection
            first_connection = first_connection or proxy.last

        summary = sync(oauth_app, inbox_id, on_progress=progress)
    assert first_connection is not None and first_connection.cut_fired
    assert summary["status"] == "ok", summary
    assert summary["new_messages"] == 600
    subjects = [m["subject"] for m in stored(oauth_app, inbox_id, "INBOX")]
    assert len(subjects) == len(set(subjects)) == 600
    # One token to start with; a new one for the reconnect, the first having expired meanwhile.
    assert len(refreshes) == 2 and refreshes[1] - refreshes[0] > OAUTH_ACCESS_TOKEN_TTL
