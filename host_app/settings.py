"""Settings: the index of every plugin's settings pages, and Settings > Plugins."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm

from .auth import admin_required
from .extensions import db
from .models import PluginState

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


@bp.route("/")
@admin_required
def index():
    return render_template("settings/index.html")


@bp.route("/plugins")
@admin_required
def plugins():
    manager = current_app.extensions["plugins"]
    return render_template(
        "settings/plugins.html",
        plugins=sorted(manager.plugins.values(), key=lambda p: p.name),
        saved=saved_states(),
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
    try:
        set_plugin_enabled(name, action == "enable")
    except LookupError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Plugin {name} {action}d. The change applies when the app and the workers restart.", "success")
    return redirect(url_for(".plugins"))


def init_app(app) -> None:
    app.register_blueprint(bp)
