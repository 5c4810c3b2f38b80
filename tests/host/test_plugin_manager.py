"""Plugin discovery, dependency order, enabling/disabling and per-plugin migrations."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from host_app import create_app, migrating
from host_app.extensions import db
from host_app.plugin_manager import PluginInfo, dependency_order, discover
from tests.support.throwaway import throwaway_plugin

OURS = {"imap_inbox", "contacts_import", "reply_condition"}


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
    assert order.index("imap_inbox") < order.index("contacts_import")
    assert order.index("imap_inbox") < order.index("reply_condition")


def test_disabling_imap_inbox_unloads_its_dependents_with_the_reason(crm_app_factory):
    states = _states(crm_app_factory(disabled=["imap_inbox"]).test_cli_runner())
    assert states["imap_inbox"]["enabled"] is False and states["imap_inbox"]["status"] == "disabled"
    for name in ("contacts_import", "reply_condition"):
        assert states[name]["loaded"] is False
        assert states[name]["error"] == "depends on imap_inbox, which is disabled"
        assert states[name]["depends"] == ["imap_inbox"]


def test_disabled_plugin_pages_routes_and_conditions_disappear(crm_app_factory):
    app = crm_app_factory(disabled=["imap_inbox"])
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


def test_environment_variable_disables(monkeypatch, tmp_path):
    monkeypatch.setenv("CRM_DISABLED_PLUGINS", "imap_inbox, contacts_import")
    monkeypatch.setenv("CRM_SECRET_KEY", "x")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/env.sqlite")
    monkeypatch.setenv("CRM_INSTANCE_PATH", str(tmp_path))
    app = create_app()
    assert app.config["DISABLED_PLUGINS"] == ["imap_inbox", "contacts_import"]
    assert not app.extensions["plugins"].is_loaded("imap_inbox")


@pytest.fixture
def empty_database_url(crm_database_server_url, tmp_path):
    """A database with no tables at all (SQLite file, or a new PostgreSQL database)."""
    server = crm_database_server_url
    if not server:
        yield f"sqlite:///{tmp_path}/fresh.sqlite"
        return
    from host_app.testing import _create_postgres_database, _drop_postgres_database

    url = _create_postgres_database(server)
    yield url
    _drop_postgres_database(server, url)


def test_enabling_a_plugin_later_upgrades_an_existing_database(empty_database_url, tmp_path, redis_url):
    config = {"SQLALCHEMY_DATABASE_URI": empty_database_url, "SECRET_KEY": "x", "INSTANCE_PATH": str(tmp_path),
              "REDIS_URL": redis_url}
    without = create_app({**config, "DISABLED_PLUGINS": ["imap_inbox"]})
    assert migrating.upgrade(without) == ["host"]
    with without.app_context():
        tables = set(sa.inspect(db.engine).get_table_names())
        assert "contact" in tables and "imap_message" not in tables
        db.session.execute(sa.text("INSERT INTO contact (email, name, name_edited, source, attributes, created_at) "
                                   "VALUES ('kept@example.org', 'Kept', false, 'manual', '{}', CURRENT_TIMESTAMP)"))
        db.session.commit()
        db.engine.dispose()
    everything = create_app(config)
    behind = migrating.pending(everything)
    assert "host" not in behind and behind[0] == "imap_inbox"
    migrating.upgrade(everything)
    assert migrating.pending(everything) == []
    with everything.app_context():
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"imap_message", "alembic_version_imap_inbox", "alembic_version"} <= tables
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
                table = obj if type_ == "table" else getattr(obj, "table", None)
                if table is None:
                    return True
                model_table = db.metadata.tables.get(table.name)  # reflected objects name the model's table
                return model_table is not None and owner.owns_table(model_table)

            context = MigrationContext.configure(connection, opts={
                "include_object": own, "compare_type": True, "version_table": owner.version_table})
            differences = compare_metadata(context, db.metadata)
            assert differences == [], f"{owner.name}: models and migrations differ: {differences}"
