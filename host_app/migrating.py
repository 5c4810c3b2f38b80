"""Schema migrations: one Alembic history for the host and one per plugin.

Each owner (the host or a plugin) keeps its revisions in its own
``migrations/`` folder and its own version table (``alembic_version`` for the
host, ``alembic_version_<plugin>`` for a plugin), as Indico does. So a plugin
enabled months later upgrades an existing database on its own, and disabling
a plugin leaves its tables and data alone.

Every ``migrations/env.py`` is the same two lines::

    from host_app.migrating import run_env
    run_env()
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask

from .extensions import db
from .sql import UTCDateTime

HOST = "host"
HOST_MIGRATIONS = Path(__file__).parent / "migrations"


@dataclasses.dataclass(frozen=True)
class MigrationOwner:
    """The host or a plugin, with where its revisions live and which tables it owns."""

    name: str
    directory: Path
    module_prefix: str

    @property
    def version_table(self) -> str:
        return "alembic_version" if self.name == HOST else f"alembic_version_{self.name}"

    def owns_table(self, table) -> bool:
        declared = table.info.get("owner")  # for plain db.Table objects
        if declared:
            return declared == self.name
        return _table_module(table).startswith(self.module_prefix)


def _table_module(table) -> str:
    for mapper in db.Model.registry.mappers:
        if mapper.local_table is table:
            return mapper.class_.__module__
    return ""


def owners(app: Flask) -> list[MigrationOwner]:
    """The host, then every loaded plugin that has migrations, in load order."""
    result = [MigrationOwner(HOST, HOST_MIGRATIONS, "host_app.")]
    for info in app.extensions["plugins"].loaded():
        if info.migrations_dir is not None:
            result.append(MigrationOwner(info.name, info.migrations_dir, info.module_name + "."))
    return result


def alembic_config(owner: MigrationOwner) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(owner.directory))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(owner.directory / "versions"))
    cfg.attributes["owner"] = owner
    return cfg


def upgrade(app: Flask, revision: str = "head") -> list[str]:
    """Bring the host and every loaded plugin up to ``revision``; return what was upgraded."""
    done = []
    with app.app_context():
        for owner in owners(app):
            command.upgrade(alembic_config(owner), revision)
            done.append(owner.name)
    return done


def downgrade(app: Flask, owner_name: str, revision: str) -> None:
    with app.app_context():
        command.downgrade(alembic_config(_owner(app, owner_name)), revision)


def revision(app: Flask, owner_name: str, message: str, autogenerate: bool = True) -> None:
    """Write a new revision for one owner (the host or a plugin), compared with the models."""
    with app.app_context():
        command.revision(alembic_config(_owner(app, owner_name)), message=message, autogenerate=autogenerate)


def current(app: Flask) -> dict[str, str | None]:
    """Return ``{owner: current revision}``."""
    result = {}
    with app.app_context(), db.engine.connect() as conn:
        for owner in owners(app):
            ctx = MigrationContext.configure(conn, opts={"version_table": owner.version_table})
            result[owner.name] = ctx.get_current_revision()
    return result


def pending(app: Flask) -> list[str]:
    """Return the owners whose schema is behind their newest revision."""
    behind = []
    now = current(app)
    for owner in owners(app):
        head = ScriptDirectory.from_config(alembic_config(owner)).get_current_head()
        if now.get(owner.name) != head:
            behind.append(owner.name)
    return behind


def _owner(app: Flask, name: str) -> MigrationOwner:
    for owner in owners(app):
        if owner.name == name:
            return owner
    raise LookupError(f"no migrations for {name!r}: not the host and not a loaded plugin with migrations")


def database_only(obj, name: str | None, type_: str, reflected: bool) -> bool:
    """A column or index that its model's table names in ``info["database_only"]``: made and kept by the
    owner's migrations alone (a PostgreSQL generated column, say), with no model attribute to compare."""
    table = getattr(obj, "table", None)
    if not reflected or type_ not in ("column", "index") or table is None:
        return False
    model_table = db.metadata.tables.get(table.name)
    return model_table is not None and name in model_table.info.get("database_only", ())


def run_env() -> None:
    """Body of every owner's ``env.py``: run its revisions against the app's database."""
    owner: MigrationOwner = context.config.attributes["owner"]

    def include_object(obj, name, type_, reflected, compare_to):
        if type_ == "table":
            if reflected and compare_to is None:
                # A table in the database that this owner's models do not know
                # belongs to someone else: never drop it.
                return False
            return owner.owns_table(obj)
        return not database_only(obj, name, type_, reflected)

    with db.engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A batch migration rebuilds a table: copy, DROP, rename. With foreign keys enforced, the DROP
            # would run the ON DELETE CASCADE of every table referencing it and empty them. Off for the
            # migration only (SQLite ignores the pragma inside a transaction), checked before the commit.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            context.configure(
                connection=connection,
                target_metadata=db.metadata,
                version_table=owner.version_table,
                include_object=include_object,
                render_as_batch=sqlite,
                compare_type=True,
                render_item=_render_item,
            )
            with context.begin_transaction():
                before = context.get_context().get_current_revision()
                context.run_migrations()
                if sqlite and context.get_context().get_current_revision() != before:
                    _check_foreign_keys(connection, owner)  # a full scan: only after a migration ran
            connection.commit()
        finally:
            if sqlite:
                connection.rollback()
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")


def _render_item(type_: str, obj, autogen_context):
    # A revision states the schema, which UTCDateTime leaves a plain DateTime: no import of the host in revisions.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _check_foreign_keys(connection, owner: MigrationOwner) -> None:
    broken = Counter(row[0] for row in connection.exec_driver_sql("PRAGMA foreign_key_check"))
    if broken:
        where = ", ".join(f"{count} in {table}" for table, count in sorted(broken.items()))
        raise RuntimeError(f"the migrations of {owner.name} left rows whose foreign key points nowhere "
                           f"({where}); nothing was committed")
