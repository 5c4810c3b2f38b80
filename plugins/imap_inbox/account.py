"""A stored inbox as the connection needs it: its server, and its password (or OAuth 2.0 sign-in)
decrypted for the moment of use."""
from __future__ import annotations

from flask import current_app

from host_app.api import db

from .ca_certificates import configured_ca_dir
from .connection import OAUTH_APP_REJECTED, ConnectionSettings, ImapConnectError
from .crypto import decrypt_password, decrypt_refresh_token, encrypt_refresh_token
from .models import AUTH_OAUTH2, ImapInbox
from .oauth_providers import OAuthNotConfigured, get_provider
from .oauth_tokens import AccessTokens
from .response_limits import ResponseLimits


def settings_for(inbox: ImapInbox, password: str | None = None, timeout: float | None = None) -> ConnectionSettings:
    """Connection settings of a stored inbox (the password decrypted, or ``password`` when given).

    An OAuth 2.0 inbox gets access tokens from its refresh token instead (raises OAuthNotConfigured when
    its sign-in service is no longer set up: an ImapConnectError, since the inbox needs attention).
    """
    timeout = timeout or current_app.config.get("IMAP_TIMEOUT", 30)
    access_tokens = None
    if inbox.auth == AUTH_OAUTH2:
        try:
            provider = get_provider(inbox.oauth_provider)
        except OAuthNotConfigured as exc:
            raise ImapConnectError(OAUTH_APP_REJECTED, str(exc), "Set it up, then the sync retries.",
                                   permanent=True) from None
        access_tokens = AccessTokens(
            provider, decrypt_refresh_token(inbox.refresh_token_encrypted),
            on_new_refresh_token=_keeper_of_refresh_tokens(inbox.id),
            load_refresh_token=_stored_refresh_token(inbox.id), timeout=timeout,
        )
        password = None
    elif not password:
        password = decrypt_password(inbox.password_encrypted)
    return ConnectionSettings(
        host=inbox.host,
        port=inbox.port,
        security=inbox.security,
        username=inbox.username,
        password=password or "",
        ca_file=inbox.ca_file,
        ca_dir=configured_ca_dir(current_app.config),
        ca_pem=inbox.ca_pem,
        timeout=timeout,
        limits=ResponseLimits.from_config(current_app.config),
        access_tokens=access_tokens,
    )


def _keeper_of_refresh_tokens(inbox_id: int):
    """Stores a refresh token the service rotated, in a transaction of its own: a sync that fails later
    must not roll it back, since the old one may no longer work."""
    def keep(refresh_token: str) -> None:
        with db.engine.begin() as connection:
            connection.execute(db.update(ImapInbox.__table__).where(ImapInbox.__table__.c.id == inbox_id)
                               .values(refresh_token_encrypted=encrypt_refresh_token(refresh_token)))
    return keep


def _stored_refresh_token(inbox_id: int):
    """Reads the refresh token stored now (in the caller's app context), for a token source that outlives one
    sync: a service that rotates refresh tokens may no longer take the one it had."""
    def load() -> str | None:
        with db.engine.connect() as connection:
            stored = connection.execute(db.select(ImapInbox.__table__.c.refresh_token_encrypted)
                                        .where(ImapInbox.__table__.c.id == inbox_id)).scalar()
        return decrypt_refresh_token(stored) if stored else None
    return load
