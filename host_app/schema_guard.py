"""Refuse to work on a database whose schema is behind the code: one line for the CLI, a 503 page for the web.

Without this, the first query against a missing table or column fails with
an SQL traceback that does not say what to do. Asking Alembic costs a few
queries and reading every owner's revisions, so the answer is kept once the
schema is current: a process checks until it is, then never again (an
upgrade only ever happens through ``manage.py db upgrade`` or ``run``).
"""
from __future__ import annotations

import functools

import click
from flask import Flask, current_app, has_app_context, render_template, request
from flask.cli import ScriptInfo

from . import migrating

# `db ...` is how a database behind gets fixed; `run` upgrades before it serves.
UNCHECKED_COMMANDS = frozenset({"db"})
_CURRENT = "schema_is_current"


def owners_behind(app: Flask) -> list[str]:
    """The owners (host, plugins) whose schema is behind; ``[]`` and remembered once none is."""
    if app.extensions.get(_CURRENT):
        return []
    behind = migrating.pending(app)
    if not behind:
        app.extensions[_CURRENT] = True
    return behind


def behind_message(behind: list[str]) -> str:
    return f"The database is behind ({', '.join(behind)}): run `manage.py db upgrade`"


class DatabaseBehind(click.ClickException):
    """Printed as the message alone, without click's "Error: " in front."""

    def show(self, file=None) -> None:
        click.echo(self.format_message(), err=True)


def _checked(callback):
    if getattr(callback, "checks_schema", False):
        return callback

    @functools.wraps(callback)
    def checked(*args, **kwargs):
        if has_app_context():
            app = current_app._get_current_object()
        else:  # the test runner pushes the app context inside the command, not around it
            app = click.get_current_context().ensure_object(ScriptInfo).load_app()
        with app.app_context():
            behind = owners_behind(app)
        if behind:
            raise DatabaseBehind(behind_message(behind))
        return callback(*args, **kwargs)

    checked.checks_schema = True
    return checked


def _check_commands(command: click.Command) -> None:
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _check_commands(sub)
    elif command.callback is not None:
        # Plugins' commands are module-level objects shared by every app: the wrapper finds its
        # app at run time, and wrapping twice is avoided.
        command.callback = _checked(command.callback)


def check_commands(app: Flask) -> None:
    """Make every command of ``app.cli`` but ``db ...`` stop with one line on a database behind."""
    for name, command in app.cli.commands.items():
        if name not in UNCHECKED_COMMANDS:
            _check_commands(command)


def check_requests(app: Flask) -> None:
    """Answer every page with a 503 saying what to run while the database is behind."""

    @app.before_request
    def refuse_while_behind():
        if request.endpoint and request.endpoint.rsplit(".", 1)[-1] == "static":
            return None
        behind = owners_behind(app)
        if behind:
            # A page of its own: base.html loads the logged-in agent, from a table that may not exist yet.
            return render_template("database_behind.html", message=behind_message(behind)), 503
        return None
