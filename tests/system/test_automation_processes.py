"""Automations across real processes: ``manage.py worker`` and ``manage.py scheduler`` started, killed, started again.

* A wait survives the death of the worker and the scheduler and fires exactly once afterwards.
* An automation deleted during its waits leaves nothing for the worker to do when they would have been due.
* A scheduled run whose slot comes while the previous run is still going on another worker is skipped.
"""
from __future__ import annotations

import textwrap
import time
from datetime import UTC, datetime, timedelta

from host_app import waits
from host_app.bulk_runs import JOB_TIMEOUT, run_bulk_job
from host_app.events import emit
from host_app.extensions import db
from host_app.jobs import enqueue
from host_app.models import AutomationBulkRun, AutomationRule, AutomationRun, AutomationWait, Contact
from host_app.schedules import create_due_runs
from host_app.testing import ADMIN_PASSWORD, log_in
from host_app.triggers import HOURLY
from tests.support.reliability_helpers import SchedulerProcess, WorkerProcess, wait_for

WAIT_SECONDS = 10  # long enough for two ticks on a loaded machine before the processes are killed
TICK = "1"  # the scheduler looks for due waits every second (CRM_AUTOMATION_TICK_SECONDS)


def _rule(**fields) -> int:
    rule = AutomationRule(name="Follow up", match="all", conditions=[{"key": "has_tag", "params": {"tag": "lead"}}],
                          actions=[{"key": "add_tag", "params": {"tag": "needs-follow-up"}}], **fields)
    db.session.add(rule)
    db.session.commit()
    return rule.id


def _runs(app) -> list[tuple[str, str, str]]:
    with app.app_context():
        rows = db.session.execute(
            db.select(Contact.email, AutomationRun.status, AutomationRun.detail)
            .join(Contact, Contact.id == AutomationRun.contact_id).order_by(Contact.email, AutomationRun.id)
        ).all()
        db.session.remove()
        return [tuple(row) for row in rows]


def test_a_wait_fires_once_after_the_worker_and_the_scheduler_were_killed_and_started_again(make_app, tmp_path):
    app = make_app()
    with app.app_context():
        _rule(trigger="contact_created", wait_seconds=WAIT_SECONDS)
        lead, other = Contact(email="lead@client.example"), Contact(email="other@client.example")
        lead.add_tag("lead")
        db.session.add_all([lead, other])
        db.session.commit()
        ids = [lead.id, other.id]
        db.session.remove()

    log = tmp_path / "processes.log"

    def ticks_run() -> int:
        return log.read_text(errors="replace").count("run_due_waits") if log.exists() else 0

    scheduler = SchedulerProcess(app, log, AUTOMATION_TICK_SECONDS=TICK).start()
    worker = WorkerProcess(app, log, AUTOMATION_TICK_SECONDS=TICK).start()
    try:
        wait_for(lambda: ticks_run() > 0, 60, "the worker to run a tick of the scheduler", details=worker.log_tail)
        with app.app_context():
            emit("contact_created", key="created", contact_ids=ids)
            due = db.session.scalar(db.select(db.func.min(AutomationWait.due_at)))
            db.session.remove()
        # The scheduler ticks every second and the worker runs the ticks: the wait is not over yet.
        seen = ticks_run()
        wait_for(lambda: ticks_run() > seen, 60, "another tick during the wait", details=worker.log_tail)
        assert [status for _, status, _ in _runs(app)] == ["waiting", "waiting"]
        # Every process dies during the wait, as in a power cut.
        worker.kill()
        scheduler.kill()
    finally:
        worker.stop()
        scheduler.stop()
    remaining = (due - datetime.now(UTC)).total_seconds()
    assert remaining > 0, "the wait was over before the processes were killed; the test proves nothing"
    time.sleep(remaining + 1)
    assert [status for _, status, _ in _runs(app)] == ["waiting", "waiting"]  # nobody was there to check

    scheduler = SchedulerProcess(app, log, AUTOMATION_TICK_SECONDS=TICK).start()
    worker = WorkerProcess(app, log, AUTOMATION_TICK_SECONDS=TICK).start()
    try:
        # A worker killed while it held the waits' lock holds them back until the lock expires.
        wait_for(lambda: "waiting" not in {status for _, status, _ in _runs(app)}, waits.LOCK_TIMEOUT + 60,
                 "the restarted worker to check the due waits", details=worker.log_tail)
        time.sleep(3)  # three more ticks, each of which could fire the wait again
    finally:
        worker.stop()
        scheduler.stop()
    assert _runs(app) == [
        ("lead@client.example", "fired", f"waited {WAIT_SECONDS} seconds; evaluated: conditions met; "
                                         "tagged needs-follow-up"),
        ("other@client.example", "not_matched", f"waited {WAIT_SECONDS} seconds; evaluated: conditions not met"),
    ]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(AutomationWait.id))) == 0
        tags = {c.email: c.tags for c in db.session.scalars(db.select(Contact))}
        assert tags == {"lead@client.example": ["lead", "needs-follow-up"], "other@client.example": []}


def test_deleting_an_automation_during_its_waits_drops_them_and_the_worker_then_does_nothing(make_app, admin,
                                                                                             tmp_path):
    app = make_app()
    with app.app_context():
        rule_id = _rule(trigger="contact_created", wait_seconds=2)
        lead = Contact(email="lead@client.example")
        lead.add_tag("lead")
        db.session.add(lead)
        db.session.commit()
        emit("contact_created", key="created", contact_ids=[lead.id])
        assert db.session.scalar(db.select(db.func.count(AutomationWait.id))) == 1
        db.session.remove()
    client = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
    assert client.post(f"/automations/{rule_id}/delete").status_code == 302
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(AutomationWait.id))) == 0
        db.session.remove()
    time.sleep(2.5)  # the wait would be over now

    log = tmp_path / "processes.log"
    scheduler = SchedulerProcess(app, log, AUTOMATION_TICK_SECONDS=TICK).start()
    worker = WorkerProcess(app, log, AUTOMATION_TICK_SECONDS=TICK).start()
    try:
        wait_for(lambda: log.exists() and log.read_text(errors="replace").count("Job OK") >= 4, 60,
                 "the worker to run a few ticks", details=worker.log_tail)
    finally:
        worker.stop()
        scheduler.stop()
    assert _runs(app) == []
    with app.app_context():
        assert db.session.scalar(db.select(Contact)).tags == ["lead"]


# A condition that blocks until the test says so, in the worker processes: a package on disk they import.
SLOW_PLUGIN = {
    "__init__.py": "",
    "__manifest__.py": """
        MANIFEST = {"name": "slow", "version": "0.0.1", "description": "a slow condition for tests",
                    "depends": [], "migrations": None}
    """,
    "plugin.py": """
        import os
        import time
        from pathlib import Path

        from host_app import hookimpl
        from host_app.api import Condition

        class Slow(Condition):
            key = "slow"
            label = "Slow"

            def evaluate_bulk(self, contact_ids, params):
                folder = Path(os.environ["SLOW_CONDITION_DIR"])
                with open(folder / "evaluations", "a") as log:
                    log.write(f"{os.getpid()}\\n")
                deadline = time.monotonic() + 60
                while not (folder / "release").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                return set(contact_ids)

        @hookimpl
        def automation_conditions(app):
            return [Slow()]
    """,
}


def test_a_scheduled_run_due_while_the_previous_one_goes_on_another_worker_is_skipped(make_app, tmp_path,
                                                                                       monkeypatch):
    package = tmp_path / "slow_condition_plugin"
    package.mkdir()
    for name, source in SLOW_PLUGIN.items():
        (package / name).write_text(textwrap.dedent(source))
    gate = tmp_path / "gate"
    gate.mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the workers import the plugin from there too
    monkeypatch.setenv("SLOW_CONDITION_DIR", str(gate))
    plugins = '{"slow": "slow_condition_plugin"}'
    app = make_app(plugins={"slow": "slow_condition_plugin"})
    now = datetime(2026, 12, 3, 10, 30, tzinfo=UTC)
    with app.app_context():
        for i in range(3):
            db.session.add(Contact(email=f"lead{i}@client.example"))
        db.session.commit()
        rule_id = _rule(trigger=HOURLY, created_at=now - timedelta(days=1))
        db.session.get(AutomationRule, rule_id).conditions = [{"key": "slow", "params": {}}]
        db.session.commit()
        [first] = create_due_runs(now)
        first_id = first.id

    log = tmp_path / "workers.log"
    workers = [WorkerProcess(app, log, PLUGINS=plugins).start() for _ in range(2)]
    try:
        with app.app_context():
            enqueue(run_bulk_job, first_id, job_id=f"automation-bulk-{first_id}", job_timeout=JOB_TIMEOUT)
        wait_for(lambda: (gate / "evaluations").exists(), 60, "the first run to start evaluating",
                 details=workers[0].log_tail)
        # The next hour's slot comes while the first run is still going: the other worker takes it.
        with app.app_context():
            [second] = create_due_runs(now + timedelta(hours=1))
            second_id = second.id
            enqueue(run_bulk_job, second_id, job_id=f"automation-bulk-{second_id}", job_timeout=JOB_TIMEOUT)

        def status(run_id: int) -> str:
            with app.app_context():
                value = db.session.get(AutomationBulkRun, run_id).status
                db.session.remove()
                return value

        wait_for(lambda: status(second_id) == "skipped", 60, "the overlapping run to be skipped",
                 details=workers[1].log_tail)
        assert status(first_id) == "running"
        (gate / "release").touch()
        wait_for(lambda: status(first_id) == "done", 60, "the first run to finish", details=workers[0].log_tail)
        # The lock went with the first run: the slot after that runs.
        with app.app_context():
            [third] = create_due_runs(now + timedelta(hours=2))
            third_id = third.id
            enqueue(run_bulk_job, third_id, job_id=f"automation-bulk-{third_id}", job_timeout=JOB_TIMEOUT)
        wait_for(lambda: status(third_id) == "done", 60, "the next slot's run", details=workers[0].log_tail)
    finally:
        for worker in workers:
            worker.stop()
    with app.app_context():
        runs = {r.id: r for r in db.session.scalars(db.select(AutomationBulkRun))}
        assert (runs[first_id].acted, runs[second_id].acted, runs[third_id].acted) == (3, 0, 3)
        assert runs[second_id].error == "The previous run of this automation was still going."
    assert len((gate / "evaluations").read_text().splitlines()) == 2  # the skipped run evaluated nothing
