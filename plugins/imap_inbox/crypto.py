"""IMAP passwords and OAuth 2.0 refresh tokens encrypted at rest with Fernet (AES-128-CBC + HMAC),
keys rotatable with MultiFernet.

Keys come from the ``IMAP_ENCRYPTION_KEYS`` setting (a list, or a
comma-separated string; the first key encrypts, every key decrypts). Without
it, a key is generated once and kept in the instance folder (mode 0600).

Rotating: put a new key first in ``IMAP_ENCRYPTION_KEYS``, keep the old one
after it, run ``manage.py inboxes rotate-key``, then drop the old key.
"""
from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app

from host_app.api import db, instance_secret

from .models import ImapInbox

KEY_FILE = "imap_encryption_key"


class EncryptionKeyError(Exception):
    """The configured keys are unusable, or none of them can decrypt a stored password."""


def configured_keys() -> list[str]:
    """The keys in use, current first: from the setting, else the instance-folder key."""
    raw = current_app.config.get("IMAP_ENCRYPTION_KEYS")
    if isinstance(raw, str):
        keys = [k.strip() for k in raw.split(",") if k.strip()]
    elif raw:
        keys = [str(k).strip() for k in raw if str(k).strip()]
    else:
        keys = []
    if not keys:
        keys = [instance_secret(current_app.instance_path, KEY_FILE, lambda: Fernet.generate_key().decode())]
    return keys


def _fernet() -> MultiFernet:
    fernets = []
    for position, key in enumerate(configured_keys(), start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError) as exc:
            # Never echo the key itself: it is a secret.
            raise EncryptionKeyError(
                f"IMAP_ENCRYPTION_KEYS entry #{position} is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes; make one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
            ) from exc
    return MultiFernet(fernets)


def encrypt_password(password: str) -> bytes:
    """Encrypt with the current (first) key."""
    return _fernet().encrypt(password.encode("utf-8"))


def decrypt_password(token: bytes) -> str:
    """Decrypt with any configured key; raises EncryptionKeyError when none fits."""
    try:
        return _fernet().decrypt(bytes(token)).decode("utf-8")
    except InvalidToken as exc:
        raise EncryptionKeyError(
            "The stored IMAP password cannot be decrypted with the configured keys "
            "(was IMAP_ENCRYPTION_KEYS changed without keeping the old key?)"
        ) from exc


def encrypt_refresh_token(refresh_token: str) -> bytes:
    """An OAuth 2.0 refresh token, encrypted like a password (current key)."""
    return encrypt_password(refresh_token)


def decrypt_refresh_token(token: bytes, ttl: int | None = None) -> str:
    """Decrypt with any configured key; raises EncryptionKeyError when none fits (or it is older than ``ttl`` s)."""
    try:
        return _fernet().decrypt(bytes(token), ttl=ttl).decode("utf-8")
    except InvalidToken as exc:
        raise EncryptionKeyError(
            "The stored sign-in (OAuth 2.0 refresh token) cannot be decrypted with the configured keys "
            "(was IMAP_ENCRYPTION_KEYS changed without keeping the old key?)"
        ) from exc


def rotate_keys() -> int:
    """Re-encrypt every inbox's password or refresh token with the current key; returns how many inboxes."""
    fernet = _fernet()
    count = 0
    for inbox in db.session.scalars(db.select(ImapInbox).order_by(ImapInbox.id)):
        try:
            if inbox.password_encrypted is not None:
                inbox.password_encrypted = fernet.rotate(bytes(inbox.password_encrypted))
            if inbox.refresh_token_encrypted is not None:
                inbox.refresh_token_encrypted = fernet.rotate(bytes(inbox.refresh_token_encrypted))
        except InvalidToken as exc:
            db.session.rollback()
            raise EncryptionKeyError(
                f"The password or sign-in of inbox #{inbox.id} cannot be decrypted with the configured keys; "
                "nothing was changed. Keep the old key in IMAP_ENCRYPTION_KEYS (after the new one) while rotating."
            ) from exc
        count += 1
    db.session.commit()
    return count
