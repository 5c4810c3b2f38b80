"""Plugin discovery, dependency order, enabling/disabling and per-plugin migrations."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from host_app import create_app, migrating
from host_app.extensions import db
from host_app.plugin_manager import PluginInfo, dependency_order, discover
from tests.support import ROOT
from tests.support.throwaway import throwaway_plugin

OURS = {"mail", "imap_inbox", "contacts_import", "reply_condition"}


def _states(runner) -> dict[str, dict]:
    result = runner.invoke(args=["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    return {p["name"]: p for p in json.loads(result.output)}


def test_our_plugins_are_discovered_through_entry_points():
    assert OURS <= set(discover())


def test_all_plugins_load_in_dependency_order(app):
    manager = app.extensions["plugins"]
    order = [i.name for i in manager.loaded()]
    assert OURS <= set(order)
    for name in OURS - {"mail"}:
        assert order.index("mail") < order.index(name)


def test_disabling_the_mail_core_unloads_its_dependents_with_the_reason(crm_app_factory):
    states = _states(crm_app_factory(disabled=["mail"]).test_cli_runner())
    assert states["mail"]["enabled"] is False and states["mail"]["status"] == "disabled"
    for name in ("imap_inbox", "contacts_import", "reply_condition"):
        assert states[name]["loaded"] is False
        assert states[name]["error"] == "depends on mail, which is disabled"
        assert states[name]["depends"] == ["mail"]


def test_mail_readers_stay_loaded_without_the_imap_transport(crm_app_factory):
    states = _states(crm_app_factory(disabled=["imap_inbox"]).test_cli_runner())
    assert states["imap_inbox"]["status"] == "disabled"
    assert states["contacts_import"]["loaded"] and states["reply_condition"]["loaded"]


def test_disabled_plugin_pages_routes_and_conditions_disappear(crm_app_factory):
    app = crm_app_factory(disabled=["imap_inbox", "reply_condition"])
    rules = {r.rule for r in app.url_map.iter_rules()}
    assert not any(r.startswith("/settings/inboxes") for r in rules)
    with app.app_context():
        from host_app.automation_engine import conditions

        assert "imap_email" not in conditions()


def test_broken_plugin_is_reported_and_the_app_still_serves(crm_app_factory, caplog):
    manifest = "MANIFEST = {'name': 'broken', 'version': '1', 'depends': [], 'hooks': 'hooks_needing_a_missing_lib'}"
    with throwaway_plugin("broken", "", manifest_source=manifest) as broken, \
            throwaway_plugin("fine", "") as fine, \
            throwaway_plugin("needs_broken", "", depends=["broken"]) as needs:
        app = crm_app_factory(plugins={**broken, **fine, **needs})
        states = _states(app.test_cli_runner())
        assert states["broken"]["status"] == "failed"
        assert states["broken"]["error"] == (
            "failed to load: ModuleNotFoundError: No module named 'throwaway_broken.hooks_needing_a_missing_lib'"
        )
        assert states["fine"]["loaded"] is True
        assert states["needs_broken"]["error"] == "depends on broken, which is not loaded"
        assert app.test_client().get("/login").status_code == 200
        assert "plugin broken failed to load" in caplog.text


def test_missing_manifest_and_missing_dependency(crm_app_factory):
    with throwaway_plugin("nomanifest", "", manifest_source="X = 1") as bad, \
            throwaway_plugin("orphan", "", depends=["not_installed"]) as orphan:
        states = _states(crm_app_factory(plugins={**bad, **orphan}).test_cli_runner())
        assert "has no MANIFEST dict" in states["nomanifest"]["error"]
        assert states["orphan"]["error"] == "depends on not_installed, which is not installed"


def test_dependency_cycle_is_refused():
    infos = {
        "a": PluginInfo("a", "a", depends=("b",)),
        "b": PluginInfo("b", "b", depends=("a",)),
        "c": PluginInfo("c", "c", depends=()),
    }
    assert dependency_order(infos) == ["c"]
    assert "dependency cycle" in infos["a"].error or "dependency cycle" in infos["b"].error


def test_cli_disable_persists_and_environment_wins(crm_app_factory):
    runner = crm_app_factory().test_cli_runner()
    result = runner.invoke(args=["plugins", "disable", "reply_condition"])
    assert result.exit_code == 0
    assert _states(crm_app_factory().test_cli_runner())["reply_condition"]["enabled"] is False
    forced = crm_app_factory(ENABLED_PLUGINS=["reply_condition"])
    assert _states(forced.test_cli_runner())["reply_condition"]["loaded"] is True
    assert runner.invoke(args=["plugins", "enable", "reply_condition"]).exit_code == 0
    assert _states(crm_app_factory().test_cli_runner())["reply_condition"]["loaded"] is True


def test_cli_unknown_plugin_is_an_error_on_stderr(runner):
    result = runner.invoke(args=["plugins", "disable", "nope"])
    assert result.exit_code != 0
    assert "no plugin named 'nope' is installed" in result.output


def test_plugins_page_toggles(admin_client, app):
    page = admin_client.get("/settings/plugins").get_data(as_text=True)
    for name in OURS:
        assert name in page
    response = admin_client.post("/settings/plugins/contacts_import/disable", follow_redirects=True)
    assert "Plugin contacts_import disabled" in response.get_data(as_text=True)
    with app.app_context():
        from host_app.settings import saved_states

        assert saved_states() == {"contacts_import": False}


NEEDED = ("mail is needed by contacts_import, imap_inbox, reply_condition: disabling mail also stops "
          "contacts_import, imap_inbox, reply_condition at the next restart.")


def _csrf_token(page: str) -> str:
    return page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]


def test_disabling_a_plugin_others_need_asks_first_then_shows_what_waits_for_a_restart(crm_app_factory):
    from host_app.settings import saved_states
    from host_app.testing import ADMIN_PASSWORD, make_agent

    app = crm_app_factory(WTF_CSRF_ENABLED=True)
    make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True)
    client = app.test_client()
    token = _csrf_token(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"email": "admin@team.example", "password": ADMIN_PASSWORD, "csrf_token": token})
    page = client.get("/settings/plugins").get_data(as_text=True)
    assert "Waiting for" not in page

    asked = client.post("/settings/plugins/mail/disable", data={"csrf_token": _csrf_token(page)})
    question = asked.get_data(as_text=True)
    assert asked.status_code == 200 and f"{NEEDED} Disable anyway?" in question
    with app.app_context():
        assert saved_states() == {}

    done = client.post("/settings/plugins/mail/disable",
                       data={"csrf_token": _csrf_token(question), "confirmed": "yes"}, follow_redirects=True)
    page = done.get_data(as_text=True)
    assert "Plugin mail disabled" in page
    with app.app_context():
        assert saved_states() == {"mail": False}
    assert "Waiting for restart: disabled" in page
    assert page.count("Waiting for restart: stops, needs mail") == 3
    assert ("Waiting for a restart:\n  contacts_import (stops, needs mail); imap_inbox (stops, needs mail); "
            "mail (disabled); reply_condition (stops, needs mail).") in page

    # A plugin nobody needs goes without a question; a restart ends the wait.
    token = _csrf_token(page)
    client.post("/settings/plugins/mail/enable", data={"csrf_token": token})
    client.post("/settings/plugins/reply_condition/disable", data={"csrf_token": token})
    with app.app_context():
        assert saved_states() == {"mail": True, "reply_condition": False}
    restarted = crm_app_factory()
    make_agent(restarted, "root@team.example", ADMIN_PASSWORD, admin=True)
    fresh = restarted.test_client()
    fresh.post("/login", data={"email": "root@team.example", "password": ADMIN_PASSWORD})
    assert "Waiting for" not in fresh.get("/settings/plugins").get_data(as_text=True)


def test_cli_refuses_to_disable_a_plugin_others_need_without_yes(runner, app):
    from host_app.settings import saved_states

    refused = runner.invoke(args=["plugins", "disable", "mail"])
    assert refused.exit_code == 1
    assert refused.output == f"Error: {NEEDED} Disable anyway: run again with --yes.\n"
    with app.app_context():
        assert saved_states() == {}
    assert runner.invoke(args=["plugins", "disable", "mail", "--yes"]).exit_code == 0
    # Once the plugins that need it are off, nothing else stops with it.
    assert runner.invoke(args=["plugins", "disable", "contacts_import"]).exit_code == 0
    with app.app_context():
        assert saved_states() == {"mail": False, "contacts_import": False}


def test_environment_variable_disables(monkeypatch, tmp_path):
    monkeypatch.setenv("CRM_DISABLED_PLUGINS", "imap_inbox, contacts_import")
    monkeypatch.setenv("CRM_SECRET_KEY", "x")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/env.sqlite")
    monkeypatch.setenv("CRM_INSTANCE_PATH", str(tmp_path))
    app = create_app()
    assert app.config["DISABLED_PLUGINS"] == ["imap_inbox", "contacts_import"]
    assert not app.extensions["plugins"].is_loaded("imap_inbox")


def test_enabling_a_plugin_later_upgrades_an_existing_database(empty_database_url, tmp_path, redis_url):
    config = {"SQLALCHEMY_DATABASE_URI": empty_database_url, "SECRET_KEY": "x", "INSTANCE_PATH": str(tmp_path),
              "REDIS_URL": redis_url}
    without = create_app({**config, "DISABLED_PLUGINS": ["mail"]})
    assert migrating.upgrade(without) == ["host"]
    with without.app_context():
        tables = set(sa.inspect(db.engine).get_table_names())
        assert "contact" in tables and "mail_message" not in tables
        db.session.execute(sa.text("INSERT INTO contact (email, name, name_edited, source, attributes, created_at) "
                                   "VALUES ('kept@example.org', 'Kept', false, 'manual', '{}', CURRENT_TIMESTAMP)"))
        db.session.commit()
        db.engine.dispose()
    everything = create_app(config)
    behind = migrating.pending(everything)
    assert "host" not in behind and behind[0] == "mail"
    migrating.upgrade(everything)
    assert migrating.pending(everything) == []
    with everything.app_context():
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"mail_message", "imap_inbox", "alembic_version_imap_inbox", "alembic_version"} <= tables
        assert db.session.execute(sa.text("SELECT email FROM contact")).scalar() == "kept@example.org"
        current = migrating.current(everything)
        assert current["host"] and current["imap_inbox"]
        db.engine.dispose()
    # A plugin's history can be taken down on its own; the host's data stays.
    migrating.downgrade(everything, "reply_condition", "base")
    assert migrating.current(everything)["reply_condition"] is None
    with everything.app_context():
        assert db.session.execute(sa.text("SELECT count(*) FROM contact")).scalar() == 1
        db.engine.dispose()


BEHIND = ("The database is behind (host, mail, contacts_import, imap_inbox, reply_condition): "
          "run `manage.py db upgrade`")


def test_a_command_on_a_database_behind_says_so_in_one_line(empty_database_url, tmp_path, redis_url):
    app = create_app({"SQLALCHEMY_DATABASE_URI": empty_database_url, "SECRET_KEY": "x",
                      "INSTANCE_PATH": str(tmp_path), "REDIS_URL": redis_url})
    runner = app.test_cli_runner()
    for args in (["contacts", "list", "--json"], ["inboxes", "list", "--json"], ["plugins", "list"]):
        refused = runner.invoke(args=args)
        assert (refused.exit_code, refused.output) == (1, BEHIND + "\n"), args
    assert runner.invoke(args=["db", "current"]).exit_code == 0
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    listed = runner.invoke(args=["contacts", "list", "--json"])
    assert (listed.exit_code, json.loads(listed.output)) == (0, [])
    with app.app_context():
        db.engine.dispose()


def test_manage_py_on_a_new_database_prints_one_line_not_a_traceback(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/new.sqlite", "CRM_INSTANCE_PATH": str(tmp_path)}
    manage = ROOT / "manage.py"
    done = subprocess.run([sys.executable, str(manage), "inboxes", "list", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert (done.stdout, done.stderr) == ("", BEHIND + "\n")


def test_a_page_on_a_database_behind_is_a_503_saying_so_until_it_is_upgraded(
        empty_database_url, tmp_path, redis_url, monkeypatch):
    app = create_app({"SQLALCHEMY_DATABASE_URI": empty_database_url, "SECRET_KEY": "x",
                      "INSTANCE_PATH": str(tmp_path), "REDIS_URL": redis_url})
    client = app.test_client()
    for path in ("/", "/login", "/settings/plugins"):
        page = client.get(path)
        assert page.status_code == 503, path
        text = page.get_data(as_text=True)
        assert BEHIND.split("`")[0] in text
        assert "Traceback" not in text
    assert client.get("/static/crm.css").status_code == 200
    migrating.upgrade(app)
    assert client.get("/login").status_code == 200
    # Once current, the answer is kept: no more Alembic queries per request.
    monkeypatch.setattr(migrating, "pending", lambda app: pytest.fail("asked Alembic again"))
    assert client.get("/login").status_code == 200
    with app.app_context():
        db.engine.dispose()


def test_a_sqlite_migration_that_leaves_foreign_keys_pointing_nowhere_is_refused(tmp_path):
    """Migrations run with SQLite's foreign keys off (a table rebuild would cascade); this check stands in."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'fk.sqlite'}")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            connection.exec_driver_sql("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id REFERENCES parent(id))")
            connection.exec_driver_sql("INSERT INTO parent VALUES (1)")
            connection.exec_driver_sql("INSERT INTO child VALUES (1, 1)")
            owner = migrating.MigrationOwner("example", tmp_path, "example.")
            migrating._check_foreign_keys(connection, owner)  # all is well: no error
            connection.exec_driver_sql("INSERT INTO child VALUES (2, 42), (3, 43)")
            with pytest.raises(RuntimeError, match=r"example left rows .* nowhere \(2 in child\)"):
                migrating._check_foreign_keys(connection, owner)
    finally:
        engine.dispose()


def test_every_owner_s_migrations_build_exactly_its_models(app):
    """A model changed without a revision (or a revision the models do not match) fails here, on both databases."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with app.app_context(), db.engine.connect() as connection:
        for owner in migrating.owners(app):
            def own(obj, name, type_, reflected, compare_to, owner=owner):
                if type_ == "table" and reflected and compare_to is None:
                    return False  # another owner's table, or an Alembic version table
                if migrating.database_only(obj, name, type_, reflected):
                    return False
                table = obj if type_ == "table" else getattr(obj, "table", None)
                if table is None:
                    return True
                model_table = db.metadata.tables.get(table.name)  # reflected objects name the model's table
                return model_table is not None and owner.owns_table(model_table)

            context = MigrationContext.configure(connection, opts={
                "include_object": own, "compare_type": True, "version_table": owner.version_table})
            differences = compare_metadata(context, db.metadata)
            assert differences == [], f"{owner.name}: models and migrations differ: {differences}"


def test_collect_by_key_keeps_the_first_plugin_s_item_for_a_key(crm_app_factory):
    template = """
        from host_app import hookimpl
        from host_app.api import EventType
        @hookimpl
        def event_types(app):
            return [EventType("shared", "{name}'s"), EventType("{name}_only", "{name}'s own")]
    """
    with throwaway_plugin("north", template.format(name="north")) as north, \
            throwaway_plugin("south", template.format(name="south")) as south:
        app = crm_app_factory(plugins={**north, **south})
        manager = app.extensions["plugins"]
        with app.app_context():
            found = manager.collect_by_key("event_types", app=app)
        first = next(plugin for plugin, result, _ in manager.call_each("event_types", app=app) if result)
        assert found["shared"].label == f"{first}'s"
        assert found["north_only"].label == "north's own" and found["south_only"].label == "south's own"
        assert "contact_created" in found  # the host's types as well
