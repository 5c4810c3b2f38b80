"""Settings: the index of every plugin's settings pages, and Settings > Plugins."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from .auth import admin_required
from .extensions import db
from .models import Agent, PluginState
from .plugin_manager import disabled_at_start

bp = Blueprint("settings", __name__, url_prefix="/settings")


def set_plugin_enabled(name: str, enabled: bool) -> None:
    """Persist a plugin's state; it applies to apps built from now on (web, worker, CLI)."""
    manager = current_app.extensions["plugins"]
    if name not in manager.plugins:
        raise LookupError(f"no plugin named {name!r} is installed")
    row = db.session.get(PluginState, name) or PluginState(name=name)
    row.enabled = enabled
    db.session.add(row)
    db.session.commit()


def saved_states() -> dict[str, bool]:
    return {row.name: row.enabled for row in db.session.scalars(db.select(PluginState))}


def enabled_at_next_start() -> dict[str, bool]:
    """``{plugin: enabled}`` for the processes started from now on, which may differ from this one."""
    config = current_app.config
    off = disabled_at_start(saved_states(), config["DISABLED_PLUGINS"], config["ENABLED_PLUGINS"])
    return {name: name not in off for name in current_app.extensions["plugins"].plugins}


def stopped_with(name: str) -> list[str]:
    """The plugins that stop at the next restart when ``name`` is disabled, because they need it."""
    enabled = {plugin for plugin, on in enabled_at_next_start().items() if on}
    return current_app.extensions["plugins"].needed_by(name, enabled)


def waiting_for_restart() -> dict[str, str]:
    """``{plugin: what the next restart does to it}`` where that differs from what this process loaded."""
    manager = current_app.extensions["plugins"]
    next_start = enabled_at_next_start()
    enabled = {name for name, on in next_start.items() if on}
    waiting = {name: "enabled" if on else "disabled"
               for name, on in next_start.items() if on != manager.plugins[name].enabled}
    for off in sorted(set(next_start) - enabled):
        for dependent in manager.needed_by(off, enabled):
            if manager.is_loaded(dependent):
                waiting.setdefault(dependent, f"stops, needs {off}")
    return waiting


def needed_by_warning(name: str, dependents: list[str]) -> str:
    names = ", ".join(dependents)
    return f"{name} is needed by {names}: disabling {name} also stops {names} at the next restart."


@bp.route("/")
@admin_required
def index():
    return render_template("settings/index.html")


@bp.route("/plugins")
@admin_required
def plugins():
    return render_template(
        "settings/plugins.html",
        plugins=sorted(current_app.extensions["plugins"].plugins.values(), key=lambda p: p.name),
        saved=saved_states(),
        waiting=waiting_for_restart(),
        forced_off=set(current_app.config["DISABLED_PLUGINS"]),
        forced_on=set(current_app.config["ENABLED_PLUGINS"]),
        form=FlaskForm(),
    )


@bp.route("/plugins/<name>/<any(enable, disable):action>", methods=["POST"])
@admin_required
def plugin_toggle(name: str, action: str):
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".plugins"))
    if name not in current_app.extensions["plugins"].plugins:
        flash(f"no plugin named {name!r} is installed", "error")
        return redirect(url_for(".plugins"))
    if action == "disable" and request.form.get("confirmed") != "yes":
        dependents = stopped_with(name)
        if dependents:
            return render_template("settings/plugin_disable.html", name=name,
                                   warning=needed_by_warning(name, dependents), form=FlaskForm())
    set_plugin_enabled(name, action == "enable")
    flash(f"Plugin {name} {action}d. The change applies when the app and the workers restart.", "success")
    return redirect(url_for(".plugins"))


@bp.route("/agents")
@admin_required
def agents():
    team = db.session.scalars(db.select(Agent).order_by(Agent.name, Agent.email)).all()
    return render_template("settings/agents.html", agents=team, form=FlaskForm())


@bp.route("/agents/<int:agent_id>/<any('sign-out', deactivate, activate):action>", methods=["POST"])
@admin_required
def agent_action(agent_id: int, action: str):
    """Sign an agent out everywhere, or deactivate them (which signs them out too), or let them in again."""
    agent = db.session.get(Agent, agent_id) or abort(404)
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".agents"))
    if action == "deactivate" and agent.id == current_user.id:
        flash("You cannot deactivate yourself; another admin can.", "error")
        return redirect(url_for(".agents"))
    if action == "activate":
        agent.active = True
        message = f"{agent.email} can log in again."
    else:
        agent.sign_out_everywhere()
        if action == "deactivate":
            agent.active = False
            message = f"{agent.email} is deactivated and signed out everywhere."
        else:
            message = f"{agent.email} is signed out everywhere."
    db.session.commit()
    flash(message, "success")
    return redirect(url_for(".agents") if agent.id != current_user.id else url_for("auth.login"))


def init_app(app) -> None:
    app.register_blueprint(bp)
