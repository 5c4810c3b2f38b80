"""Automations as data: `automations export` and `automations import`, all or nothing, plain refusals."""
from __future__ import annotations

import json

from host_app.extensions import db
from host_app.models import AutomationRule

FOLLOW_UP = {
    "name": "Follow up", "trigger": "contact_created", "daily_at": None, "wait_seconds": 259200, "match": "any",
    "enabled": True, "conditions": [{"key": "has_tag", "params": {"tag": "lead"}}],
    "actions": [{"key": "add_tag", "params": {"tag": "needs-follow-up"}},
                {"key": "set_attribute", "params": {"name": "stage", "value": "follow-up"}}],
}
MORNING = {**FOLLOW_UP, "name": "Morning", "trigger": "schedule_daily", "daily_at": "07:30", "wait_seconds": 0,
           "match": "all", "enabled": False}


def _count() -> int:
    return db.session.scalar(db.select(db.func.count(AutomationRule.id)))


def test_export_then_import_gives_the_same_automations(app, runner, tmp_path):
    path = tmp_path / "automations.json"
    path.write_text(json.dumps([FOLLOW_UP, MORNING]))
    imported = runner.invoke(args=["automations", "import", str(path)])
    assert imported.exit_code == 0, imported.output
    assert [r["name"] for r in json.loads(imported.output)] == ["Follow up", "Morning"]
    exported = runner.invoke(args=["automations", "export"])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.output) == [FOLLOW_UP, MORNING]
    with app.app_context():
        morning_id = db.session.scalar(db.select(AutomationRule.id).where(AutomationRule.name == "Morning"))
    one = runner.invoke(args=["automations", "export", str(morning_id)])
    assert json.loads(one.output) == [MORNING]
    # Round trip: what export printed imports again as new automations.
    path.write_text(exported.output)
    assert runner.invoke(args=["automations", "import", str(path)]).exit_code == 0
    with app.app_context():
        assert _count() == 4
    missing = runner.invoke(args=["automations", "export", "999"])
    assert missing.exit_code == 1 and "no automation 999" in missing.output


def test_unknown_keys_and_bad_parameters_are_refused_by_name_and_nothing_is_half_imported(app, runner, tmp_path):
    bad = [
        FOLLOW_UP,  # fine on its own: still not imported, the file is refused whole
        {**FOLLOW_UP, "name": "Needs plugins", "trigger": "invoice_paid",
         "conditions": [{"key": "crm_scoring", "params": {}}], "actions": [{"key": "send_sms", "params": {}}]},
        {**FOLLOW_UP, "name": "Bad params", "conditions": [{"key": "has_tag", "params": {"tag": ""}}]},
        {**MORNING, "name": "Bad time", "daily_at": "7h30"},
        {**MORNING, "name": "Waits by schedule", "wait_seconds": 60},
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = runner.invoke(args=["automations", "import", str(path)])
    assert result.exit_code == 1
    out = result.output
    assert "nothing was imported" in out
    assert "automation 2 ('Needs plugins'): unknown trigger 'invoice_paid'" in out
    assert "unknown condition 'crm_scoring' (is its plugin installed and enabled?)" in out
    assert "unknown action 'send_sms'" in out
    assert "automation 3 ('Bad params'): condition 'has_tag': parameters refused" in out
    assert "automation 4 ('Bad time'): daily_at: Enter the time as HH:MM" in out
    assert "automation 5 ('Waits by schedule'): only automations that start on an event can wait" in out
    assert "automation 1" not in out
    with app.app_context():
        assert _count() == 0
    path.write_text("{not json")
    broken = runner.invoke(args=["automations", "import", str(path)])
    assert broken.exit_code == 1 and "is not valid JSON" in broken.output
    path.write_text(json.dumps({**FOLLOW_UP, "priority": 3}))
    extra = runner.invoke(args=["automations", "import", str(path)])
    assert extra.exit_code == 1 and "unknown fields priority" in extra.output
    with app.app_context():
        assert _count() == 0
