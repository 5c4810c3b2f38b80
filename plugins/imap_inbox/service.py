"""Connecting, changing and removing inboxes: the one place the UI, the CLI and tests go through."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from flask import current_app

from host_app.api import Agent, db, normalize_email
from plugins.mail import mailbox_settings, notify, store
from plugins.mail import models as mail_models
from plugins.mail.models import Folder, Inbox, SyncRun

from .account import settings_for
from .ca_certificates import CaCertificateRefused, checked_ca_file, configured_ca_dir, validate_pem
from .connection import DEFAULT_PORTS, SECURITY_MODES, ConnectionSettings, check_login
from .crypto import encrypt_password, encrypt_refresh_token
from .jobs import cancel_queued_sync, enqueue_sync  # noqa: F401  (enqueue_sync is part of this API)
from .models import AUTH_OAUTH2, AUTH_PASSWORD, ImapInbox
from .oauth_providers import LABELS, get_provider
from .oauth_tokens import AccessTokens
from .response_limits import ResponseLimits
from .schedule import utcnow

log = logging.getLogger(__name__)

# Changing one of these means "log in somewhere else": the login is tried again, and the stored password
# is not sent there: it goes only to the server it was entered for, so the change needs it typed again.
CONNECTION_FIELDS = ("host", "port", "security", "username", "ca_file", "ca_pem")
PASSWORD_AGAIN = ("Enter the password again: you changed the server, port, security, username or CA file, and the "
                  "stored password is only ever sent to the server it was entered for.")
# Changing one of these may point at another mailbox: stored UIDs are re-matched by Message-ID.
MAILBOX_FIELDS = ("host", "port", "username")
EDITABLE_FIELDS = (*CONNECTION_FIELDS, "name", "owner_id", "extra_folders", "email", "enabled")
# Seconds the interactive login check waits for the server (IMAP_CHECK_TIMEOUT); syncs use IMAP_TIMEOUT.
DEFAULT_CHECK_TIMEOUT = 10


class InvalidInboxSettings(ValueError):
    """A setting is missing or wrong; ``field`` names it (for forms), the message says why in plain words."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def _clean_folders(extra_folders: Iterable[str] | str | None) -> list[str]:
    if isinstance(extra_folders, str):
        extra_folders = extra_folders.replace("\n", ",").split(",")
    seen: dict[str, str] = {}
    for name in extra_folders or ():
        name = (name or "").strip()
        if name and name.upper() != "INBOX" and name.lower() not in seen:
            if len(name) > 1000:
                raise InvalidInboxSettings("extra_folders", "A folder name is too long (at most 1000 characters).")
            seen[name.lower()] = name
    return list(seen.values())


def _validate(values: dict[str, Any], inbox_id: int | None = None, stored_ca_file: str | None = None
              ) -> dict[str, Any]:
    """Check and normalize inbox fields; raises InvalidInboxSettings.

    A CA file must be a PEM file inside IMAP_CA_DIR (``stored_ca_file``, the inbox's own, is left to the
    connection: one saved before there was a CA directory makes the inbox need attention, not the form fail).
    """
    out = dict(values)
    if "name" in out:
        out["name"] = (out["name"] or "").strip()
        if not out["name"]:
            raise InvalidInboxSettings("name", "Give the inbox a name.")
        if len(out["name"]) > 200:
            raise InvalidInboxSettings("name", "The name is too long (at most 200 characters).")
    if "host" in out:
        out["host"] = (out["host"] or "").strip().lower()
        if not out["host"] or any(c.isspace() for c in out["host"]) or "/" in out["host"]:
            raise InvalidInboxSettings("host", "Enter the IMAP server name, e.g. imap.gmail.com.")
    if "security" in out:
        if out["security"] not in SECURITY_MODES:
            raise InvalidInboxSettings(
                "security", "Security must be SSL/TLS or STARTTLS; unencrypted IMAP is not allowed.")
    if "port" in out:
        port = out["port"]
        if port in (None, ""):
            port = DEFAULT_PORTS.get(out.get("security", "ssl"), 993)
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise InvalidInboxSettings(
                "port", "The port must be a number, usually 993 (SSL/TLS) or 143 (STARTTLS).") from None
        if not 0 < port < 65536:
            raise InvalidInboxSettings("port", "The port must be between 1 and 65535, usually 993 or 143.")
        out["port"] = port
    if "username" in out:
        out["username"] = (out["username"] or "").strip()
        if not out["username"]:
            raise InvalidInboxSettings("username", "Enter the user name, usually the full e-mail address.")
        if len(out["username"]) > 320:
            raise InvalidInboxSettings("username", "The user name is too long.")
    if "ca_file" in out:
        out["ca_file"] = (out["ca_file"] or "").strip() or None
        if out["ca_file"] and out["ca_file"] != stored_ca_file:
            try:
                checked_ca_file(out["ca_file"], configured_ca_dir(current_app.config))
            except CaCertificateRefused as exc:
                raise InvalidInboxSettings("ca_file", str(exc)) from None
    if out.get("ca_pem"):
        try:
            out["ca_pem"] = validate_pem(out["ca_pem"])
        except CaCertificateRefused as exc:
            raise InvalidInboxSettings("ca_pem", str(exc)) from None
    elif "ca_pem" in out:
        out["ca_pem"] = None
    if "owner_id" in out and out["owner_id"] not in (None, "", 0):
        if db.session.get(Agent, int(out["owner_id"])) is None:
            raise InvalidInboxSettings("owner_id", "The chosen owner does not exist.")
        out["owner_id"] = int(out["owner_id"])
    elif "owner_id" in out:
        out["owner_id"] = None
    if "extra_folders" in out:
        out["extra_folders"] = _clean_folders(out["extra_folders"])
    if "email" in out and out["email"] is not None:
        out["email"] = normalize_email(out["email"])
        if out["email"] and ("@" not in out["email"] or len(out["email"]) > 320):
            raise InvalidInboxSettings("email", "Enter the mailbox's own e-mail address, e.g. sales@example.com.")
    if "enabled" in out:
        out["enabled"] = bool(out["enabled"])
    if "host" in out and "username" in out:
        duplicate = db.session.scalar(
            db.select(ImapInbox)
            .where(ImapInbox.host == out["host"], db.func.lower(ImapInbox.username) == out["username"].lower())
        )
        if duplicate is not None and duplicate.id != inbox_id:
            raise InvalidInboxSettings("username", f"This mailbox is already connected as “{duplicate.name}”.")
    return out


def create_inbox(
    *,
    name: str,
    host: str,
    port: int | None,
    security: str,
    username: str,
    password: str,
    owner_id: int | None,
    ca_file: str | None = None,
    extra_folders: Iterable[str] = (),
    email: str | None = None,
    settings: Mapping[str, Any] | None = None,
    check: bool = True,
    ca_pem: str | bytes | None = None,
) -> ImapInbox:
    """Try the login (unless ``check`` is False), save the inbox and enqueue its first sync at once.

    ``settings`` holds the values of the fields and options other plugins add
    (the mail core's mailbox_settings), saved by them with the inbox.
    Raises InvalidInboxSettings for bad input and ImapConnectError when the login fails.
    """
    values = _validate(dict(name=name, host=host, port=port, security=security, username=username,
                            owner_id=owner_id, ca_file=ca_file, ca_pem=ca_pem, extra_folders=extra_folders,
                            email=email))
    if not password:
        raise InvalidInboxSettings("password", "Enter the password (or app password) of the mailbox.")
    if not values.get("email"):
        values["email"] = normalize_email(values["username"]) if "@" in values["username"] else ""
    if check:
        check_login(_settings_from(values, password))
    inbox = ImapInbox(**values, password_encrypted=encrypt_password(password), status=mail_models.QUEUED,
                  next_sync_at=utcnow(), enabled=True)
    db.session.add(inbox)
    db.session.flush()
    # With the inbox, before its first sync is queued: what follows a sync may depend on them.
    mailbox_settings.save(inbox.id, settings or {})
    db.session.commit()
    log.info("inbox %s connected (%s@%s)", inbox.id, inbox.username, inbox.host)
    enqueue_sync(inbox.id)
    return inbox


def _settings_from(values: dict[str, Any], password: str, access_tokens: AccessTokens | None = None
                   ) -> ConnectionSettings:
    """Settings for the login check made while someone waits (the form, the CLI), not for a sync."""
    # An admin waits on the page for this answer, so an unreachable server must not hold it for a sync's timeout.
    return ConnectionSettings(host=values["host"], port=values["port"], security=values["security"],
                              username=values["username"], password=password, ca_file=values.get("ca_file"),
                              ca_dir=configured_ca_dir(current_app.config), ca_pem=values.get("ca_pem"),
                              timeout=float(current_app.config.get("IMAP_CHECK_TIMEOUT", DEFAULT_CHECK_TIMEOUT)),
                              limits=ResponseLimits.from_config(current_app.config),
                              access_tokens=access_tokens)


def create_oauth_inbox(
    *,
    name: str,
    provider: str,
    username: str,
    refresh_token: str,
    owner_id: int | None,
    host: str | None = None,
    port: int | None = None,
    security: str | None = None,
    ca_file: str | None = None,
    extra_folders: Iterable[str] = (),
    email: str | None = None,
    settings: Mapping[str, Any] | None = None,
    access_token: str | None = None,
    expires_at: float | None = None,
    check: bool = True,
    ca_pem: str | bytes | None = None,
) -> ImapInbox:
    """Like create_inbox, for a mailbox signed in with OAuth 2.0 at ``provider`` (google, microsoft, oidc).

    Host, port and security default to the provider's IMAP server (none for ``oidc``). The login is tried
    with ``access_token`` (or one got from ``refresh_token``); ``settings`` as in create_inbox. Raises
    OAuthNotConfigured when the provider has no app registered here, InvalidInboxSettings for bad input
    and ImapConnectError when the login fails.
    """
    service = get_provider(provider)
    preset = service.imap_server or (None, None, "ssl")
    values = _validate(dict(name=name, host=host or preset[0] or "", port=port or preset[1],
                            security=security or preset[2], username=username, owner_id=owner_id,
                            ca_file=ca_file, ca_pem=ca_pem, extra_folders=extra_folders, email=email))
    refresh_token = (refresh_token or "").strip()
    if not refresh_token:
        raise InvalidInboxSettings("refresh_token", f"Sign in with {service.label} first: there is no refresh token.")
    if not values.get("email"):
        values["email"] = normalize_email(values["username"]) if "@" in values["username"] else ""
    kept = [refresh_token]
    if check:
        tokens = AccessTokens(service, refresh_token, access_token=access_token, expires_at=expires_at,
                              on_new_refresh_token=kept.append)
        check_login(_settings_from(values, "", access_tokens=tokens))
    inbox = ImapInbox(**values, auth=AUTH_OAUTH2, oauth_provider=provider, password_encrypted=None,
                      refresh_token_encrypted=encrypt_refresh_token(kept[-1]), status=mail_models.QUEUED,
                      next_sync_at=utcnow(), enabled=True)
    db.session.add(inbox)
    db.session.flush()
    mailbox_settings.save(inbox.id, settings or {})  # as in create_inbox: before the first sync is queued
    db.session.commit()
    log.info("inbox %s connected with %s sign-in (%s@%s)", inbox.id, provider, inbox.username, inbox.host)
    enqueue_sync(inbox.id)
    return inbox


def reconnect_oauth_inbox(inbox: ImapInbox, *, signed_in_as: str, refresh_token: str,
                          access_token: str | None = None, expires_at: float | None = None,
                          check: bool = True) -> ImapInbox:
    """Store a new sign-in for an OAuth 2.0 inbox (after "sign in again"), keeping its mail and checkpoints.

    ``signed_in_as`` must be the inbox's own account: another one would be another mailbox. Raises
    InvalidInboxSettings (wrong account) or ImapConnectError (the login fails); nothing is saved then.
    """
    if inbox.auth != AUTH_OAUTH2:
        raise InvalidInboxSettings("auth", "This inbox logs in with a password, not with a sign-in service.")
    if normalize_email(signed_in_as or "") != normalize_email(inbox.username):
        raise InvalidInboxSettings(
            "username",
            f"You signed in as {signed_in_as or 'an account without an e-mail address'}, but this inbox is the "
            f"mailbox of {inbox.username}. Sign in again with {inbox.username}; nothing was changed.",
        )
    service = get_provider(inbox.oauth_provider)
    kept = [refresh_token]
    if check:
        tokens = AccessTokens(service, refresh_token, access_token=access_token, expires_at=expires_at,
                              on_new_refresh_token=kept.append)
        values = {f: getattr(inbox, f) for f in CONNECTION_FIELDS}
        check_login(_settings_from(values, "", access_tokens=tokens))
    inbox.refresh_token_encrypted = encrypt_refresh_token(kept[-1])
    inbox.error = inbox.error_hint = None
    inbox.failures = 0
    if inbox.enabled:
        inbox.status = mail_models.QUEUED
        inbox.next_sync_at = utcnow()
    db.session.commit()
    log.info("inbox %s signed in again with %s", inbox.id, inbox.oauth_provider)
    if inbox.enabled:
        enqueue_sync(inbox.id)
    notify.mailbox_settings_changed(inbox_id=inbox.id, changed={"refresh_token"})
    return inbox


def _email_following_username(inbox: ImapInbox, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the inbox's address following a new username, as create_inbox derives it.

    Only an address that came from the old username (or none) follows: one the admin chose stays,
    and so does one given in ``fields``.
    """
    new_username = (fields.get("username") or "").strip()
    # A login without "@" says nothing about the address: keep the one we have rather than lose it.
    if "@" not in new_username or normalize_email(new_username) == normalize_email(inbox.username or ""):
        return fields
    current = inbox.email or ""
    given = fields.get("email")
    if given not in (None, "") and normalize_email(given) != current:
        return fields  # set on purpose in this very change
    if current and current != normalize_email(inbox.username or ""):
        return fields  # an address of its own, not the old username
    return {**fields, "email": new_username}


def update_inbox(inbox: ImapInbox, *, password: str | None = None, check: bool = True,
                 settings: Mapping[str, Any] | None = None, **fields: Any) -> ImapInbox:
    """Change an inbox. A blank password keeps the stored one, unless a connection field changes.

    Changing host, port, security, username or CA file without a new password
    raises InvalidInboxSettings on ``password``: the stored one is never sent
    to another server than the one it was entered for. ``settings`` are other
    plugins' values (as in create_inbox).

    When connection fields or the password change, the login is tried again
    (unless ``check`` is False); an inbox that needed attention is queued and
    synced again. A new username that is an address becomes the inbox's
    address too when that address came from the old username. Once saved, the
    mail core's ``mailbox_settings_changed`` hook names what changed.
    """
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"update_inbox() got unknown fields: {', '.join(sorted(unknown))}")
    fields = _email_following_username(inbox, fields)
    merged = {f: getattr(inbox, f) for f in ("host", "port", "security", "username")}
    merged.update(fields)
    values = _validate(merged, inbox_id=inbox.id, stored_ca_file=inbox.ca_file)
    values = {k: v for k, v in values.items() if k in fields or k in merged}
    changed = {k for k, v in values.items() if getattr(inbox, k) != v}
    password = password or None
    if inbox.auth == AUTH_OAUTH2:
        if password:
            raise InvalidInboxSettings("password", f"This inbox signs in with {LABELS[inbox.oauth_provider]}; "
                                                   "it has no password to change.")
        if "username" in changed:
            raise InvalidInboxSettings("username", "The user name of a signed-in inbox is the account that signed "
                                                   "in: use Reconnect to sign in with another account.")
        if changed & (set(CONNECTION_FIELDS) - {"username"}):
            # The sign-in's tokens go only to the server they were got for (as a password, issue 14).
            raise InvalidInboxSettings("host", "A signed-in inbox keeps the mail server it was connected to: to "
                                               "read the mailbox on another server, connect it again there.")
    elif changed & set(CONNECTION_FIELDS) and not password:
        # Otherwise whoever may edit an inbox could point it at their own server and receive the password.
        raise InvalidInboxSettings("password", PASSWORD_AGAIN)
    credentials_changed = bool(password) or bool(changed & set(CONNECTION_FIELDS))
    if credentials_changed and check:
        merged_values = {f: values.get(f, getattr(inbox, f)) for f in CONNECTION_FIELDS}
        stored = settings_for(inbox)  # the stored password, or the sign-in's access tokens
        check_login(_settings_from(merged_values, password or stored.password, access_tokens=stored.access_tokens))
    enabled = values.pop("enabled", None)
    for key, value in values.items():
        setattr(inbox, key, value)
    if password:
        inbox.password_encrypted = encrypt_password(password)
        changed.add("password")
    if settings:
        changed |= mailbox_settings.save(inbox.id, settings)
    if changed & set(MAILBOX_FIELDS):
        # Possibly another mailbox: its UIDs mean nothing here, so re-match stored mail by Message-ID.
        for folder in inbox.folders:
            folder.uidvalidity = None
    requeue = credentials_changed or "extra_folders" in changed
    if credentials_changed and inbox.status in (mail_models.NEEDS_ATTENTION, mail_models.ERROR):
        inbox.status = mail_models.QUEUED
        inbox.error = inbox.error_hint = None
        inbox.failures = 0
        inbox.next_sync_at = utcnow()
    db.session.commit()
    if enabled is not None and enabled != inbox.enabled:
        _apply_enabled(inbox, enabled)
    elif requeue and inbox.enabled:
        enqueue_sync(inbox.id)
    if changed:
        notify.mailbox_settings_changed(inbox_id=inbox.id, changed=changed)
    return inbox


def set_enabled(inbox: ImapInbox, enabled: bool) -> ImapInbox:
    """Pause or resume syncing (stored mail stays)."""
    was_enabled = inbox.enabled
    _apply_enabled(inbox, enabled)
    if was_enabled != inbox.enabled:
        notify.mailbox_settings_changed(inbox_id=inbox.id, changed={"enabled"})
    return inbox


def _apply_enabled(inbox: ImapInbox, enabled: bool) -> None:
    inbox.enabled = bool(enabled)
    if enabled:
        inbox.status = mail_models.QUEUED
        inbox.error = inbox.error_hint = None
        inbox.failures = 0
        inbox.next_sync_at = utcnow()
    else:
        inbox.status = mail_models.DISABLED
        inbox.next_sync_at = None
    db.session.commit()
    if enabled:
        enqueue_sync(inbox.id)
    else:
        cancel_queued_sync(inbox.id)


def delete_inbox(inbox_id: int) -> bool:
    """Remove the inbox and all its stored mail; returns False when there was no such inbox."""
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is None:
        return False
    cancel_queued_sync(inbox_id)
    store.delete_inbox_mail(inbox_id)
    # The mail core's rows: the imap_folder and imap_inbox rows extending them go by ON DELETE CASCADE.
    db.session.execute(db.delete(Folder).where(Folder.inbox_id == inbox_id))
    db.session.execute(db.delete(SyncRun).where(SyncRun.inbox_id == inbox_id))
    db.session.execute(db.delete(Inbox).where(Inbox.id == inbox_id))
    db.session.commit()
    # The rows are gone: forget their objects rather than let anyone refresh them.
    for obj in list(db.session.identity_map.values()):
        if (isinstance(obj, ImapInbox) and obj.id == inbox_id) or getattr(obj, "inbox_id", None) == inbox_id:
            db.session.expunge(obj)
    log.info("inbox %s deleted with its stored mail", inbox_id)
    return True


def request_resync(inbox: ImapInbox, enqueue: bool = True) -> str | None:
    """Have the inbox's next sync forget its stored mail first and read the whole mailbox again.

    For mail stored by a version that kept less of each message (the Bcc of
    our own e-mails, for one). The request is kept on the inbox until a sync
    has carried it out, so a sync running now or a lost job cannot drop it.
    With ``enqueue``, that sync is queued at once: returns its job id, or
    None when a sync is already queued or running (or the inbox is disabled).
    """
    inbox.resync_requested = True
    db.session.commit()
    return enqueue_sync(inbox.id) if enqueue and inbox.enabled else None


def inbox_status(inbox: ImapInbox) -> dict[str, Any]:
    """What the UI shows about an inbox's sync: no password, no secrets."""
    return {
        "id": inbox.id,
        "auth": inbox.auth or AUTH_PASSWORD,
        "provider": inbox.oauth_provider,
        "status": inbox.status,
        "enabled": inbox.enabled,
        "progress_done": inbox.progress_done or 0,
        "progress_total": inbox.progress_total or 0,
        "error": inbox.error,
        "error_hint": inbox.error_hint,
        "last_synced_at": _iso(inbox.last_synced_at),
        "next_sync_at": _iso(inbox.next_sync_at),
        "message_count": inbox.message_count or 0,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
