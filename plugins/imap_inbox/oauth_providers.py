"""The OAuth 2.0 sign-in services a mailbox can be connected with, and their app registration.

Google and Microsoft 365 are presets (their endpoints, scopes and IMAP server are fixed); "oidc" is any
other OAuth 2.0 / OpenID Connect server, found from its issuer URL by discovery. Each needs the
client id and secret the integrator registered, from configuration (``CRM_OAUTH_*`` variables, which
the host reads into ``OAUTH_*`` settings): see docs/oauth.md.
"""
from __future__ import annotations

import dataclasses

from flask import current_app

GOOGLE = "google"
MICROSOFT = "microsoft"
OIDC = "oidc"
PROVIDERS = (GOOGLE, MICROSOFT, OIDC)

LABELS = {
    GOOGLE: "Google",
    MICROSOFT: "Microsoft 365",
    OIDC: "Other OAuth 2.0 / OpenID Connect server",
}

# The settings that register our app with each service, as they are named in the environment.
SETTING_NAMES = {
    GOOGLE: ("CRM_OAUTH_GOOGLE_CLIENT_ID", "CRM_OAUTH_GOOGLE_CLIENT_SECRET"),
    MICROSOFT: ("CRM_OAUTH_MICROSOFT_CLIENT_ID", "CRM_OAUTH_MICROSOFT_CLIENT_SECRET"),
    OIDC: ("CRM_OAUTH_OIDC_CLIENT_ID", "CRM_OAUTH_OIDC_CLIENT_SECRET"),
}

# The IMAP server of the presets: host, port, security.
IMAP_SERVERS = {
    GOOGLE: ("imap.gmail.com", 993, "ssl"),
    MICROSOFT: ("outlook.office365.com", 993, "ssl"),
}


class OAuthNotConfigured(Exception):
    """The service has no registered app (client id) in this installation; the message says which setting."""


@dataclasses.dataclass(frozen=True)
class OAuthProvider:
    """One sign-in service as this installation is registered with it. ``repr`` never shows the secret."""

    key: str
    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    scope: str
    # Either fixed endpoints (the presets: starting a sign-in calls nobody) or the discovery document of an
    # issuer (oidc).
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    jwks_uri: str | None = None
    userinfo_endpoint: str | None = None
    server_metadata_url: str | None = None
    # Extra parameters of the authorization request: what makes each service hand out a refresh token.
    authorize_params: dict = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS[self.key]

    @property
    def imap_server(self) -> tuple[str, int, str] | None:
        return IMAP_SERVERS.get(self.key)


def _setting(name: str) -> str:
    return str(current_app.config.get(name) or "").strip()


def get_provider(key: str) -> OAuthProvider:
    """The service ``key`` as configured; raises OAuthNotConfigured (plain words) without a client id."""
    if key not in PROVIDERS:
        raise ValueError(f"Unknown sign-in service {key!r}: choose one of {', '.join(PROVIDERS)}.")
    prefix = f"OAUTH_{key.upper()}_"
    client_id = _setting(prefix + "CLIENT_ID")
    id_name, secret_name = SETTING_NAMES[key]
    if not client_id:
        raise OAuthNotConfigured(
            f"Sign-in with {LABELS[key]} is not set up in this installation: the administrator must register "
            f"the CRM as an app there and set {id_name} and {secret_name} (see docs/oauth.md)."
        )
    secret = _setting(prefix + "CLIENT_SECRET")
    if key == GOOGLE:
        return OAuthProvider(
            key, client_id, secret,
            scope="https://mail.google.com/ openid email",
            authorization_endpoint="https://accounts.google.com/o/oauth2/v2/auth",
            token_endpoint="https://oauth2.googleapis.com/token",
            jwks_uri="https://www.googleapis.com/oauth2/v3/certs",
            userinfo_endpoint="https://openidconnect.googleapis.com/v1/userinfo",
            # Google hands out a refresh token only for offline access, and again only after consent.
            authorize_params={"access_type": "offline", "prompt": "consent"},
        )
    if key == MICROSOFT:
        tenant = _setting("OAUTH_MICROSOFT_TENANT") or "common"
        base = f"https://login.microsoftonline.com/{tenant}"
        return OAuthProvider(
            key, client_id, secret,
            scope="https://outlook.office.com/IMAP.AccessAsUser.All offline_access openid email",
            authorization_endpoint=f"{base}/oauth2/v2.0/authorize",
            token_endpoint=f"{base}/oauth2/v2.0/token",
            jwks_uri=f"{base}/discovery/v2.0/keys",
            userinfo_endpoint="https://graph.microsoft.com/oidc/userinfo",
            authorize_params={"prompt": "select_account"},
        )
    issuer = _setting("OAUTH_OIDC_ISSUER").rstrip("/")
    if not issuer:
        raise OAuthNotConfigured(
            f"Sign-in with an {LABELS[OIDC]} needs its issuer URL: the administrator must set "
            "CRM_OAUTH_OIDC_ISSUER (see docs/oauth.md)."
        )
    return OAuthProvider(
        key, client_id, secret,
        scope=_setting("OAUTH_OIDC_SCOPE") or "openid email offline_access",
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        authorize_params={"prompt": "consent"},
    )


def ca_bundle() -> str | bool:
    """What HTTPS to the sign-in services trusts: ``CRM_OAUTH_CA_FILE`` when set, else the system store."""
    return _setting("OAUTH_CA_FILE") or True
