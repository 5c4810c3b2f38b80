"""One test per hook of host_app/hookspecs.py, each with a throwaway plugin (tests/host/test_docs.py checks names)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from flask.testing import FlaskClient

from host_app.extensions import db
from host_app.models import AutomationRule, AutomationRun, Contact
from host_app.testing import ADMIN_PASSWORD, log_in, make_agent
from tests.support.throwaway import throwaway_plugin


def _admin(app):
    make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True)
    return log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)


def test_hook_register_blueprints(crm_app_factory):
    source = """
        from flask import Blueprint
        from host_app import hookimpl
        bp = Blueprint("hello", __name__, url_prefix="/hello")
        @bp.route("/")
        def hello():
            return "hello from a plugin"
        @hookimpl
        def register_blueprints(app):
            return [bp]
    """
    with throwaway_plugin("hello", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        assert app.test_client().get("/hello/").data == b"hello from a plugin"
        disabled = crm_app_factory(plugins=plugins, disabled=["hello"])
        assert disabled.test_client().get("/hello/").status_code == 404


def test_hook_register_commands(crm_app_factory):
    source = """
        import click
        from host_app import hookimpl
        @hookimpl
        def register_commands(cli):
            @cli.command("greet")
            @click.argument("name")
            def greet(name):
                click.echo(f"Hello {name}")
            @cli.commands["contacts"].command("count")
            def count():
                click.echo("42")
    """
    with throwaway_plugin("greeter", source) as plugins:
        runner = crm_app_factory(plugins=plugins).test_cli_runner()
        assert runner.invoke(args=["greet", "Ada"]).output == "Hello Ada\n"
        assert runner.invoke(args=["contacts", "count"]).output == "42\n"
        # Another app without the plugin does not inherit its subcommand.
        assert "count" not in crm_app_factory(plugins={}).cli.commands["contacts"].commands


def test_hook_recurring_jobs(crm_app_factory):
    from host_app.jobs import make_scheduler

    source = """
        from host_app import hookimpl
        from host_app.api import RecurringJob
        def tick():
            return "tick"
        @hookimpl
        def recurring_jobs(app):
            return [RecurringJob("tick", tick, interval=60)]
    """
    with throwaway_plugin("ticker", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        # The host's own: scheduled automations and the waits that come due.
        host = [("host_app.schedules.run_due_schedules", 60), ("host_app.waits.run_due_waits", 60)]
        jobs = make_scheduler(app).get_jobs()
        assert sorted((j.func_name, j.interval) for j in jobs) == [*host, ("throwaway_ticker.plugin.tick", 60)]
        without = make_scheduler(crm_app_factory(plugins=plugins, disabled=["ticker"])).get_jobs()
        assert sorted((j.func_name, j.interval) for j in without) == host


def test_hook_background_commands(crm_app_factory):
    from host_app.runner import background_commands

    source = """
        from host_app import hookimpl
        @hookimpl
        def background_commands(app):
            return ["listen", "watch"]
    """
    with throwaway_plugin("listener", source) as plugins:
        assert background_commands(crm_app_factory(plugins=plugins)) == ["listen", "watch"]
        assert background_commands(crm_app_factory(plugins=plugins, disabled=["listener"])) == []


def test_hook_add_hookspecs(crm_app_factory):
    """A plugin declares a hook of its own; a plugin depending on it implements it, checked against the spec."""
    declaring = """
        import types
        from host_app import hookimpl
        from host_app.hookspecs import hookspec

        @hookspec
        def invoice_paid(app, invoice_id):
            "Called after an invoice was paid."

        @hookimpl
        def add_hookspecs(pluginmanager):
            pluginmanager.add_hookspecs(types.SimpleNamespace(invoice_paid=invoice_paid))
    """
    listening = """
        from host_app import hookimpl

        @hookimpl
        def invoice_paid(invoice_id):
            return f"thanks for {invoice_id}"
    """
    with throwaway_plugin("billing", declaring) as billing, \
            throwaway_plugin("thanks", listening, depends=["billing"]) as thanks:
        app = crm_app_factory(plugins={**billing, **thanks})
        hook = app.extensions["plugins"].hook.invoice_paid
        assert hook.spec is not None and hook.spec.argnames == ("app", "invoice_id")
        assert hook(app=app, invoice_id=7) == ["thanks for 7"]


def test_hook_app_ready(crm_app_factory):
    source = """
        from host_app import hookimpl
        @hookimpl
        def app_ready(app):
            app.config["READY_SEEN_PLUGINS"] = sorted(app.extensions["plugins"].plugins)
    """
    with throwaway_plugin("ready", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        assert app.config["READY_SEEN_PLUGINS"] == ["ready"]


def test_hook_settings_pages(crm_app_factory):
    source = """
        from flask import Blueprint
        from host_app import hookimpl
        from host_app.api import SettingsPage
        bp = Blueprint("calendars", __name__, url_prefix="/settings/calendars")
        @bp.route("/")
        def index():
            return "calendars"
        @hookimpl
        def register_blueprints():
            return bp
        @hookimpl
        def settings_pages():
            return [SettingsPage("Connected calendars", "calendars.index", "Sync calendars.")]
    """
    with throwaway_plugin("calendars", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        page = _admin(app).get("/settings/").get_data(as_text=True)
        assert "Connected calendars" in page and "/settings/calendars/" in page


def test_hook_page_notices(crm_app_factory):
    source = """
        from host_app import hookimpl
        from host_app.api import PageNotice
        calls = []
        @hookimpl
        def page_notices(agent):
            calls.append(agent.email)
            if agent.is_admin:
                return [PageNotice("Backups <failed>", url="/settings/", link_text="Settings", level="warning"),
                        PageNotice("Read the news", url="/news")]
            return [PageNotice(f"Hello {agent.name}")]
    """
    with throwaway_plugin("notices", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        calls = sys.modules["throwaway_notices.plugin"].calls
        assert "Backups" not in app.test_client().get("/login").get_data(as_text=True)
        assert calls == []  # nobody signed in: not asked

        admin = _admin(app)
        for url in ("/contacts/", "/settings/", "/automations/"):
            page = admin.get(url).get_data(as_text=True)
            assert re.search(r'<div class="flash page-notice flash-error" role="status">Backups &lt;failed&gt; '
                             r'<a href="/settings/">Settings</a></div>', page), url
            assert '<div class="flash page-notice" role="status"><a href="/news">Read the news</a></div>' in page
        assert calls == ["admin@team.example"] * 3  # once per page

        make_agent(app, "agent@team.example", "agent-password-1", name="Alan")
        page = log_in(app.test_client(), "agent@team.example", "agent-password-1").get("/contacts/").get_data(
            as_text=True)
        assert '<div class="flash page-notice" role="status">Hello Alan</div>' in page
        assert "Backups" not in page


def test_hook_contact_panels(crm_app_factory):
    source = """
        from markupsafe import escape
        from host_app import hookimpl
        from host_app.api import ContactPanel
        @hookimpl
        def contact_panels(contact):
            return [ContactPanel("Domain", f"<p class='domain'>{escape(contact.email.split('@')[1])}</p>")]
    """
    with throwaway_plugin("panel", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        client = _admin(app)
        with app.app_context():
            contact = Contact(email="ann@acme.example", name="Ann")
            db.session.add(contact)
            db.session.commit()
            cid = contact.id
        assert "<p class='domain'>acme.example</p>" in client.get(f"/contacts/{cid}").get_data(as_text=True)


def test_hook_timeline_entries(crm_app_factory):
    """Entries of two sources are merged newest first, shown once per key, and paged by date."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    source_template = """
        from datetime import datetime, timedelta, timezone
        from host_app import hookimpl
        from host_app.api import TimelineEntry
        BASE = datetime(2026, 1, 1, tzinfo=timezone.utc)
        @hookimpl
        def timeline_entries(contact, before, limit):
            entries = [TimelineEntry(date=BASE + timedelta(days=d), kind="{kind}", title=f"{kind} {{d}}",
                                     key=f"{kind}:{{d}}" if d != 4 else "shared")
                       for d in {days}]
            entries = [e for e in entries if before is None or e.date < before]
            return sorted(entries, key=lambda e: e.date, reverse=True)[:limit]
    """
    with (
        throwaway_plugin("notes", source_template.format(kind="note", days=[0, 2, 4])) as p1,
        throwaway_plugin("calls", source_template.format(kind="call", days=[1, 3, 4, 5])) as p2,
    ):
        app = crm_app_factory(plugins={**p1, **p2})
        with app.app_context():
            from host_app.contacts import timeline

            contact = Contact(email="t@example.org")
            db.session.add(contact)
            db.session.commit()
            entries = timeline(contact, limit=10)
            assert [e.date for e in entries] == sorted((e.date for e in entries), reverse=True)
            assert [e.date - base for e in entries] == [timedelta(days=d) for d in (5, 4, 3, 2, 1, 0)]
            first = timeline(contact, limit=3)
            rest = timeline(contact, before=first[-1].date, limit=3)
            assert [e.title for e in first + rest] == [e.title for e in entries]
            contact_id = contact.id
        client = _admin(app)
        page = client.get(f"/contacts/{contact_id}").get_data(as_text=True)
        assert page.index("call 5") < page.index("note 2") < page.index("note 0")


def test_hook_contact_search_matches(crm_app_factory):
    """The contacts list shows the contacts a plugin finds for the query beside the host's name/e-mail matches."""
    source = """
        from host_app import hookimpl
        from host_app.api import Contact, db
        @hookimpl
        def contact_search_matches(app, query):
            if query != "ordered pallets":
                return []
            return list(db.session.scalars(db.select(Contact.id).where(Contact.email == "found@example.org")))
    """
    with throwaway_plugin("finder", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        with app.app_context():
            db.session.add_all([Contact(email="found@example.org"), Contact(email="other@example.org"),
                                Contact(email="pallets@example.org", name="Ordered pallets")])
            db.session.commit()
        client = _admin(app)
        page = client.get("/contacts/?q=ordered+pallets").get_data(as_text=True)
        assert "found@example.org" in page and "pallets@example.org" in page and "other@example.org" not in page
        page = client.get("/contacts/?q=other").get_data(as_text=True)
        assert "other@example.org" in page and "found@example.org" not in page
        result = app.test_cli_runner().invoke(args=["contacts", "list", "--search", "ordered pallets"])
        assert "found@example.org" in result.output and "other@example.org" not in result.output


_FILTERED_SOURCE = """
    from datetime import datetime, timedelta, timezone
    from host_app import hookimpl
    from host_app.api import TimelineEntry, TimelineFilter
    BASE = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ENTRIES = [TimelineEntry(date=BASE + timedelta(days=d), kind="call", title=f"call {d}", key=f"call:{d}",
                             direction="in" if d % 2 else "out", details={"channel": "phone" if d < 6 else "visit"},
                             thread="t-old" if d < 3 else f"t{d}", attachments=2 if d == 7 else 0)
               for d in range(8)]
    @hookimpl
    def timeline_filters(contact):
        return [TimelineFilter("channel", "Channel", (("phone", "Phone calls"), ("visit", "Visits")))]
    @hookimpl
    def timeline_entries(contact, before, limit, filters):
        # Deliberately ignores the direction: the host leaves out what does not match anyway.
        entries = [e for e in ENTRIES if (before is None or e.date < before)
                   and filters.get("channel") in (None, e.details["channel"])]
        return sorted(entries, key=lambda e: e.date, reverse=True)[:limit]
"""


@contextmanager
def _calls_timeline(crm_app_factory, per_page: int) -> Iterator[tuple[FlaskClient, int]]:
    """An admin's client on an app with the calls plugin above (``per_page`` timeline entries a page), and
    the id of a contact whose timeline shows those calls."""
    with throwaway_plugin("calls", _FILTERED_SOURCE) as plugins:
        app = crm_app_factory(plugins=plugins, TIMELINE_PER_PAGE=per_page)
        with app.app_context():
            contact = Contact(email="t@example.org")
            db.session.add(contact)
            db.session.commit()
            contact_id = contact.id
        yield _admin(app), contact_id


def test_hook_timeline_filters(crm_app_factory):
    """The plugin's choices show above the timeline; chosen ones reach timeline_entries and stay on "Older"."""
    with _calls_timeline(crm_app_factory, per_page=2) as (client, contact_id):
        page = client.get(f"/contacts/{contact_id}").get_data(as_text=True)
        assert '<select name="channel">' in page and '<option value="phone" >Phone calls</option>' in page
        assert '<select name="direction">' in page
        assert "call 7" in page and "call 6" in page and "call 5" not in page
        assert 'aria-label="2 attachments"' in page  # call 7's paperclip

        page = client.get(f"/contacts/{contact_id}?channel=phone&direction=in").get_data(as_text=True)
        assert '<option value="phone" selected>' in page
        assert "call 5" in page and "call 3" in page and "call 7" not in page and "call 4" not in page
        older = re.search(r'href="([^"]*before=[^"]*)">Older', page).group(1).replace("&amp;", "&")
        assert "channel=phone" in older and "direction=in" in older
        page = client.get(older).get_data(as_text=True)
        assert "call 1" in page and "call 3" not in page and "call 2" not in page and "Older" not in page

        # Unknown values are no filter at all, never an error.
        page = client.get(f"/contacts/{contact_id}?channel=nonsense&direction=sideways")
        assert page.status_code == 200 and "call 7" in page.get_data(as_text=True)


def test_a_conversation_cut_by_the_page_boundary_goes_on_marked_on_the_next_page(crm_app_factory):
    with _calls_timeline(crm_app_factory, per_page=6) as (client, contact_id):
        # Page 1: calls 7..2; call 2 starts the thread t-old, whose calls 1 and 0 are on page 2.
        page = client.get(f"/contacts/{contact_id}").get_data(as_text=True)
        assert "call 2" in page and "call 1" not in page
        assert "Older messages of this conversation continue on the next page." in page
        older = re.search(r'href="([^"]*before=[^"]*)">Older', page).group(1).replace("&amp;", "&")
        assert "continued=t-old" in older
        page = client.get(older).get_data(as_text=True)
        assert "continued from the newer page" in page
        # Both of its messages there are one line each: the thread's newest was shown in full on page 1.
        assert re.search(r'<div class="thread thread-continued".*?entry-collapsed.*?call 1.*?entry-collapsed.*?call 0',
                         page, re.S)
        assert "continue on the next page" not in page


def test_hook_contact_providers(crm_app_factory):
    from host_app.api import ContactProvider

    source = """
        from host_app import hookimpl
        from host_app.api import ContactProvider, Person
        class Book(ContactProvider):
            key = "book"
            label = "Address book"
            def sources(self):
                return [(1, "Sales")]
            def people(self, source_id, since=None):
                yield Person(email="grace@example.org", name="Grace")
        @hookimpl
        def contact_providers(app):
            return [Book()]
    """
    with throwaway_plugin("book", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        providers = [p for r in app.extensions["plugins"].hook.contact_providers(app=app) for p in r]
        assert [p.key for p in providers] == ["book"] and isinstance(providers[0], ContactProvider)
        assert [person.email for person in providers[0].people(1)] == ["grace@example.org"]


def test_hook_contact_created(crm_app_factory):
    source = """
        from host_app import hookimpl
        SEEN = []
        @hookimpl
        def contact_created(contacts):
            SEEN.extend(c.email for c in contacts)
    """
    with throwaway_plugin("welcome", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        client = _admin(app)
        response = client.post("/contacts/new", data={"email": "New@Example.org", "name": "New", "owner_id": 0})
        assert response.status_code == 302
        import sys

        assert sys.modules["throwaway_welcome.plugin"].SEEN == ["new@example.org"]


def _rule(trigger, conditions, actions, match="all"):
    rule = AutomationRule(name="r", trigger=trigger, match=match, conditions=conditions, actions=actions)
    db.session.add(rule)
    db.session.commit()
    return rule


def test_hook_event_types(crm_app_factory):
    import pytest

    from host_app.events import emit, event_types

    source = """
        from host_app import hookimpl
        from host_app.api import EventType
        @hookimpl
        def event_types():
            return [
                EventType("invoice_paid", "Invoice paid"),
                EventType("ledger_closed", "Ledger closed", trigger=False),
            ]
    """
    with throwaway_plugin("billing", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        with app.app_context():
            assert event_types()["invoice_paid"].label == "Invoice paid"
            contact = Contact(email="payer@example.org")
            db.session.add(contact)
            db.session.commit()
            _rule("invoice_paid", [], [{"key": "add_tag", "params": {"tag": "paid"}}])
            emit("invoice_paid", key="inv-1", contact_ids=[contact.id])
            assert db.session.get(Contact, contact.id).tags == ["paid"]
            with pytest.raises(LookupError):
                emit("never_declared", key="x", contact_ids=[contact.id])
        client = _admin(app)
        page = client.get("/automations/new").get_data(as_text=True)
        assert "Invoice paid" in page and "Ledger closed" not in page  # names no contacts: not a trigger
        listing = client.get("/automations/").get_data(as_text=True)
        assert "Invoice paid" in listing and "Add tag: paid" in listing and "add_tag" not in listing


def test_hook_automation_conditions(crm_app_factory):
    """A plugin condition with a form, AND/OR with the host's has_tag, bulk evaluation, idempotent runs."""
    source = """
        from wtforms import Form, StringField
        from wtforms.validators import DataRequired
        from host_app import hookimpl
        from host_app.api import Condition
        from host_app.extensions import db
        from host_app.models import Contact
        CALLS = []
        class DomainForm(Form):
            domain = StringField("Domain", validators=[DataRequired()])
        class EmailDomain(Condition):
            key = "email_domain"
            label = "E-mail domain is"
            form_class = DomainForm
            def evaluate(self, contact, params):
                return contact.email.endswith("@" + params["domain"])
            def evaluate_bulk(self, contact_ids, params):
                CALLS.append(len(list(contact_ids)))
                stmt = db.select(Contact.id).where(Contact.email.like("%@" + params["domain"]))
                return set(db.session.scalars(stmt))
        @hookimpl
        def automation_conditions():
            return [EmailDomain()]
    """
    from host_app.builtin import MANUAL
    from host_app.events import emit

    with throwaway_plugin("domains", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        with app.app_context():
            people = [Contact(email=e) for e in ("a@acme.example", "b@acme.example", "c@other.example")]
            people[1].add_tag("vip")
            db.session.add_all(people)
            db.session.commit()
            ids = [c.id for c in people]
            domain = {"key": "email_domain", "params": {"domain": "acme.example"}}
            vip = {"key": "has_tag", "params": {"tag": "vip"}}
            both = _rule(MANUAL, [domain, vip], [{"key": "add_tag", "params": {"tag": "and"}}], match="all")
            either = _rule(MANUAL, [domain, vip], [{"key": "add_tag", "params": {"tag": "or"}}], match="any")
            emit(MANUAL, key="run-1", contact_ids=ids)
            emit(MANUAL, key="run-1", contact_ids=ids)  # the same occurrence again: nothing runs twice
            tags = {c.email: c.tags for c in db.session.scalars(db.select(Contact))}
            assert tags == {"a@acme.example": ["or"], "b@acme.example": ["and", "or", "vip"], "c@other.example": []}
            import sys

            assert sys.modules["throwaway_domains.plugin"].CALLS == [3, 3]  # one bulk call per rule
            runs = db.session.scalars(db.select(AutomationRun).where(AutomationRun.rule_id == both.id)).all()
            assert sorted(r.status for r in runs) == ["fired", "not_matched", "not_matched"]
            assert (
                len(db.session.scalars(db.select(AutomationRun).where(AutomationRun.rule_id == either.id)).all()) == 3
            )
        client = _admin(app)
        page = client.post(
            "/automations/new",
            data={
                "name": "x",
                "trigger": MANUAL,
                "match": "all",
                "op": "add_condition",
                "new_condition": "email_domain",
            },
        )
        html = page.get_data(as_text=True)
        assert 'name="cond-0-domain"' in html and "E-mail domain is" in html
        saved = client.post(
            "/automations/new",
            data={
                "name": "Acme",
                "trigger": MANUAL,
                "match": "all",
                "enabled": "y",
                "op": "save",
                "cond-0-key": "email_domain",
                "cond-0-domain": "acme.example",
                "act-0-key": "add_tag",
                "act-0-tag": "acme",
            },
        )
        assert saved.status_code == 302
        missing = client.post(
            "/automations/new",
            data={
                "name": "Bad",
                "trigger": MANUAL,
                "match": "all",
                "op": "save",
                "cond-0-key": "email_domain",
                "cond-0-domain": "",
                "act-0-key": "add_tag",
                "act-0-tag": "x",
            },
        )
        assert missing.status_code == 200 and "This field is required." in missing.get_data(as_text=True)
        log = client.get("/automations/runs").get_data(as_text=True)
        assert "fired" in log and "b@acme.example" in log


def test_hook_automation_actions(crm_app_factory):
    source = """
        from wtforms import Form, StringField
        from host_app import hookimpl
        from host_app.api import Action
        class NoteForm(Form):
            text = StringField("Note")
        class AddNote(Action):
            key = "add_note"
            label = "Add a note"
            form_class = NoteForm
            def run(self, contact, params):
                contact.attributes = {**(contact.attributes or {}), "note": params["text"]}
                return "note added"
        class Explode(Action):
            key = "explode"
            label = "Explode"
            def run(self, contact, params):
                raise RuntimeError("boom")
        @hookimpl
        def automation_actions():
            return [AddNote(), Explode()]
    """
    from host_app.builtin import MANUAL
    from host_app.events import emit

    with throwaway_plugin("notes", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        with app.app_context():
            contact = Contact(email="n@example.org")
            db.session.add(contact)
            db.session.commit()
            _rule(MANUAL, [], [{"key": "add_note", "params": {"text": "call back"}}])
            _rule(MANUAL, [], [{"key": "explode", "params": {}}])
            contact_id = contact.id
            emit(MANUAL, key="k", contact_ids=[contact_id])
            assert db.session.get(Contact, contact_id).attributes == {"note": "call back"}
            statuses = sorted((r.status, r.detail) for r in db.session.scalars(db.select(AutomationRun)))
            assert statuses == [("failed", "Explode failed: boom"), ("fired", "note added")]
        # The rule stays, but its action vanishes with the plugin: runs say why instead of crashing.
        app2 = crm_app_factory(plugins=plugins, disabled=["notes"])
        with app2.app_context():
            emit(MANUAL, key="k2", contact_ids=[contact_id])
            details = [
                r.detail for r in db.session.scalars(db.select(AutomationRun).where(AutomationRun.event_key == "k2"))
            ]
            assert all("not available" in d for d in details) and len(details) == 2


def test_hook_event_emitted(crm_app_factory, caplog):
    source_first = """
        from host_app import hookimpl
        from host_app.extensions import db
        from host_app.models import Contact
        @hookimpl(tryfirst=True)
        def event_emitted(event):
            if event.type == "manual":
                db.session.add(Contact(email="created-by-listener@example.org"))
                db.session.commit()
    """
    source_broken = """
        from host_app import hookimpl
        @hookimpl
        def event_emitted(event):
            raise RuntimeError("listener broke")
    """
    from host_app.events import emit

    with throwaway_plugin("first", source_first) as p1, throwaway_plugin("broken", source_broken) as p2:
        app = crm_app_factory(plugins={**p1, **p2})
        with app.app_context():
            event = emit("manual", key="x")
            assert event.type == "manual"
            assert db.session.scalar(db.select(Contact.email)) == "created-by-listener@example.org"
        assert "plugin broken failed while handling event manual" in caplog.text


def test_plugins_list_json(runner):
    result = runner.invoke(args=["plugins", "list", "--json"])
    assert result.exit_code == 0
    names = [p["name"] for p in json.loads(result.output)]
    assert {"imap_inbox", "contacts_import", "reply_condition"} <= set(names)
