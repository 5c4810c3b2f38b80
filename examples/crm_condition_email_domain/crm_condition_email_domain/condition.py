"""The "E-mail domain" condition: its parameter form, and evaluation for one contact or many."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from wtforms import Form, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, ValidationError

from host_app.api import Condition, Contact, db, member_of

IS_ONE_OF = "is_one_of"
IS_NOT_ONE_OF = "is_not_one_of"
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def parse_domains(text: str | None) -> list[str]:
    """``"Acme.com, @example.org"`` -> ``["acme.com", "example.org"]`` (separated by commas or spaces)."""
    found = []
    for item in re.split(r"[,\s;]+", text or ""):
        domain = item.strip().lstrip("@").rstrip(".").lower()
        if domain and domain not in found:
            found.append(domain)
    return found


def valid_domains(form, field) -> None:
    """Every item must look like a domain name; the error names the ones that do not."""
    wrong = [d for d in parse_domains(field.data) if not _DOMAIN.match(d)]
    if wrong:
        raise ValidationError(f"Not a domain name: {', '.join(wrong)}. Write domains like acme.com.")


class EmailDomainForm(Form):
    """The condition's parameters. A plain ``wtforms.Form``: the automation builder embeds it with a prefix."""

    match = SelectField(
        "The contact's e-mail domain",
        choices=[SelectChoice(IS_ONE_OF, "is one of"), SelectChoice(IS_NOT_ONE_OF, "is not one of")],
        default=IS_ONE_OF,
    )
    domains = StringField(
        "Domains",
        description="Comma-separated, e.g. acme.com, example.org. Subdomains (eu.acme.com) count too.",
        validators=[DataRequired("Enter at least one domain."), Length(max=2000), valid_domains],
    )


def domain_of(email: str) -> str:
    return email.rpartition("@")[2].lower() if "@" in email else ""


class EmailDomainCondition(Condition):
    key = "email_domain"
    label = "E-mail domain"
    description = "The contact's e-mail address is (or is not) at one of the given domains or their subdomains."
    form_class = EmailDomainForm

    def evaluate(self, contact, params: dict[str, Any]) -> bool:
        """One contact, in Python."""
        domain = domain_of(contact.email)
        at_one = any(domain == d or domain.endswith("." + d) for d in parse_domains(params["domains"]))
        return at_one if params.get("match", IS_ONE_OF) == IS_ONE_OF else not at_one

    def evaluate_bulk(self, contact_ids: Iterable[int], params: dict[str, Any]) -> set[int]:
        """Many contacts, in one query: the same test written in SQL.

        The host calls this for an event's contacts, for the contacts whose wait is over, and for a whole
        audience (all contacts: tens of thousands) in runs by hand and on a schedule.
        """
        ids = list(contact_ids)
        if not ids:
            return set()
        # Domain names hold no LIKE wildcards (% and _ are refused by the form), so no escaping is needed.
        email = sa.func.lower(Contact.email)
        at_one = sa.or_(
            sa.false(),
            *(email.like(f"%@{d}") | email.like(f"%@%.{d}") for d in parse_domains(params["domains"])),
        )
        wanted = at_one if params.get("match", IS_ONE_OF) == IS_ONE_OF else ~at_one
        # member_of: the ids as one parameter, however many (an IN list would bind one per id).
        return set(db.session.scalars(sa.select(Contact.id).where(member_of(Contact.id, ids), wanted)))

    def describe(self, params: dict[str, Any]) -> str:
        verb = "is" if params.get("match", IS_ONE_OF) == IS_ONE_OF else "is not"
        return f"E-mail domain {verb} one of {', '.join(parse_domains(params['domains']))}"
