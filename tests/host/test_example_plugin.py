"""The example third-party plugin (examples/crm_condition_email_domain), installed like any other.

It is pip-installed (editable) next to the host by ``make install``; these tests
check the host finds it through its entry point and that its condition works
everywhere a condition shows up: the builder, the CLI, evaluation, automations.
The example's own tests (examples/*/tests) are not under ``testpaths``; they run
once, on purpose, in ``test_example_own_test_suite_passes``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from host_app.extensions import db
from host_app.models import AutomationRule, Contact

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "crm_condition_email_domain"
KEY = "email_domain"


def _contacts(*emails: str) -> dict[str, int]:
    rows = [Contact(email=e) for e in emails]
    db.session.add_all(rows)
    db.session.commit()
    return {c.email: c.id for c in rows}


def test_example_is_installed_as_a_plugin(runner):
    found = {ep.name: ep.value for ep in entry_points(group="host_app.plugins")}
    assert found.get(KEY) == "crm_condition_email_domain", "run `make install` (pip install -e examples/...)"
    result = runner.invoke(args=["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    info = next(p for p in json.loads(result.output) if p["name"] == KEY)
    assert (info["status"], info["version"], info["error"]) == ("loaded", "1.0.0", None)


def test_example_condition_is_listed_by_the_cli(runner):
    result = runner.invoke(args=["conditions", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert {"key": KEY, "label": "E-mail domain", "plugin": KEY} in json.loads(result.output)


def test_example_condition_form_shows_in_the_automation_builder(admin_client):
    page = admin_client.get("/automations/new").get_data(as_text=True)
    assert f'<option value="{KEY}">E-mail domain</option>' in page
    response = admin_client.post("/automations/new", data={
        "name": "Acme people", "trigger": "manual", "match": "all", "op": "add_condition", "new_condition": KEY,
    })
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f'name="cond-0-key" value="{KEY}"' in html
    assert 'name="cond-0-match"' in html and 'name="cond-0-domains"' in html
    assert "is not one of" in html and "Subdomains (eu.acme.com) count too" in html


def test_example_form_validates_in_the_builder_and_the_rule_runs(app, admin_client):
    data = {
        "name": "Acme people", "trigger": "manual", "match": "all", "enabled": "y", "op": "save",
        "cond-0-key": KEY, "cond-0-match": "is_one_of", "cond-0-domains": "not a domain!",
        "act-0-key": "add_tag", "act-0-tag": "acme",
    }
    refused = admin_client.post("/automations/new", data=data)
    assert refused.status_code == 200 and "Not a domain name" in refused.get_data(as_text=True)
    assert admin_client.post("/automations/new", data={**data, "cond-0-domains": "acme.com"}).status_code == 302
    with app.app_context():
        rule = db.session.scalar(db.select(AutomationRule))
        assert rule.conditions == [{"key": KEY, "params": {"match": "is_one_of", "domains": "acme.com"}}]
        ids = _contacts("ann@acme.com", "bob@other.example")
        from host_app.events import emit

        emit("manual", key="test-run", contact_ids=ids.values())
        tags = {c.email: c.tags for c in db.session.scalars(db.select(Contact))}
        assert tags == {"ann@acme.com": ["acme"], "bob@other.example": []}


@pytest.mark.parametrize(
    ("params", "valid"),
    [
        ('{"match": "is_one_of", "domains": "acme.com, example.org"}', True),
        ('{"match": "is_one_of", "domains": ""}', False),
        ('{"match": "is_one_of", "domains": "acme_corp.com"}', False),
        ('{"match": "never", "domains": "acme.com"}', False),
    ],
)
def test_example_parameters_are_checked_by_the_cli(app, runner, params, valid):
    with app.app_context():
        _contacts("ann@acme.com")
    result = runner.invoke(args=["conditions", "eval", KEY, "--contact", "ann@acme.com", "--params", params])
    if valid:
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == {"result": True}
    else:
        assert result.exit_code != 0 and "invalid parameters" in result.output


def test_example_single_and_bulk_evaluation_agree(app):
    from host_app.automation_engine import conditions

    with app.app_context():
        condition = conditions()[KEY]
        emails = [f"user{i}@{d}" for i, d in enumerate(
            ["acme.com", "eu.acme.com", "ACME.COM", "notacme.com", "acme.com.evil.example", "example.org"] * 5)]
        ids = _contacts(*[e.lower() for e in emails])
        for params in [
            {"match": "is_one_of", "domains": "acme.com"},
            {"match": "is_not_one_of", "domains": "acme.com"},
            {"match": "is_one_of", "domains": "example.org, eu.acme.com"},
        ]:
            bulk = condition.evaluate_bulk(ids.values(), params)
            single = {c.id for c in db.session.scalars(db.select(Contact)) if condition.evaluate(c, params)}
            assert bulk == single
        assert len(condition.evaluate_bulk(ids.values(), {"match": "is_one_of", "domains": "acme.com"})) == 15


def test_example_own_test_suite_passes():
    """What a plugin author runs: `pytest` in the plugin's folder, with the host's fixtures."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"],
        cwd=EXAMPLE_DIR, env=dict(os.environ), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


# ---------------------------------------------------------------------------- the walk-through stays true

WALKTHROUGH = Path(__file__).resolve().parents[2] / "docs" / "writing-condition-plugins.md"
_FILE_BLOCK = re.compile(r"\*\*`([^`]+)`\*\*\n\n```\w*\n(.*?)```", re.S)
_PYTHON_BLOCK = re.compile(r"(?<!\*\*\n\n)```python\n(.*?)```", re.S)


def test_walkthrough_shows_every_example_file_verbatim():
    text = WALKTHROUGH.read_text()
    shown = dict(_FILE_BLOCK.findall(text))
    package = "crm_condition_email_domain"
    expected = {"pyproject.toml", f"{package}/__manifest__.py", f"{package}/condition.py", f"{package}/plugin.py",
                "tests/test_email_domain_condition.py"}
    assert set(shown) == expected
    for path, code in shown.items():
        assert code == (EXAMPLE_DIR / path).read_text(), f"docs show an outdated {path}"


def test_walkthrough_python_snippets_run(app):
    """Snippets that are not whole files run as they are, and their forms build inside the app."""
    from wtforms import Form

    snippets = [code for code in _PYTHON_BLOCK.findall(WALKTHROUGH.read_text())
                if code not in dict(_FILE_BLOCK.findall(WALKTHROUGH.read_text())).values()]
    assert snippets
    with app.app_context():
        for code in snippets:
            namespace: dict = {}
            exec(compile(code, str(WALKTHROUGH), "exec"), namespace)
            forms = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, Form) and v is not Form]
            for form_class in forms:
                form_class()
