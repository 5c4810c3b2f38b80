"""Home page, navigation and error pages shared by every blueprint."""
from __future__ import annotations

from flask import Blueprint, current_app, g, redirect, render_template, url_for
from flask_login import current_user, login_required

bp = Blueprint("views", __name__)


@bp.route("/")
@login_required
def index():
    return redirect(url_for("contacts.contact_list"))


@bp.route("/favicon.ico")
def favicon():
    # Pages link static/favicon.svg; browsers and tools that ask /favicon.ico on their own get the same icon
    # instead of a 404 in the log.
    return current_app.send_static_file("favicon.svg")


def settings_pages_for(user) -> list:
    """Settings pages every loaded plugin offers, filtered by what ``user`` may see."""
    pages = []
    for result in current_app.extensions["plugins"].hook.settings_pages(app=current_app):
        pages.extend(result or [])
    return [p for p in pages if user.is_authenticated and (user.is_admin or not p.admin_only)]


def page_notices() -> list:
    """The plugins' notices for the signed-in agent (``page_notices``), asked once per request.

    Called by base.html rather than by a context processor: every template rendered runs the context
    processors, fragments and e-mail frames too, and each answer may cost a query.
    """
    if not current_user or not current_user.is_authenticated:
        return []
    if "page_notices" not in g:
        g.page_notices = [notice for result in current_app.extensions["plugins"].hook.page_notices(
            app=current_app, agent=current_user._get_current_object()) for notice in (result or [])]
    return g.page_notices


def _error(code: int, title: str, text: str):
    return render_template("error.html", code=code, title=title, text=text), code


def init_app(app) -> None:
    app.register_blueprint(bp)

    @app.context_processor
    def navigation():
        return {"settings_pages": settings_pages_for(current_user) if current_user else [],
                "page_notices": page_notices}

    app.register_error_handler(403, lambda e: _error(403, "Not allowed", "Only administrators can open this page."))
    app.register_error_handler(404, lambda e: _error(404, "Not found", "There is nothing at this address."))
    app.register_error_handler(
        400, lambda e: _error(400, "Bad request", getattr(e, "description", "The request could not be understood."))
    )
    app.register_error_handler(500, lambda e: _error(500, "Something went wrong", "The error was logged."))
