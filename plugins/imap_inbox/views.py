"""Settings > Connected inboxes: list, connect via IMAP, edit, sync now, disable/enable, delete.

Every page is admin-only and every POST is a FlaskForm (CSRF). Connection
problems come back on the form in plain words, never as a 500. Passwords are
write-only: never rendered, never in the status JSON.
"""
from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, url_for
from flask_wtf import FlaskForm
from sqlalchemy.orm import selectinload
from wtforms.fields.choices import SelectChoice

from host_app.api import Agent, admin_required, db
from plugins.mail import mailbox_settings
from plugins.mail import models as mail_models

from . import connection, service
from .connection import ImapConnectError
from .forms import DeleteInboxForm, InboxForm, ResyncInboxForm
from .models import ImapInbox
from .presets import get_preset, preset_for_host, presets_data
from .watcher.watch_words import describe as describe_watch

bp = Blueprint(
    "imap_inbox",
    __name__,
    url_prefix="/settings/inboxes",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/imap_inbox",
)

# What an admin reads in the Status column, per ImapInbox.status.
STATUS_LABELS = {
    mail_models.NEW: "Waiting for the first sync",
    mail_models.QUEUED: "Queued, starting soon",
    mail_models.SYNCING: "Syncing",
    mail_models.OK: "OK",
    mail_models.NEEDS_ATTENTION: "Needs attention",
    mail_models.ERROR: "Temporary error",
    mail_models.DISABLED: "Disabled",
}
ACTIVE_STATUSES = (mail_models.QUEUED, mail_models.SYNCING)

# The status JSON carries exactly these keys: progress and health, never settings or secrets.
STATUS_JSON_KEYS = (
    "status",
    "progress_done",
    "progress_total",
    "error",
    "error_hint",
    "last_synced_at",
    "next_sync_at",
    "message_count",
)

# Which form fields a connection failure is about, by ImapConnectError.kind (see connection.py).
FIELDS_BY_ERROR_KIND = {
    connection.AUTH_FAILED: ("password",),
    connection.APP_PASSWORD_REQUIRED: ("password",),
    connection.HOST_NOT_FOUND: ("host",),
    connection.PRIVATE_HOST_BLOCKED: ("host",),
    connection.TIMEOUT: ("host", "port"),
    # One answer for "nothing there", "no TLS" and "not IMAP" (see connection.nothing_there).
    connection.CONNECTION_REFUSED: ("port", "security"),
    connection.NO_TLS: ("port", "security"),
    connection.NOT_IMAP: ("port", "security"),
    connection.STARTTLS_UNAVAILABLE: ("security",),
    connection.CERTIFICATE_UNTRUSTED: ("host", "ca_file"),
    connection.CERTIFICATE_NAME_MISMATCH: ("host",),
    connection.CA_FILE_INVALID: ("ca_file",),
    connection.TLS_ERROR: ("port", "security"),
}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _datetime(value) -> datetime | None:
    """A stored datetime, or the ISO text of one from ``service.inbox_status``; None when empty."""
    if value is None or value == "":
        return None
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def relative_time(value, now: datetime | None = None) -> str:
    """'5 min ago', 'in 2 h', 'just now' (inbox_list.js says the same in the browser)."""
    value = _datetime(value)
    if value is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - value).total_seconds())
    past = seconds >= 0
    seconds = abs(seconds)
    if seconds < 45:
        return "just now" if past else "in a moment"
    if seconds < 3600:
        amount = f"{max(1, round(seconds / 60))} min"
    elif seconds < 86400:
        amount = f"{round(seconds / 3600)} h"
    else:
        days = round(seconds / 86400)
        amount = f"{days} day{'s' if days != 1 else ''}"
    return f"{amount} ago" if past else f"in {amount}"


def absolute_time(value) -> str:
    value = _datetime(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else ""


def public_status(inbox: ImapInbox) -> dict:
    """The inbox's sync status for the list page and its JSON: whitelisted keys, ISO dates."""
    raw = service.inbox_status(inbox)
    status = {key: raw.get(key) for key in STATUS_JSON_KEYS}
    for key in ("progress_done", "progress_total", "message_count"):
        status[key] = int(status[key] or 0)
    status["id"] = inbox.id
    return status


def _get_inbox(inbox_id: int) -> ImapInbox:
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is None:
        abort(404)
    return inbox


def _owner_choices(current_owner_id: int | None = None) -> list[SelectChoice]:
    """Active agents (and the current owner, so an edit never drops them silently)."""
    query = db.select(Agent).where(Agent.active)
    if current_owner_id:
        query = db.select(Agent).where(db.or_(Agent.active, Agent.id == current_owner_id))
    agents = db.session.scalars(query.order_by(Agent.name, Agent.email))
    choices = [SelectChoice("", "Choose an agent…")]
    choices += [SelectChoice(str(a.id), f"{a.name} <{a.email}>") for a in agents]
    return choices


def _fields_about(exc: ImapConnectError) -> tuple[str, ...]:
    return FIELDS_BY_ERROR_KIND.get(exc.kind, ())


def _show_connect_error(form: InboxForm, exc: ImapConnectError) -> None:
    """Put a failed connection test on the form: a box at the top and a note on the field it is about."""
    form.connect_error = exc
    for name in _fields_about(exc):
        field = getattr(form, name)
        field.errors = list(field.errors) + [exc.message]


def _show_invalid_setting(form: InboxForm, exc: service.InvalidInboxSettings) -> None:
    """The service refused a value (e.g. this mailbox is already connected): say so on that field."""
    field = getattr(form, {"ca_pem": "ca_upload"}.get(exc.field, exc.field), None)
    if field is None or exc.field == "email":
        field = form.username
    field.errors = list(field.errors) + [str(exc)]


def _render_form(form: InboxForm, inbox: ImapInbox | None = None) -> str:
    return render_template(
        "imap_inbox/form.html",
        form=form,
        inbox=inbox,
        presets=presets_data(),
        preset=get_preset(form.provider.data) or preset_for_host(form.host.data),
        connect_error=getattr(form, "connect_error", None),
    )


# ---------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------


@bp.route("/")
@admin_required
def inbox_list():
    query = db.select(ImapInbox).options(selectinload(ImapInbox.owner)).order_by(ImapInbox.name, ImapInbox.id)
    inboxes = db.session.scalars(query).all()
    rows = [(inbox, public_status(inbox)) for inbox in inboxes]
    return render_template(
        "imap_inbox/list.html",
        rows=rows,
        watch=describe_watch(inboxes),
        notes=mailbox_settings.notes(inbox.id for inbox in inboxes),  # other plugins' settings, e.g. Create users
        needing_attention=[inbox for inbox, s in rows if s["status"] == mail_models.NEEDS_ATTENTION],
        form=FlaskForm(),
        status_labels=STATUS_LABELS,
        active_statuses=ACTIVE_STATUSES,
        relative_time=relative_time,
        absolute_time=absolute_time,
    )


@bp.route("/status.json")
@admin_required
def inbox_status_json():
    inboxes = db.session.scalars(db.select(ImapInbox).order_by(ImapInbox.name, ImapInbox.id)).all()
    watch = describe_watch(inboxes)
    response = jsonify([{**public_status(inbox), "watch": watch.get(inbox.id)} for inbox in inboxes])
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/new", methods=["GET", "POST"])
@admin_required
def inbox_new():
    form = InboxForm.with_settings(mailbox_settings.form_fields(inbox_id=None))(require_password=True)
    form.owner_id.choices = _owner_choices()
    if form.validate_on_submit():
        try:
            inbox = service.create_inbox(
                **form.inbox_fields(), settings=form.setting_values(), password=form.password.data, check=True
            )
        except service.InvalidInboxSettings as exc:
            _show_invalid_setting(form, exc)
        except ImapConnectError as exc:
            _show_connect_error(form, exc)
        else:
            flash(
                f"Connected to {inbox.username}. The first sync has started; progress shows below.",
                "success",
            )
            return redirect(url_for(".inbox_list"))
    return _render_form(form)


@bp.route("/<int:inbox_id>/edit", methods=["GET", "POST"])
@admin_required
def inbox_edit(inbox_id: int):
    inbox = _get_inbox(inbox_id)
    form = InboxForm.with_settings(mailbox_settings.form_fields(inbox_id=inbox.id))(obj=inbox, require_password=False)
    form.owner_id.choices = _owner_choices(inbox.owner_id)
    form.stored_ca_file = inbox.ca_file
    if not form.is_submitted():
        form.provider.data = preset_for_host(inbox.host).key
        form.owner_id.data = inbox.owner_id
        form.extra_folders.data = ", ".join(inbox.extra_folders or [])
    if form.validate_on_submit():
        fields = form.inbox_fields()
        # Re-test the login only when something it depends on changed.
        changed = bool(form.password.data) or any(
            (getattr(inbox, name) or None) != (fields[name] or None) for name in service.CONNECTION_FIELDS
            if name in fields
        )
        try:
            service.update_inbox(inbox, password=form.password.data or None, check=changed,
                                 settings=form.setting_values(), **fields)
        except service.InvalidInboxSettings as exc:
            db.session.rollback()
            _show_invalid_setting(form, exc)
        except ImapConnectError as exc:
            db.session.rollback()
            _show_connect_error(form, exc)
        else:
            flash(f"Saved {inbox.name}.", "success")
            return redirect(url_for(".inbox_list"))
    return _render_form(form, inbox)


@bp.route("/<int:inbox_id>/sync", methods=["POST"])
@admin_required
def inbox_sync(inbox_id: int):
    inbox = _get_inbox(inbox_id)
    if not FlaskForm().validate_on_submit():
        abort(400)
    if not inbox.enabled:
        flash(f"{inbox.name} is disabled; enable it to sync.", "error")
    elif service.enqueue_sync(inbox.id):
        flash(f"Sync of {inbox.name} queued.", "success")
    else:
        flash(f"A sync of {inbox.name} is already queued or running.", "info")
    return redirect(url_for(".inbox_list"))


@bp.route("/<int:inbox_id>/<any(enable, disable):action>", methods=["POST"])
@admin_required
def inbox_toggle(inbox_id: int, action: str):
    inbox = _get_inbox(inbox_id)
    if not FlaskForm().validate_on_submit():
        abort(400)
    service.set_enabled(inbox, action == "enable")
    if action == "enable":
        flash(f"{inbox.name} enabled; it syncs again.", "success")
    else:
        flash(f"{inbox.name} disabled; it will not sync until you enable it. Its stored e-mails stay.", "success")
    return redirect(url_for(".inbox_list"))


@bp.route("/<int:inbox_id>/delete", methods=["GET", "POST"])
@admin_required
def inbox_delete(inbox_id: int):
    """GET asks for confirmation; POST deletes only with the confirm box ticked."""
    inbox = _get_inbox(inbox_id)
    form = DeleteInboxForm()
    if form.validate_on_submit():
        name = inbox.name
        service.delete_inbox(inbox.id)
        flash(f"Deleted {name} and the e-mails the CRM stored from it.", "success")
        return redirect(url_for(".inbox_list"))
    stored = db.session.scalar(
        db.select(db.func.count()).select_from(mail_models.Message).where(mail_models.Message.inbox_id == inbox.id)
    )
    return render_template("imap_inbox/delete.html", inbox=inbox, form=form, stored=stored or 0)


@bp.route("/<int:inbox_id>/resync", methods=["GET", "POST"])
@admin_required
def inbox_resync(inbox_id: int):
    """GET explains and asks for confirmation; POST asks the next sync (queued now) to read the mailbox again."""
    inbox = _get_inbox(inbox_id)
    form = ResyncInboxForm()
    if form.validate_on_submit():
        if not inbox.enabled:
            flash(f"{inbox.name} is disabled; enable it to read its mailbox again.", "error")
            return redirect(url_for(".inbox_edit", inbox_id=inbox.id))
        service.request_resync(inbox)
        flash(f"{inbox.name} will be read again from the start: its e-mails come back on timelines as the sync "
              "goes.", "success")
        return redirect(url_for(".inbox_list"))
    return render_template("imap_inbox/resync.html", inbox=inbox, form=form)
