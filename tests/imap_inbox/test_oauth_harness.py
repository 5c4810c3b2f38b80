"""The OAuth 2.0 test harness is real: the provider issues, expires and revokes tokens, and Dovecot
asks it about every token it is shown (so a test passing through it proves a real token was used)."""
from __future__ import annotations

import time

import pytest
import requests
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.conftest import OAUTH_ACCESS_TOKEN_TTL


def _client(server) -> IMAPClient:
    return IMAPClient(server.host, port=server.imaps_port, ssl_context=server.ssl_context(), timeout=30)


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_dovecot_takes_a_fresh_access_token(oauth_mailbox, mechanism):
    imap = _client(oauth_mailbox.server)
    token = oauth_mailbox.tokens["access_token"]
    if mechanism == "XOAUTH2":
        imap.oauth2_login(oauth_mailbox.username, token)
    else:
        imap.oauthbearer_login(oauth_mailbox.username, token)
    assert imap.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0
    imap.logout()


def test_dovecot_refuses_a_token_of_another_account_and_a_made_up_one(oauth_mailbox, oidc_provider):
    other = oidc_provider.sign_in("somebody-else@team.example")
    for token in (other["access_token"], "made-up-token"):
        imap = _client(oauth_mailbox.server)
        with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
            imap.oauth2_login(oauth_mailbox.username, token)
        imap.shutdown()


def test_access_tokens_expire_within_seconds_and_the_refresh_token_gets_a_new_one(oauth_mailbox, oidc_provider):
    tokens = oauth_mailbox.tokens
    assert tokens["expires_in"] <= OAUTH_ACCESS_TOKEN_TTL
    time.sleep(tokens["expires_in"] + 1)
    assert oidc_provider.introspect(tokens["access_token"]) == {"active": False}
    imap = _client(oauth_mailbox.server)
    with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
        imap.oauth2_login(oauth_mailbox.username, tokens["access_token"])
    imap.shutdown()

    fresh = _refresh(oidc_provider, tokens["refresh_token"])
    imap = _client(oauth_mailbox.server)
    imap.oauth2_login(oauth_mailbox.username, fresh["access_token"])
    imap.logout()


def test_a_revoked_refresh_token_is_an_invalid_grant(oauth_mailbox, oidc_provider):
    refresh_token = oauth_mailbox.tokens["refresh_token"]
    oidc_provider.revoke(refresh_token)
    with pytest.raises(requests.HTTPError) as refused:
        _refresh(oidc_provider, refresh_token)
    assert refused.value.response.status_code == 400
    assert refused.value.response.json()["error"] == "invalid_grant"


def test_denied_consent_comes_back_as_access_denied(oidc_provider):
    answer = oidc_provider.authorize("denies@team.example", consent=False)
    assert answer["error"] == "access_denied"
    assert "code" not in answer


def _refresh(provider, refresh_token: str) -> dict:
    response = requests.post(f"{provider.issuer}/token", verify=provider.ca_file, timeout=10,
                             auth=(provider.client_id, provider.client_secret),
                             data={"grant_type": "refresh_token", "refresh_token": refresh_token})
    response.raise_for_status()
    return response.json()
