"""Tests of the example plugin, written with the host's pytest fixtures (no conftest needed).

Installing the host registers its pytest plugin (entry point ``pytest11: host_app``),
so ``crm_app_factory``, ``app``, ``client``, ``runner``, ``admin_client`` ... are
available here as in the host's own suite. Run: ``pytest`` in this folder.
"""
from __future__ import annotations

import json

import pytest
from crm_condition_email_domain.condition import EmailDomainCondition, EmailDomainForm

from host_app.api import Contact, db

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
