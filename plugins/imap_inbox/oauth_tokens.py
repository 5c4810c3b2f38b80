"""Access tokens of an OAuth 2.0 mailbox, got with its refresh token (Authlib) shortly before they expire.

An access token lives only in the memory of the process that logs in with it: never in the database,
Redis, a job's arguments, a log line or an error message. The refresh token is stored encrypted; when
the service hands out a new one with a refresh (rotation), ``on_new_refresh_token`` stores it.

A refresh the service refuses for good (``invalid_grant``: revoked, password changed, app removed)
is an ImapConnectError of kind ``sign_in_again``, permanent: the inbox needs a person to sign in again.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError

from .connection import OAUTH_APP_REJECTED, OAUTH_UNREACHABLE, SIGN_IN_AGAIN, ImapConnectError
from .oauth_providers import SETTING_NAMES, OAuthProvider, ca_bundle

log = logging.getLogger(__name__)

# A token this close to its end is refreshed before use (never more than a quarter of its life, so the
# seconds-long tokens of a test server are still used).
REFRESH_MARGIN = 60.0
# How long a discovery document is trusted before it is fetched again.
METADATA_TTL = 3600.0

_metadata: dict[str, tuple[float, dict]] = {}


def server_metadata(provider: OAuthProvider, timeout: float = 10) -> dict:
    """The provider's OpenID Connect discovery document, cached for an hour; raises ImapConnectError."""
    url = provider.server_metadata_url
    if not url:
        return {}
    cached = _metadata.get(url)
    if cached and time.monotonic() - cached[0] < METADATA_TTL:
        return cached[1]
    try:
        response = requests.get(url, timeout=timeout, verify=ca_bundle())
        response.raise_for_status()
        document = response.json()
    except requests.exceptions.SSLError as exc:
        raise _untrusted(provider, url) from exc
    except (requests.RequestException, ValueError) as exc:
        raise ImapConnectError(
            OAUTH_UNREACHABLE,
            f"The sign-in service {url.split('/.well-known')[0]} could not be asked for its settings "
            f"({type(exc).__name__}).",
            "Check the issuer URL (CRM_OAUTH_OIDC_ISSUER). If the service is just down, the sync retries.",
        ) from None
    _metadata[url] = (time.monotonic(), document)
    return document


def token_endpoint(provider: OAuthProvider) -> str:
    endpoint = provider.token_endpoint or server_metadata(provider).get("token_endpoint")
    if not endpoint:
        raise ImapConnectError(OAUTH_APP_REJECTED, f"{provider.label} names no token endpoint in its settings.",
                               "Check the issuer URL (CRM_OAUTH_OIDC_ISSUER).", permanent=True)
    return endpoint


def client_auth_method(provider: OAuthProvider) -> str:
    """How the client secret goes to the token endpoint: HTTP Basic unless the service takes only the body."""
    if provider.token_endpoint:  # Google and Microsoft document the secret in the body
        return "client_secret_post"
    supported = server_metadata(provider).get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    return "client_secret_basic" if "client_secret_basic" in supported else "client_secret_post"


def oauth_session(provider: OAuthProvider, **kwargs) -> OAuth2Session:
    """An Authlib client of ``provider`` (our registered app); its requests trust ``ca_bundle()``."""
    session = OAuth2Session(provider.client_id, provider.client_secret, scope=provider.scope,
                            token_endpoint_auth_method=client_auth_method(provider), **kwargs)
    session.verify = ca_bundle()
    # Else REQUESTS_CA_BUNDLE would win over session.verify (a requests quirk), ignoring CRM_OAUTH_CA_FILE.
    session.trust_env = session.verify is True
    return session


class AccessTokens:
    """Hands out a valid access token for one mailbox, refreshing it when it is (nearly) expired."""

    def __init__(
        self,
        provider: OAuthProvider,
        refresh_token: str,
        *,
        access_token: str | None = None,
        expires_at: float | None = None,
        on_new_refresh_token: Callable[[str], None] | None = None,
        load_refresh_token: Callable[[], str | None] | None = None,
        timeout: float = 30,
    ) -> None:
        self.provider = provider
        self._refresh_token = refresh_token
        self._access_token = access_token
        self._expires_at = expires_at
        self._lifetime = (expires_at - time.time()) if expires_at else None
        self._on_new_refresh_token = on_new_refresh_token
        self._load_refresh_token = load_refresh_token
        self.timeout = timeout
        # The token last handed out came straight from the service: if the server refuses it, a refresh won't help.
        self.fresh = False

    def __repr__(self) -> str:
        return f"AccessTokens({self.provider.key})"

    def current(self) -> str:
        """A token that should still be valid for a while; refreshed first when it is not."""
        if self._access_token is None or self._expiring():
            return self.refresh()
        self.fresh = False  # kept from earlier: if the server refuses it, a new one is worth a try
        return self._access_token

    def _expiring(self) -> bool:
        if self._expires_at is None:
            return False
        margin = min(REFRESH_MARGIN, (self._lifetime or REFRESH_MARGIN) / 4)
        return self._expires_at - time.time() < margin

    def refresh(self) -> str:
        """A new access token from the refresh token; raises ImapConnectError (never with a token in it)."""
        if self._load_refresh_token is not None:
            # A long-lived holder (the watcher) may be older than the refresh token a sync was given since.
            self._refresh_token = self._load_refresh_token() or self._refresh_token
        try:
            token = oauth_session(self.provider).refresh_token(
                token_endpoint(self.provider), refresh_token=self._refresh_token,
                timeout=self.timeout, verify=ca_bundle(),
            )
        except OAuthError as exc:
            raise _refused(self.provider, exc.error) from None
        except requests.exceptions.SSLError as exc:
            raise _untrusted(self.provider, token_endpoint(self.provider)) from exc
        except (requests.RequestException, ValueError) as exc:
            raise ImapConnectError(
                OAUTH_UNREACHABLE,
                f"{self.provider.label} did not answer when the sign-in was renewed ({type(exc).__name__}).",
                "This is usually temporary; the sync retries automatically.",
            ) from None
        if not token.get("access_token"):
            raise _refused(self.provider, "no access token in the answer")
        self._access_token = token["access_token"]
        expires_in = token.get("expires_in")
        self._lifetime = float(expires_in) if expires_in else None
        self._expires_at = time.time() + self._lifetime if self._lifetime else None
        self.fresh = True
        new_refresh_token = token.get("refresh_token")
        if new_refresh_token and new_refresh_token != self._refresh_token:
            self._refresh_token = new_refresh_token
            if self._on_new_refresh_token is not None:
                self._on_new_refresh_token(new_refresh_token)
        log.info("access token renewed with %s", self.provider.label)
        return self._access_token


def _refused(provider: OAuthProvider, error: str) -> ImapConnectError:
    if error == "invalid_grant":
        return ImapConnectError(
            SIGN_IN_AGAIN,
            f"Needs attention: sign in again. {provider.label} no longer accepts this mailbox's sign-in "
            "(it was revoked, the account's password changed, or the app was removed).",
            "Choose Reconnect and sign in with the mailbox's account; the synced mail stays.",
            permanent=True,
        )
    id_name, secret_name = SETTING_NAMES[provider.key]
    return ImapConnectError(
        OAUTH_APP_REJECTED,
        f"{provider.label} refused to renew the sign-in ({error}).",
        f"Check the app registration: {id_name} and {secret_name} must be the client id and secret "
        f"registered with {provider.label} (see docs/oauth.md).",
        permanent=True,
    )


def _untrusted(provider: OAuthProvider, url: str) -> ImapConnectError:
    return ImapConnectError(
        OAUTH_UNREACHABLE,
        f"The certificate of the sign-in service ({url}) is not signed by a certificate authority the CRM trusts.",
        "If it is your own server with a certificate from your own authority, set CRM_OAUTH_CA_FILE to the "
        "path of that authority's certificate (a PEM file).",
        permanent=True,
    )
