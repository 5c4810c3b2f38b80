"""Wait, then check: waits stored in the database, evaluated in bulk when due, cancelled, shown, cheap."""
from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import event

from host_app.events import emit
from host_app.extensions import db
from host_app.jobs import enqueue, make_worker
from host_app.models import AutomationRule, AutomationRun, AutomationWait, Contact, utcnow
from host_app.waits import process_due_waits, run_due_waits
from tests.support.throwaway import throwaway_plugin

DAYS_3 = 3 * 86400


def _contacts(*emails: str, tag: str | None = None) -> list[int]:
    rows = [Contact(email=e) for e in emails]
    for row in rows:
        if tag:
            row.add_tag(tag)
    db.session.add_all(rows)
    db.session.commit()
    return [r.id for r in rows]


def _rule(wait_seconds: int, conditions=None, trigger: str = "contact_created") -> int:
    rule = AutomationRule(
        name="Follow up", trigger=trigger, match="all", wait_seconds=wait_seconds,
        conditions=conditions if conditions is not None else [{"key": "has_tag", "params": {"tag": "lead"}}],
        actions=[{"key": "add_tag", "params": {"tag": "needs-follow-up"}}],
    )
    db.session.add(rule)
    db.session.commit()
    return rule.id


def _tags(email: str) -> list[str]:
    return db.session.scalar(db.select(Contact).where(Contact.email == email)).tags


def test_an_event_starts_a_wait_that_is_checked_when_due_and_logged_waited_evaluated_acted(app, admin_client):
    with app.app_context():
        _rule(DAYS_3)
        lead, other = _contacts("lead@example.org", "other@example.org")
        db.session.get(Contact, lead).add_tag("lead")
        db.session.commit()
        emit("contact_created", key="created", contact_ids=[lead, other])
        emit("contact_created", key="created", contact_ids=[lead, other])  # the same occurrence: no second wait
        waits = db.session.scalars(db.select(AutomationWait)).all()
        assert len(waits) == 2
        due = waits[0].due_at
        assert timedelta(days=3) - timedelta(seconds=5) < due - utcnow() <= timedelta(days=3)
        runs = db.session.scalars(db.select(AutomationRun)).all()
        assert {r.status for r in runs} == {"waiting"} and "waiting until" in runs[0].detail

    page = admin_client.get(f"/contacts/{lead}").get_data(as_text=True)
    assert "Automations waiting" in page and "Follow up: checks on" in page
    assert "Every day" not in admin_client.get("/automations/").get_data(as_text=True)
    assert "then wait 3 days" in admin_client.get("/automations/").get_data(as_text=True)

    with app.app_context():
        assert process_due_waits(now=due - timedelta(seconds=1)) == {}  # not due yet: nothing happens
        assert _tags("lead@example.org") == ["lead"]
        assert process_due_waits(now=due + timedelta(seconds=1)) == {"fired": 1, "not_matched": 1}
        assert _tags("lead@example.org") == ["lead", "needs-follow-up"] and _tags("other@example.org") == []
        assert db.session.scalar(db.select(db.func.count(AutomationWait.id))) == 0
        by_contact = {r.contact_id: r for r in db.session.scalars(db.select(AutomationRun))}
        assert by_contact[lead].status == "fired"
        assert by_contact[lead].detail == "waited 3 days; evaluated: conditions met; tagged needs-follow-up"
        assert by_contact[other].detail == "waited 3 days; evaluated: conditions not met"
    assert "Automations waiting" not in admin_client.get(f"/contacts/{lead}").get_data(as_text=True)


def test_disabling_cancels_the_waits_and_deleting_drops_them(app, admin_client):
    with app.app_context():
        rule_id = _rule(DAYS_3)
        ids = _contacts("a@example.org", "b@example.org", tag="lead")
        emit("contact_created", key="created", contact_ids=ids)
        assert db.session.scalar(db.select(db.func.count(AutomationWait.id))) == 2
    page = admin_client.get(f"/automations/{rule_id}").get_data(as_text=True)
    assert 'name="wait_amount"' in page and 'value="3"' in page
    saved = admin_client.post(f"/automations/{rule_id}", data={
        "name": "Follow up", "trigger": "contact_created", "match": "all", "op": "save",
        "wait_amount": "3", "wait_unit": "86400", "cond-0-key": "has_tag", "cond-0-tag": "lead",
        "act-0-key": "add_tag", "act-0-tag": "needs-follow-up"})  # "enabled" unticked
    assert saved.status_code == 302
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(AutomationWait.id))) == 0
        assert {(r.status, r.detail) for r in db.session.scalars(db.select(AutomationRun))} == {
            ("cancelled", "cancelled: the automation was disabled")}
        rule = db.session.get(AutomationRule, rule_id)
        rule.enabled = True
        db.session.commit()
        emit("contact_created", key="again", contact_ids=ids)
        assert db.session.scalar(db.select(db.func.count(AutomationWait.id))) == 2
    assert admin_client.post(f"/automations/{rule_id}/delete").status_code == 302
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(AutomationWait.id))) == 0
        assert process_due_waits(now=utcnow() + timedelta(days=4)) == {}


def test_the_builder_refuses_a_wait_on_runs_by_hand(app, admin_client):
    refused = admin_client.post("/automations/new", data={
        "name": "By hand", "trigger": "manual", "match": "all", "op": "save", "enabled": "y",
        "wait_amount": "2", "wait_unit": "3600", "act-0-key": "add_tag", "act-0-tag": "x"})
    assert refused.status_code == 200
    assert "Waiting is for automations that start on an event" in refused.get_data(as_text=True)


def test_pending_waits_cost_one_indexed_query_until_due_then_are_checked_in_bulk(app):
    with app.app_context():
        _rule(DAYS_3)
        ids = _contacts(*(f"c{i}@example.org" for i in range(2000)), tag="lead")
        emit("contact_created", key="created", contact_ids=ids)
        statements = []

        def count(conn, cursor, statement, *args):
            statements.append(statement)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert process_due_waits() == {}
            assert [s for s in statements if "automation_wait" in s] == statements and len(statements) == 1
            if db.engine.dialect.name == "sqlite":  # PostgreSQL's planner may scan a table this small instead
                plan = db.session.execute(db.text("EXPLAIN QUERY PLAN SELECT id FROM automation_wait "
                                                  "WHERE due_at <= :now ORDER BY due_at"), {"now": utcnow()})
                assert "ix_automation_wait_due_at" in " ".join(str(row) for row in plan)
            statements.clear()
            started = time.monotonic()
            assert process_due_waits(now=utcnow() + timedelta(days=4)) == {"fired": 2000}
            elapsed = time.monotonic() - started
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        # In bulk: a few statements for 2,000 contacts (not one or more per contact), whatever the machine's load.
        assert len(statements) < 40, len(statements)
        print(f"2,000 due waits checked and acted on in {elapsed:.1f} s")
        assert db.session.scalar(db.select(db.func.count(AutomationWait.id))) == 0


OCCURRENCE_CONDITIONS = """
    from host_app import hookimpl
    from host_app.api import Condition
    seen = {}
    class Old(Condition):
        key = "old_style"
        label = "Written before occurrences existed"
        def evaluate_bulk(self, contact_ids, params):
            return set(contact_ids)
    class New(Condition):
        key = "new_style"
        label = "Looks at the occurrence"
        def evaluate_bulk(self, contact_ids, params, occurrences=None):
            seen.update(occurrences or {})
            return {cid for cid in contact_ids if occurrences and occurrences[cid].payload.get("vip")}
    @hookimpl
    def automation_conditions(app):
        return [Old(), New()]
"""


def test_conditions_get_the_occurrence_only_when_they_take_it(crm_app_factory):
    import sys

    with throwaway_plugin("occ", OCCURRENCE_CONDITIONS) as plugins:
        app = crm_app_factory(plugins=plugins)
        module = sys.modules["throwaway_occ.plugin"]
        with app.app_context():
            _rule(60, conditions=[{"key": "old_style", "params": {}}, {"key": "new_style", "params": {}}])
            vip, plain = _contacts("vip@example.org", "plain@example.org")
            emit("contact_created", key="k1", contact_ids=[vip], payload={"vip": True,
                                                                          "occurred_at": "2026-12-01T10:00:00+00:00"})
            emit("contact_created", key="k2", contact_ids=[plain],
                 payload={"occurred_at": {str(plain): "2026-11-30T08:00:00+00:00"}})  # one time per contact
            assert process_due_waits(now=utcnow() + timedelta(minutes=2)) == {"fired": 1, "not_matched": 1}
            assert module.seen[vip].event_key == "k1" and module.seen[vip].occurred_at.isoformat() == (
                "2026-12-01T10:00:00+00:00")
            assert module.seen[plain].occurred_at.isoformat() == "2026-11-30T08:00:00+00:00"
            assert _tags("vip@example.org") == ["needs-follow-up"] and _tags("plain@example.org") == []


def test_waits_survive_a_restart_and_a_real_worker_checks_them(crm_app_factory):
    first = crm_app_factory()
    with first.app_context():
        _rule(1)
        _contacts("lead@example.org", tag="lead")
        emit("contact_created", key="created", contact_ids=[db.session.scalar(db.select(Contact.id))])
        db.session.remove()
        db.engine.dispose()
    time.sleep(1.2)
    restarted = crm_app_factory()  # a new app, as every process builds after a restart
    with restarted.app_context():
        enqueue(run_due_waits)
        assert make_worker(restarted, simple=True).work(burst=True)
        assert _tags("lead@example.org") == ["lead", "needs-follow-up"]
        run = db.session.scalar(db.select(AutomationRun))
        assert run.status == "fired" and run.detail.startswith("waited 1 second; evaluated")
