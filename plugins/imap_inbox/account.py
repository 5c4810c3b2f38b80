"""A stored inbox as the connection needs it: its server, and its password decrypted for the moment of use."""
from __future__ import annotations

from flask import current_app

from .connection import ConnectionSettings
from .crypto import decrypt_password
from .models import ImapInbox
from .response_limits import ResponseLimits


def settings_for(inbox: ImapInbox, password: str | None = None, timeout: float | None = None) -> ConnectionSettings:
    """Connection settings of a stored inbox (the password decrypted, or ``password`` when given)."""
    return ConnectionSettings(
        host=inbox.host,
        port=inbox.port,
        security=inbox.security,
        username=inbox.username,
        password=password if password else decrypt_password(inbox.password_encrypted),
        ca_file=inbox.ca_file,
        timeout=timeout or current_app.config.get("IMAP_TIMEOUT", 30),
        limits=ResponseLimits.from_config(current_app.config),
    )
