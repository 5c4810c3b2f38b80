"""Agents log in with e-mail and password; admins see Settings."""
from __future__ import annotations

import logging
from functools import wraps
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField
from wtforms.validators import DataRequired, Email

from .extensions import db, login_manager
from .login_throttle import guarded, throttle, wait_message
from .models import Agent, normalize_email

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Email()])
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Keep me signed in")


def admin_required(view):
    """Like ``login_required``, and the agent must be an admin (403 otherwise)."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        email = normalize_email(form.email.data)
        address = request.remote_addr or "unknown"
        limiter = throttle()
        wait = guarded(limiter.wait_seconds, email, address, default=0)
        if wait:
            # Not even the right password gets in now: guessing must not be able to tell.
            log.warning("login refused (too many failures) for %s from %s", email, address)
            flash(wait_message(wait), "error")
            return render_template("auth/login.html", form=form), 429
        agent = db.session.scalar(db.select(Agent).where(Agent.email == email))
        if agent is None or not agent.check_password(form.password.data) or not agent.active:
            guarded(limiter.failed, email, address)
            log.warning("failed login for %s from %s", email, address)  # never the password
            flash("Wrong e-mail or password.", "error")
        else:
            guarded(limiter.succeeded, email)
            agent.new_login()
            # A new CSRF token with the new session: one planted before the login is worth nothing after it.
            session.pop("csrf_token", None)
            login_user(agent, remember=form.remember.data)
            target = request.args.get("next", "")
            # Only local paths: an open redirect would let a link send agents anywhere.
            if not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
                target = url_for("views.index")
            return redirect(target)
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    """Signs out everywhere: a session or remember-me cookie copied from this browser ends as well."""
    if current_user.is_authenticated:
        agent = db.session.get(Agent, current_user.id)
        agent.sign_out_everywhere()
        db.session.commit()
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@login_manager.user_loader
def load_agent(session_id: str) -> Agent | None:
    """The agent of a session or remember-me cookie, while its session version is still the agent's."""
    agent_id, _, rest = (session_id or "").partition(":")
    version = rest.split(":", 1)[0]
    if not (agent_id.isdigit() and version.isdigit()):
        return None  # a cookie from before session versions, or not ours
    agent = db.session.get(Agent, int(agent_id))
    if agent is None or (agent.session_version or 0) != int(version) or not agent.active:
        return None
    return agent


def create_agent(email: str, name: str, password: str, admin: bool = False) -> Agent:
    """Create an agent; raises ValueError when the e-mail is taken or the password too short."""
    email = normalize_email(email)
    if len(password) < 8:
        raise ValueError("the password must have at least 8 characters")
    if db.session.scalar(db.select(Agent).where(Agent.email == email)):
        raise ValueError(f"an agent with e-mail {email} already exists")
    agent = Agent(email=email, name=name, is_admin=admin)
    agent.set_password(password)
    db.session.add(agent)
    db.session.commit()
    return agent


def init_app(app) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to see this page."
    app.register_blueprint(bp)
