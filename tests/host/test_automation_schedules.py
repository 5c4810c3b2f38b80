"""Automations on a schedule: slots in the instance's time zone, one run per slot, overlapping runs skipped."""
from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from host_app.bulk_runs import run_bulk_job
from host_app.extensions import db
from host_app.jobs import enqueue, make_scheduler, make_worker
from host_app.models import AutomationBulkRun, AutomationRule, Contact
from host_app.schedules import create_due_runs, latest_slot, parse_daily_at, run_due_schedules
from host_app.triggers import DAILY, HOURLY
from tests.support.throwaway import throwaway_plugin

PARIS = ZoneInfo("Europe/Paris")


def _rule(trigger: str, daily_at: str | None = None, conditions=None, created=None) -> AutomationRule:
    rule = AutomationRule(
        name="Scheduled", trigger=trigger, match="all", daily_at=daily_at,
        conditions=conditions if conditions is not None else [{"key": "has_tag", "params": {"tag": "lead"}}],
        actions=[{"key": "add_tag", "params": {"tag": "followed-up"}}],
        created_at=created or datetime(2026, 1, 1, tzinfo=UTC),
    )
    db.session.add(rule)
    db.session.commit()
    return rule


def _leads(n: int) -> None:
    for i in range(n):
        contact = Contact(email=f"lead{i}@example.org")
        contact.add_tag("lead")
        db.session.add(contact)
    db.session.add(Contact(email="other@example.org"))
    db.session.commit()


def test_slots_are_times_of_day_in_the_instance_time_zone():
    daily = AutomationRule(trigger=DAILY, daily_at="09:00")
    hourly = AutomationRule(trigger=HOURLY)
    utc = UTC
    # 09:30 in Paris (winter, UTC+1): today's 09:00 Paris is 08:00 UTC.
    assert latest_slot(daily, datetime(2026, 12, 3, 8, 30, tzinfo=utc), PARIS) == datetime(2026, 12, 3, 8, tzinfo=utc)
    # 08:30 in Paris: not yet today, so yesterday's.
    assert latest_slot(daily, datetime(2026, 12, 3, 7, 30, tzinfo=utc), PARIS) == datetime(2026, 12, 2, 8, tzinfo=utc)
    # Summer time (UTC+2): 09:00 Paris is 07:00 UTC.
    assert latest_slot(daily, datetime(2026, 7, 1, 12, 0, tzinfo=UTC), PARIS) == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)
    assert latest_slot(hourly, datetime(2026, 12, 3, 8, 59, tzinfo=utc), PARIS) == datetime(2026, 12, 3, 8, tzinfo=utc)
    assert latest_slot(AutomationRule(trigger="manual"), datetime(2026, 12, 3, tzinfo=UTC), PARIS) is None
    assert parse_daily_at("9:05").strftime("%H:%M") == "09:05"
    for bad in ("24:00", "9", "09:60", "nine", ""):
        with pytest.raises(ValueError, match="HH:MM"):
            parse_daily_at(bad)


def test_the_scheduler_starts_each_slot_once_and_a_real_worker_runs_it(crm_app_factory):
    app = crm_app_factory(TIME_ZONE="Europe/Paris")
    assert "host_app.schedules.run_due_schedules" in [j.func_name for j in make_scheduler(app).get_jobs()]
    with app.app_context():
        _leads(3)
        rule_id = _rule(DAILY, "09:00").id
        enqueue(run_due_schedules)
        assert make_worker(app, simple=True).work(burst=True)  # the tick, then the run it queued
        run = db.session.scalar(db.select(AutomationBulkRun))
        assert (run.origin, run.status, run.evaluated, run.matched, run.acted) == ("schedule", "done", 4, 3, 3)
        assert datetime.fromisoformat(run.slot).astimezone(PARIS).strftime("%H:%M") == "09:00"
        tagged = db.session.scalars(db.select(Contact).where(Contact.email.like("lead%"))).all()
        assert all("followed-up" in c.tags for c in tagged)
        # The same slot again, as the next tick or a second scheduler sees it: nothing new.
        assert run_due_schedules() == 0
        assert db.session.scalar(db.select(db.func.count(AutomationBulkRun.id))) == 1
        # A disabled rule is not run on its next slot.
        db.session.get(AutomationRule, rule_id).enabled = False
        db.session.commit()
        assert create_due_runs(datetime.now(UTC) + timedelta(days=1)) == []


def test_a_slot_from_before_the_rule_existed_is_not_run(app):
    with app.app_context():
        now = datetime(2026, 12, 3, 10, 30, tzinfo=UTC)
        _rule(HOURLY, created=now - timedelta(minutes=10))
        assert create_due_runs(now) == []
        assert [r.slot for r in create_due_runs(now + timedelta(hours=1))] == ["2026-12-03T11:00:00+00:00"]


SLOW_CONDITION = """
    import threading
    from host_app import hookimpl
    from host_app.api import Condition
    entered, release = threading.Event(), threading.Event()
    class Slow(Condition):
        key = "slow"
        label = "Slow"
        def evaluate_bulk(self, contact_ids, params):
            entered.set()
            assert release.wait(30), "the test never released the slow condition"
            return set(contact_ids)
    @hookimpl
    def automation_conditions(app):
        return [Slow()]
"""


def test_a_scheduled_run_due_while_the_previous_one_is_still_going_is_skipped(crm_app_factory):
    with throwaway_plugin("slow", SLOW_CONDITION) as plugins:
        app = crm_app_factory(plugins=plugins)
        slow = sys.modules["throwaway_slow.plugin"]
        now = datetime(2026, 12, 3, 10, 30, tzinfo=UTC)
        with app.app_context():
            _leads(2)
            _rule(HOURLY, conditions=[{"key": "slow", "params": {}}])
            [first] = create_due_runs(now)
            first_id = first.id

        def run_first():
            with app.app_context():
                run_bulk_job(first_id)

        going = threading.Thread(target=run_first)
        going.start()
        try:
            assert slow.entered.wait(30), "the first run never started"
            with app.app_context():
                [second] = create_due_runs(now + timedelta(hours=1))
                result = run_bulk_job(second.id)
                assert (result["status"], result["acted"]) == ("skipped", 0)
                assert "previous run of this automation was still going" in result["error"]
        finally:
            slow.release.set()
            going.join(30)
        with app.app_context():
            first = db.session.get(AutomationBulkRun, first_id)
            assert (first.status, first.acted) == ("done", 3)
            # The lock went with the first run: the slot after runs.
            [third] = create_due_runs(now + timedelta(hours=2))
            assert run_bulk_job(third.id)["status"] == "done"


def test_the_builder_saves_a_daily_time_and_refuses_a_bad_one(app, admin_client):
    data = {"name": "Morning", "trigger": DAILY, "match": "all", "op": "save", "enabled": "y",
            "act-0-key": "add_tag", "act-0-tag": "morning"}
    refused = admin_client.post("/automations/new", data={**data, "daily_at": "25:00"})
    assert refused.status_code == 200 and "Enter the time as HH:MM (24-hour)" in refused.get_data(as_text=True)
    assert admin_client.post("/automations/new", data={**data, "daily_at": "7:45"}).status_code == 302
    with app.app_context():
        rule = db.session.scalar(db.select(AutomationRule))
        assert (rule.trigger, rule.daily_at) == (DAILY, "07:45")
    page = admin_client.get("/automations/").get_data(as_text=True)
    assert "Every day at 07:45" in page and f'href="/automations/{rule.id}/run"' in page
