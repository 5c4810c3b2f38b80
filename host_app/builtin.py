"""What the host itself offers through its own hooks: basic events, tag conditions and actions, audiences."""
from __future__ import annotations

from wtforms import Form, StringField
from wtforms.validators import DataRequired, Length

from .extensions import db
from .hookspecs import hookimpl
from .models import Agent, Contact, ContactTag
from .schedules import run_due_schedules
from .triggers import CONTACT_CREATED, DAILY, HOURLY, MANUAL
from .values import Action, Audience, Condition, EventType, RecurringJob
from .waits import pending_panel, run_due_waits


class TagForm(Form):
    tag = StringField("Tag", validators=[DataRequired(), Length(max=100)])


class AttributeForm(Form):
    name = StringField("Attribute", validators=[DataRequired(), Length(max=100)])
    value = StringField("Value", validators=[Length(max=1000)])


class HasTag(Condition):
    key = "has_tag"
    label = "Has tag"
    form_class = TagForm

    def evaluate(self, contact, params):
        return params["tag"] in contact.tags

    def describe(self, params):
        return f"Has tag {params.get('tag', '')}"

    def evaluate_bulk(self, contact_ids, params):
        ids = list(contact_ids)
        stmt = db.select(ContactTag.contact_id).where(ContactTag.tag == params["tag"], ContactTag.contact_id.in_(ids))
        return set(db.session.scalars(stmt))


class AddTag(Action):
    key = "add_tag"
    label = "Add tag"
    form_class = TagForm

    def run(self, contact, params):
        contact.add_tag(params["tag"])
        return f"tagged {params['tag']}"


class RemoveTag(Action):
    key = "remove_tag"
    label = "Remove tag"
    form_class = TagForm

    def run(self, contact, params):
        contact.remove_tag(params["tag"])
        return f"removed tag {params['tag']}"


class SetAttribute(Action):
    key = "set_attribute"
    label = "Set attribute"
    form_class = AttributeForm

    def run(self, contact, params):
        # A new dict, so SQLAlchemy sees the JSON column change.
        contact.attributes = {**(contact.attributes or {}), params["name"]: params.get("value", "")}
        return f"set {params['name']}"


class AllContacts(Audience):
    key = "all"
    label = "All contacts"

    def choices(self):
        return [("", "All contacts")]

    def contact_ids(self, value):
        return db.session.scalars(db.select(Contact.id))


class TaggedContacts(Audience):
    key = "tag"
    label = "Tag"

    def choices(self):
        tags = db.session.scalars(db.select(ContactTag.tag).distinct().order_by(ContactTag.tag))
        return [(tag, tag) for tag in tags]

    def contact_ids(self, value):
        return db.session.scalars(db.select(ContactTag.contact_id).where(ContactTag.tag == value))


class OwnedContacts(Audience):
    key = "owner"
    label = "Owner"

    def choices(self):
        agents = db.session.execute(db.select(Agent.id, Agent.name, Agent.email).order_by(Agent.name, Agent.email))
        return [(str(row.id), f"{row.name} <{row.email}>") for row in agents]

    def contact_ids(self, value):
        if not str(value).isdigit():
            raise ValueError(f"{value!r} is not an agent; choose an owner from the list.")
        return db.session.scalars(db.select(Contact.id).where(Contact.owner_id == int(value)))


@hookimpl
def event_types():
    return [
        EventType(CONTACT_CREATED, "Contact created"),
        EventType(MANUAL, "Run by hand"),
        EventType(HOURLY, "Every hour"),
        EventType(DAILY, "Every day at…"),
    ]


@hookimpl
def recurring_jobs(app):
    tick = int(app.config.get("AUTOMATION_TICK_SECONDS") or 60)
    return [
        RecurringJob("automations: start the scheduled runs that are due", run_due_schedules, tick),
        RecurringJob("automations: check the contacts whose wait is over", run_due_waits, tick),
    ]


@hookimpl
def contact_panels(contact):
    return pending_panel(contact)


@hookimpl
def automation_conditions():
    return [HasTag()]


@hookimpl
def automation_actions():
    return [AddTag(), RemoveTag(), SetAttribute()]


@hookimpl
def automation_audiences():
    return [AllContacts(), TaggedContacts(), OwnedContacts()]


@hookimpl
def contact_created(app, contacts):
    from .events import emit

    ids = [c.id for c in contacts]
    if ids:
        emit(CONTACT_CREATED, key="created", contact_ids=ids)
