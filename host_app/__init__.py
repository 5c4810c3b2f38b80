"""A small Odoo-style CRM host whose features come from pluggy plugins.

Plugin authors need two names from here: :data:`hookimpl` to mark hook
implementations, and the value types in :mod:`host_app.api`.
"""
from __future__ import annotations

import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.middleware.proxy_fix import ProxyFix

from .hookspecs import hookimpl

__all__ = ["create_app", "hookimpl"]

log = logging.getLogger(__name__)


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def default_config(app: Flask) -> dict:
    return {
        "SQLALCHEMY_DATABASE_URI": os.environ.get("DATABASE_URL")
        or "sqlite:///" + str(Path(app.instance_path) / "crm.sqlite"),
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "RQ_QUEUE": os.environ.get("CRM_RQ_QUEUE", "crm"),
        # Scheduled automations ("Every day at 09:00") run at that time here, e.g. "Europe/Paris".
        "TIME_ZONE": os.environ.get("CRM_TIME_ZONE", "UTC"),
        # Seconds between the scheduler's looks for due scheduled runs and due waits (CRM_AUTOMATION_TICK_SECONDS).
        "AUTOMATION_TICK_SECONDS": 60,
        # Comma-separated plugin names; these win over the Settings > Plugins page.
        "DISABLED_PLUGINS": _env_list("CRM_DISABLED_PLUGINS"),
        "ENABLED_PLUGINS": _env_list("CRM_ENABLED_PLUGINS"),
        # None: every installed plugin (entry points). Tests pass {name: module}.
        "PLUGINS": None,
        "CONTACTS_PER_PAGE": 50,
        "TIMELINE_PER_PAGE": 30,
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # "Keep me signed in" for two weeks, not Flask-Login's year; logout and a new password end it sooner.
        "REMEMBER_COOKIE_DURATION": timedelta(days=14),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
    }


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: configuration, extensions, plugins, blueprints."""
    from . import auth, automations, cli, contacts, schema_guard, security_headers, settings, views
    from .extensions import csrf, db, login_manager
    from .instance import instance_secret
    from .plugin_manager import HostPluginManager, discover

    instance_path = (test_config or {}).get("INSTANCE_PATH") or os.environ.get("CRM_INSTANCE_PATH")
    app = Flask(__name__, instance_relative_config=True, instance_path=instance_path)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.from_mapping(default_config(app))
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("CRM")
    else:
        app.config.from_mapping(test_config)
    for key in ("DISABLED_PLUGINS", "ENABLED_PLUGINS"):
        if isinstance(app.config[key], str):  # CRM_DISABLED_PLUGINS="a,b" read by from_prefixed_env
            app.config[key] = [n.strip() for n in app.config[key].split(",") if n.strip()]
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = instance_secret(app.instance_path, "secret_key", lambda: secrets.token_hex(32))

    _trust_proxies(app)
    db.init_app(app)
    with app.app_context():
        _enforce_sqlite_foreign_keys(db.engine)
    login_manager.init_app(app)
    csrf.init_app(app)
    security_headers.init_app(app)

    manager = HostPluginManager()
    app.extensions["plugins"] = manager
    available = app.config["PLUGINS"] if app.config["PLUGINS"] is not None else discover()
    with app.app_context():
        manager.load(available, disabled=_disabled_plugins(app, available))

    auth.init_app(app)
    views.init_app(app)
    contacts.init_app(app)
    settings.init_app(app)
    automations.init_app(app)
    cli.init_app(app)

    hook = manager.hook
    for blueprints in hook.register_blueprints(app=app):
        for bp in blueprints if isinstance(blueprints, list | tuple) else [blueprints]:
            app.register_blueprint(bp)
    hook.register_commands(cli=app.cli, app=app)
    schema_guard.check_commands(app)
    schema_guard.check_requests(app)
    hook.app_ready(app=app)
    return app


def _trust_proxies(app: Flask) -> None:
    """Behind TRUSTED_PROXIES reverse proxies (CRM_TRUSTED_PROXIES=1 for one nginx), take the client's address,
    scheme and host from their X-Forwarded-* headers: login throttling counts per client address, and HTTPS
    at the proxy makes the request secure. Without proxies these headers are anyone's to forge: ignored."""
    count = int(app.config.get("TRUSTED_PROXIES") or 0)
    if count > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count, x_port=count)


def _enforce_sqlite_foreign_keys(engine) -> None:
    """SQLite ignores ON DELETE CASCADE unless asked, per connection."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _disabled_plugins(app: Flask, available: dict[str, str]) -> set[str]:
    """What was saved with ``plugins enable|disable``, then the environment, which wins."""
    from .extensions import db
    from .plugin_manager import disabled_at_start
    from .settings import saved_states

    saved: dict[str, bool] = {}
    try:
        saved = saved_states()
    except SQLAlchemyError:
        # No database yet (before the first `db upgrade`): every plugin is on.
        db.session.rollback()
    finally:
        db.session.remove()
    return disabled_at_start(saved, app.config["DISABLED_PLUGINS"], app.config["ENABLED_PLUGINS"])
