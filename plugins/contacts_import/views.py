"""Settings > Contacts import: the block list, and per inbox its policy, a dry run and the Create users switch."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy.exc import IntegrityError

from host_app.api import admin_required, db, utcnow
from plugins.mail.models import Inbox

from . import importer
from .jobs import queue_import, start_full_import
from .models import IDLE, KIND_DOMAIN, POLICIES, QUEUED, RUNNING, BlockedEntry, ImportState
from .rules import parse_block_entry

STALE_AFTER = timedelta(minutes=15)

bp = Blueprint("contacts_import", __name__, url_prefix="/settings/contacts-import", template_folder="templates")


def _busy(state: ImportState) -> bool:
    """Queued or running, and heard of lately (a job lost with its worker must not refresh the page forever)."""
    if state.status not in (QUEUED, RUNNING):
        return False
    return state.updated_at is None or utcnow() - state.updated_at < STALE_AFTER


def _inbox_or_404(inbox_id: int) -> Inbox:
    return db.get_or_404(Inbox, inbox_id)


@bp.route("/")
@admin_required
def settings():
    inboxes = db.session.scalars(db.select(Inbox).order_by(Inbox.name, Inbox.id)).all()
    states = {s.inbox_id: s for s in db.session.scalars(db.select(ImportState))}
    # The dry run matters before switching on; for inboxes already on, the last run says enough.
    previews = {inbox.id: importer.dry_run(inbox) for inbox in inboxes
                if not (inbox.id in states and states[inbox.id].create_users)}
    blocked = db.session.scalars(db.select(BlockedEntry).order_by(BlockedEntry.kind, BlockedEntry.value)).all()
    running = any(_busy(s) for s in states.values())
    return render_template(
        "contacts_import/settings.html",
        inboxes=inboxes, states=states, previews=previews, blocked=blocked, policies=POLICIES,
        default_policy=next(iter(POLICIES)), running=running,
    )


@bp.route("/inboxes/<int:inbox_id>/progress.json")
@admin_required
def progress(inbox_id: int):
    _inbox_or_404(inbox_id)
    state = db.session.get(ImportState, inbox_id)
    if state is None:
        return jsonify({"inbox_id": inbox_id, "status": "never run"})
    return jsonify({
        "inbox_id": inbox_id, "status": state.status, "done": state.progress_done, "total": state.progress_total,
        "last_created": state.last_created, "total_created": state.total_created, "error": state.error,
    })


@bp.route("/inboxes/<int:inbox_id>/policy", methods=["POST"])
@admin_required
def set_policy(inbox_id: int):
    inbox = _inbox_or_404(inbox_id)
    policy = request.form.get("policy", "")
    if policy not in POLICIES:
        flash("Choose who becomes a contact from the list.", "error")
        return redirect(url_for(".settings"))
    state = importer.inbox_state(inbox.id)
    if state.policy != policy:
        state.policy = policy
        state.last_message_id = None  # people the old policy left out are looked at again
        db.session.commit()
        if state.create_users:
            queue_import(inbox.id)
    flash(f"{inbox.email}: {POLICIES[policy].lower()} become contacts.", "success")
    return redirect(url_for(".settings"))


@bp.route("/inboxes/<int:inbox_id>/create-users/<any(on, off):switch>", methods=["POST"])
@admin_required
def create_users(inbox_id: int, switch: str):
    inbox = _inbox_or_404(inbox_id)
    state = importer.inbox_state(inbox.id)
    if switch == "on" and state.create_users:
        flash(f"Create users is already on for {inbox.email}.", "info")
    elif switch == "on":
        state.create_users = True
        db.session.commit()
        start_full_import(inbox.id)
        state = db.session.get(ImportState, inbox.id)
        # Idle means Redis refused the job; a worker may already have taken it past "queued".
        if state is not None and state.status != IDLE:
            flash(f"Create users is on for {inbox.email}; the import is running.", "success")
        else:
            flash(f"Create users is on for {inbox.email}; the import runs after the next sync.", "success")
    else:
        state.create_users = False
        db.session.commit()
        flash(f"Create users is off for {inbox.email}. Contacts already created stay.", "success")
    return redirect(url_for(".settings"))


@bp.route("/block", methods=["POST"])
@admin_required
def block_add():
    try:
        kind, value = parse_block_entry(request.form.get("entry", ""))
    except ValueError as exc:
        flash(str(exc), "error")
        return redirect(url_for(".settings"))
    db.session.add(BlockedEntry(kind=kind, value=value))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        flash(f"{value} is already on the block list.", "error")
    else:
        flash(f"Blocked {'the domain ' if kind == KIND_DOMAIN else ''}{value}. Existing contacts stay.", "success")
    return redirect(url_for(".settings"))


@bp.route("/block/<int:entry_id>/delete", methods=["POST"])
@admin_required
def block_remove(entry_id: int):
    entry = db.get_or_404(BlockedEntry, entry_id)
    value = entry.value
    db.session.delete(entry)
    importer.forget_watermarks()  # addresses it kept out may now be imported on the next run
    db.session.commit()
    flash(f"{value} is no longer blocked.", "success")
    return redirect(url_for(".settings"))
