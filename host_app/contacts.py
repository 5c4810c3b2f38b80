"""Contacts: list with search and paging, a contact page with its merged timeline."""
from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import login_required
from flask_wtf import FlaskForm
from sqlalchemy import func, or_
from wtforms import EmailField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, Optional

from .extensions import db
from .models import ADDED_BY_HAND, Agent, Contact, ContactTag, normalize_email
from .values import TimelineEntry, TimelineFilter

bp = Blueprint("contacts", __name__, url_prefix="/contacts")


class ContactForm(FlaskForm):
    email = EmailField(
        "E-mail", validators=[DataRequired(), Email(), Length(max=320)], filters=[lambda v: v.strip() if v else v]
    )
    name = StringField("Name", validators=[Optional(), Length(max=300)])
    tags = StringField("Tags", description="Comma-separated", validators=[Optional()])
    owner_id = SelectField("Owner", coerce=int, validators=[Optional()])


def find_contact(email: str) -> Contact | None:
    return db.session.scalar(db.select(Contact).where(Contact.email == normalize_email(email)))


def search_contacts(query: str = "", tag: str = ""):
    stmt = db.select(Contact)
    if query.strip():
        like = f"%{query.strip().lower()}%"
        found_by_plugins = [contact_id for ids in current_app.extensions["plugins"].hook.contact_search_matches(
            app=current_app, query=query) for contact_id in (ids or [])]
        stmt = stmt.where(or_(Contact.email.like(like), func.lower(Contact.name).like(like),
                              Contact.id.in_(found_by_plugins)))
    if tag:
        stmt = stmt.where(Contact.id.in_(db.select(ContactTag.contact_id).where(ContactTag.tag == tag)))
    return stmt.order_by(Contact.name == "", func.lower(Contact.name), Contact.email)


DIRECTION_FILTER = TimelineFilter("direction", "Show", (("in", "Received"), ("out", "Sent")))


def timeline_filters(contact: Contact) -> list[TimelineFilter]:
    """The choices above the contact's timeline: direction, then the plugins' (e.g. the inbox)."""
    hook = current_app.extensions["plugins"].hook
    return [DIRECTION_FILTER] + [f for result in hook.timeline_filters(app=current_app, contact=contact)
                                 for f in (result or [])]


def chosen_filters(available: list[TimelineFilter], args) -> dict[str, str]:
    """The filters of ``args`` (query parameters) whose value is one of their choices."""
    chosen = {}
    for option in available:
        value = args.get(option.name, "")
        if value in {v for v, _ in option.choices}:
            chosen[option.name] = value
    return chosen


def _matches(entry: TimelineEntry, filters: dict[str, str]) -> bool:
    for name, value in filters.items():
        have = entry.direction if name == "direction" else entry.details.get(name)
        if str(have if have is not None else "") != value:
            return False
    return True


FILTER_ROUNDS = 10  # asks of the plugins per page when filters leave out what a plugin sent


def timeline(contact: Contact, before: datetime | None = None, limit: int = 30,
             filters: dict[str, str] | None = None) -> list[TimelineEntry]:
    """Entries from every loaded timeline source, merged newest first, each shown once.

    Each plugin sends its newest ``limit`` entries; everything of the merge down to the oldest of those from a
    plugin that sent a full page is complete. When ``filters`` leave fewer than ``limit`` there (a plugin that
    does not filter), the plugins are asked again below that point, so a filtered page is still full.
    """
    hook = current_app.extensions["plugins"].hook
    filters = filters or {}
    merged: dict[str, TimelineEntry] = {}
    cursor = before
    for _ in range(FILTER_ROUNDS):
        complete_until = None  # entries at this date or newer are all known
        for entries in hook.timeline_entries(app=current_app, contact=contact, before=cursor, limit=limit,
                                             filters=dict(filters)):
            entries = list(entries or [])
            if len(entries) >= limit > 0:
                oldest = min(e.date for e in entries)
                complete_until = oldest if complete_until is None else max(complete_until, oldest)
            for entry in entries:
                if _matches(entry, filters):
                    merged.setdefault(entry.key, entry)
        if complete_until is None:
            break
        known = [e for e in merged.values() if e.date >= complete_until]
        if len(known) >= limit or not filters:
            break
        if cursor is not None and complete_until >= cursor:
            break  # no progress (a plugin ignoring ``before``)
        cursor = complete_until
    return sorted(merged.values(), key=lambda e: e.date, reverse=True)[:limit]


def threaded(entries: list[TimelineEntry]) -> list[list[TimelineEntry]]:
    """Entries (newest first) grouped by ``thread``: newest thread first, each thread newest first."""
    groups: dict[str, list[TimelineEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.thread or f"entry:{entry.key}", []).append(entry)
    return list(groups.values())


def _owner_choices() -> list[tuple[int, str]]:
    agents = db.session.scalars(db.select(Agent).where(Agent.active).order_by(Agent.name))
    return [SelectChoice(0, "— nobody —")] + [SelectChoice(a.id, f"{a.name} <{a.email}>") for a in agents]


@bp.route("/")
@login_required
def contact_list():
    query = request.args.get("q", "")
    tag = request.args.get("tag", "")
    page = db.paginate(
        search_contacts(query, tag), per_page=current_app.config["CONTACTS_PER_PAGE"], error_out=False
    )
    return render_template("contacts/list.html", page=page, q=query, tag=tag)


@bp.route("/new", methods=["GET", "POST"])
@login_required
def contact_new():
    form = ContactForm()
    form.owner_id.choices = _owner_choices()
    if form.validate_on_submit():
        if find_contact(form.email.data):
            form.email.errors.append("A contact with this e-mail already exists.")
        else:
            contact = Contact(email=normalize_email(form.email.data), name=form.name.data or "", source=ADDED_BY_HAND)
            _apply_form(contact, form)
            db.session.add(contact)
            db.session.commit()
            current_app.extensions["plugins"].hook.contact_created(app=current_app, contacts=[contact])
            flash("Contact created.", "success")
            return redirect(url_for(".contact_detail", contact_id=contact.id))
    return render_template("contacts/edit.html", form=form, contact=None)


@bp.route("/<int:contact_id>/edit", methods=["GET", "POST"])
@login_required
def contact_edit(contact_id: int):
    contact = db.get_or_404(Contact, contact_id)
    form = ContactForm(obj=contact, tags=", ".join(contact.tags), owner_id=contact.owner_id or 0)
    form.owner_id.choices = _owner_choices()
    del form.email  # the address is the contact's identity
    if form.validate_on_submit():
        if (form.name.data or "") != contact.name:
            contact.name = form.name.data or ""
            contact.name_edited = True
        _apply_form(contact, form)
        db.session.commit()
        flash("Contact saved.", "success")
        return redirect(url_for(".contact_detail", contact_id=contact.id))
    return render_template("contacts/edit.html", form=form, contact=contact)


def _apply_form(contact: Contact, form: ContactForm) -> None:
    contact.owner_id = form.owner_id.data or None
    wanted = {t.strip() for t in (form.tags.data or "").split(",") if t.strip()}
    for tag in set(contact.tags) - wanted:
        contact.remove_tag(tag)
    for tag in sorted(wanted - set(contact.tags)):
        contact.add_tag(tag)


@bp.route("/<int:contact_id>")
@login_required
def contact_detail(contact_id: int):
    contact = db.get_or_404(Contact, contact_id)
    before = None
    if request.args.get("before"):
        try:
            before = datetime.fromisoformat(request.args["before"])
            if before.tzinfo is None:  # plugins get aware times; the timeline's own links are always UTC
                before = before.replace(tzinfo=UTC)
        except ValueError:
            abort(400, "The 'before' parameter must be an ISO 8601 date.")
    limit = current_app.config["TIMELINE_PER_PAGE"]
    available = timeline_filters(contact)
    filters = chosen_filters(available, request.args)
    # One entry more than shown: it says whether the last conversation goes on on the next page.
    entries = timeline(contact, before=before, limit=limit + 1, filters=filters)
    peek = entries[limit] if len(entries) > limit else None
    entries = entries[:limit]
    next_before = entries[-1].date.isoformat() if peek is not None else None
    threads = threaded(entries)
    # A conversation cut by the page boundary: its older messages open the next page ("continued"), where its
    # newest message, already shown here in full, is not repeated.
    continues_below = bool(threads and peek is not None and peek.thread and peek.thread == threads[-1][-1].thread)
    continued_above = request.args.get("continued", "")
    hook = current_app.extensions["plugins"].hook
    panels = [p for result in hook.contact_panels(app=current_app, contact=contact) for p in (result or [])]
    return render_template(
        "contacts/detail.html", contact=contact, threads=threads, next_before=next_before, panels=panels,
        filters=filters, available_filters=available, continues_below=continues_below,
        continued_above=continued_above,
        next_continued=threads[-1][-1].thread if continues_below else None,
    )


def init_app(app) -> None:
    app.register_blueprint(bp)
