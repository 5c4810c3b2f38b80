"""Running an automation by hand over many contacts: audiences, preview, the RQ job, its progress, the CLI."""
from __future__ import annotations

import json
import re

from host_app.bulk_runs import execute, run_bulk_job
from host_app.extensions import db
from host_app.jobs import make_worker
from host_app.models import Agent, AutomationBulkRun, AutomationRule, AutomationRun, Contact
from tests.support.throwaway import throwaway_plugin


def _contacts(n: int, tag: str | None = None, owner_id: int | None = None, prefix: str = "c") -> list[int]:
    rows = [Contact(email=f"{prefix}{i}@example.org", owner_id=owner_id) for i in range(n)]
    if tag:
        for row in rows:
            row.add_tag(tag)
    db.session.add_all(rows)
    db.session.commit()
    return [row.id for row in rows]


def _rule(trigger: str = "manual", conditions=None, tag: str = "follow-up", enabled: bool = True) -> int:
    rule = AutomationRule(
        name="Follow up", trigger=trigger, match="all", enabled=enabled,
        conditions=conditions if conditions is not None else [{"key": "has_tag", "params": {"tag": "lead"}}],
        actions=[{"key": "add_tag", "params": {"tag": tag}}],
    )
    db.session.add(rule)
    db.session.commit()
    return rule.id


def _tagged(tag: str) -> set[str]:
    return {c.email for c in db.session.scalars(db.select(Contact)) if tag in c.tags}


def test_run_now_previews_then_acts_on_a_real_worker_with_progress_and_a_run_log(app, admin_client):
    with app.app_context():
        leads = _contacts(3, tag="lead")
        _contacts(5, prefix="other")
        rule_id = _rule()
    page = admin_client.get("/automations/").get_data(as_text=True)
    assert f'href="/automations/{rule_id}/run"' in page
    assert f'href="/automations/{rule_id}/run"' in admin_client.get(f"/automations/{rule_id}").get_data(as_text=True)

    preview = admin_client.post(f"/automations/{rule_id}/run", data={"audience": "all:", "op": "preview"})
    assert "<strong>3 of 8</strong> contacts match." in preview.get_data(as_text=True)
    with app.app_context():  # a preview changes nothing
        assert _tagged("follow-up") == set()
        assert db.session.scalar(db.select(db.func.count(AutomationBulkRun.id))) == 0

    started = admin_client.post(f"/automations/{rule_id}/run", data={"audience": "all:", "op": "run"})
    assert started.status_code == 302
    run_id = int(re.search(r"/automations/bulk-runs/(\d+)$", started.headers["Location"]).group(1))
    queued = admin_client.get(f"/automations/bulk-runs/{run_id}.json").get_json()
    assert (queued["status"], queued["finished"]) == ("queued", False)
    assert "Waiting for a worker" in admin_client.get(f"/automations/bulk-runs/{run_id}").get_data(as_text=True)

    with app.app_context():  # the forking worker in an app context, as `manage.py worker` runs it
        assert make_worker(app).work(burst=True)

    done = admin_client.get(f"/automations/bulk-runs/{run_id}.json").get_json()
    assert {k: done[k] for k in ("status", "evaluated", "matched", "acted", "failed", "finished")} == {
        "status": "done", "evaluated": 8, "matched": 3, "acted": 3, "failed": 0, "finished": True}
    with app.app_context():
        assert _tagged("follow-up") == {f"c{i}@example.org" for i in range(3)}
        logged = db.session.scalars(db.select(AutomationRun).where(AutomationRun.event_key == f"bulk-{run_id}")).all()
        assert sorted(r.contact_id for r in logged) == leads and {r.status for r in logged} == {"fired"}
    log_page = admin_client.get(f"/automations/runs?rule={rule_id}").get_data(as_text=True)
    assert "Runs over many contacts" in log_page and "All contacts" in log_page
    assert "Done: 8 evaluated, 3 matched, 3 acted on." in admin_client.get(
        f"/automations/bulk-runs/{run_id}").get_data(as_text=True)


def test_audiences_tag_and_owner_narrow_the_contacts(app, admin_client):
    with app.app_context():
        ann = Agent(email="ann@team.example", name="Ann", password_hash="x")
        db.session.add(ann)
        db.session.commit()
        _contacts(2, tag="lead", owner_id=ann.id, prefix="ann")
        _contacts(4, tag="lead", prefix="nobody")
        _contacts(1, prefix="vip")
        vip = db.session.scalar(db.select(Contact).where(Contact.email == "vip0@example.org"))
        vip.add_tag("vip")
        db.session.commit()
        rule_id = _rule()
        ann_id = ann.id
    page = admin_client.get(f"/automations/{rule_id}/run").get_data(as_text=True)
    assert '<option value="tag:vip">Tag: vip</option>' in page
    assert f'<option value="owner:{ann_id}">Owner: Ann &lt;ann@team.example&gt;</option>' in page
    owner = admin_client.post(f"/automations/{rule_id}/run", data={"audience": f"owner:{ann_id}", "op": "preview"})
    assert "<strong>2 of 2</strong> contacts match." in owner.get_data(as_text=True)
    tag = admin_client.post(f"/automations/{rule_id}/run", data={"audience": "tag:vip", "op": "preview"})
    assert "<strong>0 of 1</strong> contacts match." in tag.get_data(as_text=True)


def test_only_enabled_rules_run_by_hand_can_be_run_now(app, admin_client, runner):
    with app.app_context():
        _contacts(1, tag="lead")
        on_event = _rule(trigger="contact_created")
        disabled = _rule(enabled=False)
    for rule_id, words in ((on_event, "runs on its trigger, not by hand"), (disabled, "is disabled")):
        assert f'href="/automations/{rule_id}/run"' not in admin_client.get("/automations/").get_data(as_text=True)
        page = admin_client.post(f"/automations/{rule_id}/run", data={"audience": "all:", "op": "run"})
        assert page.status_code == 200 and words in page.get_data(as_text=True)
        result = runner.invoke(args=["automations", "run", str(rule_id)])
        assert result.exit_code == 1 and words in result.output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(AutomationBulkRun.id))) == 0


def test_cli_runs_dry_and_for_real_and_refuses_unknown_audiences(app, runner):
    with app.app_context():
        _contacts(4, tag="lead")
        _contacts(2, prefix="x")
        rule_id = _rule()
    dry = runner.invoke(args=["automations", "run", str(rule_id), "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output) == {"evaluated": 6, "matched": 4, "acted": 0, "failed": 0, "dry_run": True}
    with app.app_context():
        assert _tagged("follow-up") == set()
    real = runner.invoke(args=["automations", "run", str(rule_id), "--audience", "tag:lead"])
    assert real.exit_code == 0, real.output
    assert real.output == "4 evaluated, 4 matched, 4 acted\n"
    with app.app_context():
        assert len(_tagged("follow-up")) == 4
        run = db.session.scalar(db.select(AutomationBulkRun))
        assert (run.origin, run.status, run.audience_label) == ("command", "done", "Tag: lead")
    for audience, words in (("planet:mars", "no audience 'planet'"), ("tag:nope", "Tag has no 'nope'"),
                            ("owner:abc", "Owner has no 'abc'")):
        bad = runner.invoke(args=["automations", "run", str(rule_id), "--audience", audience])
        assert bad.exit_code == 1 and words in bad.output, bad.output
    missing = runner.invoke(args=["automations", "run", "999"])
    assert missing.exit_code == 1 and "no automation 999" in missing.output


def test_a_run_started_again_acts_on_each_contact_once(app):
    """A job that RQ runs a second time (a worker killed mid-run) goes on where it stopped."""
    from host_app import bulk_runs

    with app.app_context():
        _contacts(3, tag="lead")
        rule = db.session.get(AutomationRule, _rule(conditions=[]))
        rule.actions = [{"key": "set_attribute", "params": {"name": "runs", "value": "x"}}]
        db.session.commit()
        run = bulk_runs.create(rule, "all:", origin="hand")
        assert execute(run)["acted"] == 3
        first = {r.id for r in db.session.scalars(db.select(AutomationRun))}
        run.status = "queued"
        db.session.commit()
        again = run_bulk_job(run.id)
        assert (again["status"], again["acted"], again["matched"]) == ("done", 3, 3)
        assert {r.id for r in db.session.scalars(db.select(AutomationRun))} == first


def test_a_condition_whose_plugin_is_gone_fails_the_run_in_plain_words(app, admin_client):
    from host_app import bulk_runs

    with app.app_context():
        _contacts(2, tag="lead")
        rule = db.session.get(AutomationRule, _rule(conditions=[{"key": "gone_plugin_condition", "params": {}}]))
        preview = admin_client.post(f"/automations/{rule.id}/run", data={"audience": "all:", "op": "preview"})
        assert "condition &#39;gone_plugin_condition&#39; is not available" in preview.get_data(as_text=True)
        run = bulk_runs.create(rule, "all:", origin="hand")
        result = execute(run)
        assert result["status"] == "failed" and "gone_plugin_condition" in result["error"]
        assert _tagged("follow-up") == set()


def test_a_queue_that_cannot_be_reached_fails_the_run_and_says_so(crm_app_factory):
    app = crm_app_factory(REDIS_URL="redis://127.0.0.1:1/0")
    from host_app import bulk_runs

    with app.app_context():
        _contacts(1, tag="lead")
        rule = db.session.get(AutomationRule, _rule())
        run = bulk_runs.start(rule, "all:")
        assert run.status == "failed" and "could not be reached, so nothing ran" in run.error
        assert _tagged("follow-up") == set()


def test_hook_automation_audiences(crm_app_factory):
    source = """
        from host_app import hookimpl
        from host_app.api import Audience, Contact, db
        class Domain(Audience):
            key = "domain"
            label = "Domain"
            def choices(self):
                return [("acme.com", "acme.com")]
            def contact_ids(self, value):
                return db.session.scalars(db.select(Contact.id).where(Contact.email.like("%@" + value)))
        @hookimpl
        def automation_audiences(app):
            return [Domain()]
    """
    with throwaway_plugin("domains", source) as plugins:
        app = crm_app_factory(plugins=plugins)
        with app.app_context():
            from host_app.bulk_runs import audience_options

            db.session.add_all([Contact(email="a@acme.com"), Contact(email="b@other.org")])
            db.session.commit()
            rule_id = _rule(conditions=[])
            assert ("domain:acme.com", "Domain: acme.com") in audience_options()
        result = app.test_cli_runner().invoke(args=["automations", "run", str(rule_id), "--audience",
                                                    "domain:acme.com", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["acted"] == 1
        with app.app_context():
            assert _tagged("follow-up") == {"a@acme.com"}
        disabled = crm_app_factory(plugins=plugins, disabled=["domains"])
        with disabled.app_context():
            from host_app.bulk_runs import audience_options

            assert not any(spec.startswith("domain:") for spec, _ in audience_options())
