"""The "IMAP email" automation condition: did the contact respond to one of our e-mails?"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from flask import has_app_context
from wtforms import Form, IntegerField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import NumberRange, StopValidation

from host_app.api import Agent, Condition, Contact, Occurrence, db, member_of, normalize_email
from plugins.mail.models import Inbox

from .models import Response

KEY = "imap_email"
LABEL = "IMAP email"
SECONDS_PER_DAY = 86400
MAX_DAYS = 36500


def parse_bool(value: Any) -> bool | None:
    """``True``/``False`` from a form value ("true", "false") or JSON (true, false); ``None`` when unreadable."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    return None


def parse_inbox_id(value: Any) -> int | None:
    """An inbox id from a form value or JSON; ``None`` (any inbox) for empty values."""
    if value is None or value == "" or value == "None":
        return None
    if isinstance(value, bool):
        raise ValueError("Choose an inbox from the list.")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("Choose an inbox from the list.") from None


class OptionalValue:
    """Like ``wtforms.validators.Optional``, but also right for forms filled from ``data=`` (JSON parameters).

    WTForms' ``Optional`` looks only at the posted text, so parameters given as
    data (the CLI, a saved rule) would skip every check, even ``-1`` or ``"x"``.
    """

    field_flags = {"optional": True}

    def __call__(self, form, field):
        posted_empty = field.raw_data is not None and (not field.raw_data or not str(field.raw_data[0]).strip())
        given_empty = field.raw_data is None and field.data is None and not field.process_errors
        if posted_empty or given_empty:
            field.errors[:] = []
            raise StopValidation()


def readable_inbox(form, field) -> None:
    """Refuse an inbox id that could not be read (``SelectField`` would quietly turn it into "any inbox")."""
    if field.data is None and field.object_data not in (None, "") and field.raw_data is None:
        raise StopValidation("Choose an inbox from the list.")


def inbox_choices() -> list[SelectChoice]:
    """"Any team inbox" and every connected inbox, shown as its owner's name and address.

    The inbox's own name is for admins only, so it is never used here.
    """
    choices = [SelectChoice("", "Any team inbox")]
    if not has_app_context():
        return choices
    rows = db.session.execute(
        sa.select(Inbox.id, Inbox.email, Inbox.username, Agent.name, Agent.email.label("owner_email"))
        .outerjoin(Agent, Agent.id == Inbox.owner_id)
        .order_by(Agent.name, Inbox.email, Inbox.id)
    ).all()
    for row in rows:
        address = row.email or row.username
        owner = row.name or row.owner_email
        choices.append(SelectChoice(row.id, f"{owner} <{address}>" if owner else address))
    return choices


class RepliedForm(Form):
    """Parameters of the condition. A plain ``wtforms.Form``: the builder embeds it with a prefix."""

    responded = SelectField(
        "The contact",
        choices=[
            SelectChoice(True, "has responded to one of our e-mails"),
            SelectChoice(False, "has not responded to any of our e-mails"),
        ],
        coerce=parse_bool,
        default=True,
    )
    within_days = IntegerField(
        "Within (days)",
        description="Optional: the response came at most this many days after our e-mail.",
        validators=[
            OptionalValue(),
            NumberRange(min=0, max=MAX_DAYS, message="Enter a number of days from 0 to %(max)s."),
        ],
    )
    after_trigger = SelectField(
        "Responses that count",
        choices=[
            SelectChoice(False, "responses to any of our e-mails"),
            SelectChoice(True, "only responses after the e-mail that started the automation"),
        ],
        coerce=parse_bool,
        default=False,
        description="For automations that wait after an e-mail: did they answer since that e-mail? Runs by "
                    "hand and on a schedule have no such e-mail and count every response.",
    )
    inbox_id = SelectField(
        "Our e-mail sent from",
        description="Only our e-mails from this connected inbox count.",
        coerce=parse_inbox_id,
        default=None,
        validators=[readable_inbox],
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inbox_id.choices = inbox_choices()


def counting_responses(query: sa.Select, params: dict[str, Any]) -> sa.Select:
    """``query`` over ``Response`` narrowed to the responses that count: ``within_days`` and ``inbox_id``."""
    inbox_id = parse_inbox_id(params.get("inbox_id"))
    if inbox_id is not None:
        query = query.where(Response.our_inbox_id == inbox_id)
    within_days = params.get("within_days")
    if within_days not in (None, ""):
        query = query.where(Response.delay_seconds <= int(within_days) * SECONDS_PER_DAY)
    return query


def response_exists(contact_email: sa.ColumnElement, params: dict[str, Any]) -> sa.Exists:
    """EXISTS a stored response of ``contact_email`` that fits ``within_days`` and ``inbox_id``."""
    return counting_responses(sa.select(Response.id).where(Response.contact_email == contact_email), params).exists()


def _wants_response(params: dict[str, Any]) -> bool:
    wanted = parse_bool(params.get("responded", True))
    if wanted is None:
        raise ValueError(f"responded must be true or false, not {params.get('responded')!r}")
    return wanted


class RepliedCondition(Condition):
    """Holds when the contact responded (or did not) to one of our e-mails; see docs/writing-condition-plugins.md."""

    key = KEY
    label = LABEL
    description = "Whether the contact responded to one of our e-mails (optionally within N days, from one inbox)."
    form_class = RepliedForm

    def evaluate(self, contact, params: dict[str, Any]) -> bool:
        found = response_exists(sa.literal(normalize_email(contact.email)), params)
        query = sa.select(found if _wants_response(params) else ~found)
        return bool(db.session.scalar(query))

    def evaluate_bulk(self, contact_ids: Iterable[int], params: dict[str, Any],
                      occurrences: dict[int, Occurrence] | None = None) -> set[int]:
        ids = sorted(set(contact_ids))
        if not ids:
            return set()
        if occurrences and parse_bool(params.get("after_trigger", False)):
            return self._responded_after(ids, params, occurrences)
        found = response_exists(Contact.email, params)
        wanted = found if _wants_response(params) else ~found
        # One statement with the ids as one parameter (member_of): an IN list of 20,000 bound values cost
        # more to send and parse than the query itself took on PostgreSQL (bench/README.md, "Automations").
        return set(db.session.scalars(sa.select(Contact.id).where(member_of(Contact.id, ids), wanted)))

    def _responded_after(self, ids: list[int], params: dict[str, Any], occurrences: dict[int, Occurrence]) -> set[int]:
        """Each contact against its own triggering e-mail: a counting response replied at or after it."""
        wanted = _wants_response(params)
        emails = dict(db.session.execute(sa.select(Contact.id, Contact.email).where(member_of(Contact.id, ids))).all())
        latest = dict(db.session.execute(
            counting_responses(sa.select(Response.contact_email, sa.func.max(Response.replied_at)), params)
            .where(member_of(Response.contact_email, sorted(set(emails.values()))))
            .group_by(Response.contact_email)
        ).all())
        result: set[int] = set()
        for cid, email in emails.items():
            last = latest.get(email)
            occurrence = occurrences.get(cid)
            responded = last is not None and (occurrence is None or last >= occurrence.occurred_at)
            if responded == wanted:
                result.add(cid)
        return result

    def describe(self, params: dict[str, Any]) -> str:
        text = "has responded to one of our e-mails" if _wants_response(params) else "has not responded to our e-mails"
        if parse_bool(params.get("after_trigger", False)):
            text += " since the e-mail that started the automation"
        if params.get("within_days") not in (None, ""):
            text += f" within {int(params['within_days'])} days"
        inbox_id = parse_inbox_id(params.get("inbox_id"))
        if inbox_id is not None:
            labels = {c.value: c.label for c in inbox_choices()}
            text += f" sent from {labels.get(inbox_id, f'inbox #{inbox_id} (removed)')}"
        return f"{self.label}: {text}"
