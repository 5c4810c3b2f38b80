"""Tests of the example plugin, written with the host's pytest fixtures (no conftest needed).

Installing the host registers its pytest plugin (entry point ``pytest11: host_app``),
so ``crm_app_factory``, ``app``, ``client``, ``runner``, ``admin_client`` ... are
available here as in the host's own suite. Run: ``pytest`` in this folder.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from crm_condition_email_domain.condition import EmailDomainCondition, EmailDomainForm

from host_app.api import AutomationRule, Contact, db
from host_app.testing import run_jobs

# Load only this plugin, whatever else is installed next to it.
PLUGINS = {"email_domain": "crm_condition_email_domain"}


@pytest.fixture
def plugin_app(crm_app_factory):
    app = crm_app_factory(plugins=PLUGINS)
    with app.app_context():
        yield app


def add_contacts(*emails: str) -> dict[str, int]:
    contacts = [Contact(email=e) for e in emails]
    db.session.add_all(contacts)
    db.session.commit()
    return {c.email: c.id for c in contacts}


def test_the_host_loads_the_plugin(plugin_app):
    info = plugin_app.extensions["plugins"].plugins["email_domain"]
    assert info.loaded, info.error
    from host_app.api import conditions

    assert isinstance(conditions()["email_domain"], EmailDomainCondition)


@pytest.mark.parametrize(
    ("data", "valid"),
    [
        ({"match": "is_one_of", "domains": "acme.com"}, True),
        ({"match": "is_not_one_of", "domains": "Acme.com, @example.org; eu.example.net"}, True),
        ({"match": "is_one_of", "domains": ""}, False),
        ({"match": "is_one_of", "domains": "not a domain"}, False),
        ({"match": "is_one_of", "domains": "acme_corp.com"}, False),
        ({"match": "sometimes", "domains": "acme.com"}, False),
    ],
)
def test_form_validates_parameters(data, valid):
    assert EmailDomainForm(data=data).validate() is valid


def test_single_and_bulk_evaluation_agree(plugin_app):
    ids = add_contacts("ann@acme.com", "bob@eu.acme.com", "cid@notacme.com", "dee@example.org",
                       "eve@acme.com.evil.example")
    condition = EmailDomainCondition()
    for params, expected in [
        ({"match": "is_one_of", "domains": "acme.com"}, {"ann@acme.com", "bob@eu.acme.com"}),
        ({"match": "is_not_one_of", "domains": "acme.com, example.org"},
         {"cid@notacme.com", "eve@acme.com.evil.example"}),
    ]:
        bulk = condition.evaluate_bulk(ids.values(), params)
        single = {c.id for c in db.session.scalars(db.select(Contact)) if condition.evaluate(c, params)}
        assert bulk == single == {ids[e] for e in expected}


def test_cli_evaluates_the_condition(crm_app_factory):
    app = crm_app_factory(plugins=PLUGINS)
    with app.app_context():
        add_contacts("ann@acme.com")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["conditions", "eval", "email_domain", "--contact", "ann@acme.com",
                                 "--params", json.dumps({"match": "is_one_of", "domains": "acme.com"})])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"result": True}


def add_rule(trigger: str, **fields) -> int:
    """An automation "if the e-mail domain is acme.com, tag the contact acme", as the builder saves it."""
    rule = AutomationRule(name="Acme", trigger=trigger, match="all",
                          conditions=[{"key": "email_domain", "params": {"match": "is_one_of", "domains": "acme.com"}}],
                          actions=[{"key": "add_tag", "params": {"tag": "acme"}}], **fields)
    db.session.add(rule)
    db.session.commit()
    return rule.id


def tagged() -> set[str]:
    return {c.email for c in db.session.scalars(db.select(Contact)) if "acme" in c.tags}


def test_a_run_by_hand_evaluates_the_condition_over_all_contacts_in_bulk(plugin_app, monkeypatch):
    emails = [f"lead{i}@acme.com" for i in range(300)] + [f"other{i}@example.org" for i in range(200)]
    add_contacts(*emails)
    calls = []
    original = EmailDomainCondition.evaluate_bulk

    def counted(self, contact_ids, params):
        ids = list(contact_ids)
        calls.append(len(ids))
        return original(self, ids, params)

    monkeypatch.setattr(EmailDomainCondition, "evaluate_bulk", counted)
    rule_id = add_rule("manual")
    runner = plugin_app.test_cli_runner()
    result = runner.invoke(args=["automations", "run", str(rule_id), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"evaluated": 500, "matched": 300, "acted": 300, "failed": 0,
                                         "dry_run": False}
    assert calls == [500]  # the whole audience in one call
    assert tagged() == {e for e in emails if e.endswith("@acme.com")}


def test_a_scheduled_run_evaluates_the_condition_in_bulk_on_a_worker(plugin_app, redis_url):
    add_contacts("ann@acme.com", "bob@eu.acme.com", "cid@example.org")
    add_rule("schedule_hourly", created_at=datetime.now(UTC) - timedelta(days=1))
    # What the scheduler does every minute: the host's recurring job starts the runs that are due...
    manager = plugin_app.extensions["plugins"]
    jobs = {job.name: job for result in manager.hook.recurring_jobs(app=plugin_app) for job in result or []}
    jobs["automations: start the scheduled runs that are due"].func()
    # ... and a worker runs them.
    assert run_jobs(plugin_app)
    assert tagged() == {"ann@acme.com", "bob@eu.acme.com"}
