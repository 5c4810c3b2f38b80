"""Settings > Connected inboxes > Sign in with Google / Microsoft 365 / another OAuth 2.0 server.

The authorization code flow with PKCE and ``state`` through Authlib's Flask client:

1. ``/oauth/<provider>/new``: name, owner (and for another server its IMAP host); then to the service.
2. ``/oauth/callback``: the service sends the admin back; the code is exchanged, the account's e-mail
   read from the id_token (or userinfo). Cancelled, denied or incomplete sign-ins go back to the form in
   plain words, with nothing saved.
3. ``/oauth/confirm``: the signed-in account is shown; connecting logs in once, then saves.

``/oauth/<inbox_id>/reconnect`` runs the same flow for an inbox whose sign-in was revoked; only the same
account is taken, and its mail and checkpoints stay. Between 2 and 3 the tokens wait in the session
cookie encrypted with the inboxes' keys (for ``PENDING_TTL`` seconds): never in a page, Redis or a log.
"""
from __future__ import annotations

import logging

from authlib.common.errors import AuthlibBaseError
from authlib.integrations.flask_client import OAuth
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm

from host_app.api import admin_required, db
from plugins.mail import mailbox_settings

from . import service
from .connection import ImapConnectError
from .crypto import EncryptionKeyError, decrypt_refresh_token, encrypt_refresh_token
from .models import AUTH_OAUTH2, ImapInbox
from .oauth_forms import OAuthConnectForm
from .oauth_providers import LABELS, PROVIDERS, OAuthNotConfigured, OAuthProvider, ca_bundle, get_provider
from .oauth_tokens import client_auth_method
from .views import _owner_choices

log = logging.getLogger(__name__)

bp = Blueprint("imap_inbox_oauth", __name__, url_prefix="/settings/inboxes/oauth", template_folder="templates")

SESSION_KEY = "imap_inbox_oauth"
# Seconds a sign-in may wait for its confirmation before it must be done again.
PENDING_TTL = 900
# The scope without which the token cannot read mail, per service (None: the server decides).
MAIL_SCOPES = {"google": "https://mail.google.com/", "microsoft": "https://outlook.office.com/IMAP.AccessAsUser.All"}


def oauth_client(provider: OAuthProvider):
    """Authlib's Flask client for ``provider``: PKCE (S256), HTTPS trusting ``ca_bundle()``."""
    registry = current_app.extensions.get("imap_inbox_oauth")
    if registry is None:
        registry = current_app.extensions["imap_inbox_oauth"] = OAuth(current_app)
    verify = ca_bundle()
    client_kwargs = {"scope": provider.scope, "code_challenge_method": "S256",
                     "token_endpoint_auth_method": client_auth_method(provider), "verify": verify,
                     # Else REQUESTS_CA_BUNDLE would win over verify (a requests quirk).
                     "trust_env": verify is True}
    return registry.register(
        provider.key, overwrite=True, client_id=provider.client_id, client_secret=provider.client_secret,
        server_metadata_url=provider.server_metadata_url, authorize_url=provider.authorization_endpoint,
        access_token_url=provider.token_endpoint, authorize_params=provider.authorize_params,
        client_kwargs=client_kwargs,
        **{key: value for key, value in (("jwks_uri", provider.jwks_uri),
                                         ("userinfo_endpoint", provider.userinfo_endpoint)) if value},
    )


def _provider_or_none(key: str) -> tuple[OAuthProvider | None, str | None]:
    if key not in PROVIDERS:
        abort(404)
    try:
        return get_provider(key), None
    except OAuthNotConfigured as exc:
        return None, str(exc)


def _start_sign_in(provider: OAuthProvider, pending: dict):
    session[SESSION_KEY] = {"provider": provider.key, **pending}
    redirect_uri = url_for(".oauth_callback", _external=True)
    try:
        return oauth_client(provider).authorize_redirect(redirect_uri)
    except (ImapConnectError, AuthlibBaseError, OSError, ValueError) as exc:
        session.pop(SESSION_KEY, None)
        message = exc.message if isinstance(exc, ImapConnectError) else type(exc).__name__
        log.warning("sign-in with %s could not start: %s", provider.key, message)
        flash(f"Could not reach {provider.label} to sign in ({message}). Nothing was saved.", "error")
        return None


@bp.route("/<any(google, microsoft, oidc):provider_key>/new", methods=["GET", "POST"])
@admin_required
def oauth_new(provider_key: str):
    provider, not_configured = _provider_or_none(provider_key)
    kept = session.get(SESSION_KEY, {}).get("form") or {}
    form_class = OAuthConnectForm.with_settings(mailbox_settings.form_fields(inbox_id=None))
    form = form_class(needs_server=provider_key == "oidc", data={**kept, **kept.get("settings", {})} or None)
    form.owner_id.choices = _owner_choices()
    if provider is not None and form.validate_on_submit():
        started = _start_sign_in(provider, {"purpose": "connect", "form": form.pending()})
        if started is not None:
            return started
    return render_template("imap_inbox/oauth_new.html", form=form, provider_key=provider_key,
                           label=LABELS[provider_key], not_configured=not_configured)


@bp.route("/<int:inbox_id>/reconnect", methods=["POST"])
@admin_required
def oauth_reconnect(inbox_id: int):
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is None or inbox.auth != AUTH_OAUTH2:
        abort(404)
    if not FlaskForm().validate_on_submit():
        abort(400)
    provider, not_configured = _provider_or_none(inbox.oauth_provider)
    if provider is None:
        flash(not_configured, "error")
        return redirect(url_for("imap_inbox.inbox_list"))
    started = _start_sign_in(provider, {"purpose": "reconnect", "inbox_id": inbox.id})
    return started if started is not None else redirect(url_for("imap_inbox.inbox_list"))


def _back(pending: dict, message: str):
    """Back where the sign-in started, with ``message``; nothing saved (the form's values stay)."""
    session[SESSION_KEY] = {k: v for k, v in pending.items() if k not in ("signed_in_as", "tokens")}
    flash(message + " Nothing was saved.", "error")
    if pending.get("purpose") == "reconnect":
        return redirect(url_for("imap_inbox.inbox_list"))
    if pending.get("provider") in PROVIDERS:
        return redirect(url_for(".oauth_new", provider_key=pending["provider"]))
    return redirect(url_for("imap_inbox.inbox_new"))


@bp.route("/callback")
@admin_required
def oauth_callback():
    pending = dict(session.get(SESSION_KEY) or {})
    for key in ("signed_in_as", "tokens"):
        pending.pop(key, None)
    if pending.get("provider") not in PROVIDERS:
        return render_template("imap_inbox/oauth_stale.html",
                               message="This sign-in was not started here, or it took too long. Start again.")
    provider, not_configured = _provider_or_none(pending["provider"])
    if provider is None:
        return _back(pending, not_configured)
    label = provider.label
    error = request.args.get("error")
    if error == "access_denied":
        return _back(pending, f"The sign-in at {label} was cancelled, or access to the mailbox was not allowed.")
    if error:
        return _back(pending, f"{label} did not sign you in ({error}).")
    try:
        token = oauth_client(provider).authorize_access_token()
    except AuthlibBaseError as exc:
        reason = getattr(exc, "description", None) or getattr(exc, "error", None) or type(exc).__name__
        return _back(pending, f"The sign-in at {label} could not be completed ({reason}).")
    except (ImapConnectError, OSError) as exc:
        return _back(pending, f"{label} could not be reached to complete the sign-in ({type(exc).__name__}).")
    mail_scope = MAIL_SCOPES.get(provider.key)
    if mail_scope and "scope" in token and mail_scope not in str(token["scope"]).split():
        return _back(pending, f"Access to the mailbox was not allowed at {label}: tick the mail permission.")
    if not token.get("refresh_token"):
        return _back(pending, f"{label} gave no lasting sign-in (refresh token), so the CRM could not sync later.")
    email = _signed_in_email(provider, token)
    if not email:
        return _back(pending, f"{label} did not say which e-mail address signed in.")
    pending["signed_in_as"] = email
    pending["tokens"] = {
        "refresh": encrypt_refresh_token(token["refresh_token"]).decode(),
        "access": encrypt_refresh_token(token["access_token"]).decode(),
        "expires_at": token.get("expires_at"),
    }
    session[SESSION_KEY] = pending
    if pending.get("purpose") == "reconnect":
        return _reconnect(pending)
    return redirect(url_for(".oauth_confirm"))


def _signed_in_email(provider: OAuthProvider, token: dict) -> str:
    claims = token.get("userinfo") or {}
    email = claims.get("email") or claims.get("preferred_username") or ""
    if not email:
        try:
            claims = oauth_client(provider).userinfo(token=token)
        except (AuthlibBaseError, OSError, ValueError):
            claims = {}
        email = claims.get("email") or claims.get("preferred_username") or ""
    return email.strip() if "@" in email else ""


def _pending_tokens(pending: dict) -> tuple[str, str, float | None] | None:
    tokens = pending.get("tokens") or {}
    try:
        return (decrypt_refresh_token(tokens["refresh"].encode(), ttl=PENDING_TTL),
                decrypt_refresh_token(tokens["access"].encode(), ttl=PENDING_TTL),
                tokens.get("expires_at"))
    except (KeyError, AttributeError, EncryptionKeyError):
        return None


def _reconnect(pending: dict):
    session.pop(SESSION_KEY, None)
    inbox = db.session.get(ImapInbox, pending.get("inbox_id") or 0)
    tokens = _pending_tokens(pending)
    if inbox is None or tokens is None:
        return _back(pending, "The sign-in took too long or its inbox is gone. Start again.")
    refresh_token, access_token, expires_at = tokens
    try:
        service.reconnect_oauth_inbox(inbox, signed_in_as=pending["signed_in_as"], refresh_token=refresh_token,
                                      access_token=access_token, expires_at=expires_at)
    except service.InvalidInboxSettings as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for("imap_inbox.inbox_list"))
    except ImapConnectError as exc:
        db.session.rollback()
        return _back(pending, f"Could not connect: {exc.message} {exc.hint}".strip())
    flash(f"Signed in again as {inbox.username}. {inbox.name} syncs again; its e-mails stay.", "success")
    return redirect(url_for("imap_inbox.inbox_list"))


@bp.route("/confirm", methods=["GET", "POST"])
@admin_required
def oauth_confirm():
    pending = dict(session.get(SESSION_KEY) or {})
    tokens = _pending_tokens(pending)
    if pending.get("purpose") != "connect" or tokens is None:
        session.pop(SESSION_KEY, None)
        return render_template("imap_inbox/oauth_stale.html",
                               message="This sign-in took too long or was already used. Start again.")
    provider, not_configured = _provider_or_none(pending["provider"])
    if provider is None:
        return _back(pending, not_configured)
    form = FlaskForm()
    connect_error = None
    if form.validate_on_submit():
        refresh_token, access_token, expires_at = tokens
        try:
            inbox = service.create_oauth_inbox(
                provider=provider.key, username=pending["signed_in_as"], refresh_token=refresh_token,
                access_token=access_token, expires_at=expires_at, check=True, **pending["form"])
        except service.InvalidInboxSettings as exc:
            db.session.rollback()
            connect_error = ImapConnectError("invalid", str(exc))
        except ImapConnectError as exc:
            db.session.rollback()
            connect_error = exc
        else:
            session.pop(SESSION_KEY, None)
            flash(f"Connected to {inbox.username}. The first sync has started; progress shows below.", "success")
            return redirect(url_for("imap_inbox.inbox_list"))
    return render_template("imap_inbox/oauth_confirm.html", form=form, pending=pending, label=provider.label,
                           connect_error=connect_error)
