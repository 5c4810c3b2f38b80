"""``manage.py run``: database, Redis, web server, worker and scheduler in one command."""
from __future__ import annotations

import errno
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from werkzeug.serving import WSGIRequestHandler, run_simple

from . import migrating
from .extensions import db
from .models import Agent
from .security_headers import allow_cookies_over_http

FIRST_ADMIN = "admin@example.com"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class _QuietServerHeader(WSGIRequestHandler):
    """The Server header names no Werkzeug or Python version."""

    server_version = "crm"
    sys_version = ""


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def ensure_port_free(host: str, port: int, how_to_pick: str = "make run PORT=8000") -> None:
    """Stop before anything starts, and before an address is printed, when another program holds the port."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        reason = "another program is listening there" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise click.ClickException(
            f"port {port} on {host} is not free ({reason}). Pick another: {how_to_pick}.") from None


def ensure_redis(children: list[subprocess.Popen]) -> None:
    """Start a throw-away local redis-server when REDIS_URL is unset and nothing listens on 6379."""
    if os.environ.get("REDIS_URL") or port_open("127.0.0.1", 6379):
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise click.ClickException("Redis is not running and redis-server is not installed: run `make install`.")
    children.append(
        subprocess.Popen(
            [binary, "--port", "6379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    for _ in range(50):
        if port_open("127.0.0.1", 6379):
            click.echo("Started a local redis-server for this session on 127.0.0.1:6379.")
            return
        time.sleep(0.1)
    raise click.ClickException("redis-server did not start")


def background_commands(app) -> list[str]:
    """The long-running ``manage.py`` commands enabled plugins want beside the worker (``background_commands``)."""
    names: list[str] = []
    for result in app.extensions["plugins"].hook.background_commands(app=app):
        names.extend(name for name in result or [] if name not in names)
    return names


def start_background(children: list[subprocess.Popen], env: dict[str, str] | None = None,
                     extra: list[str] = ()) -> None:
    """A worker, the scheduler and the plugins' background commands (``manage.py worker`` ...) as children."""
    manage = str(Path(__file__).resolve().parent.parent / "manage.py")
    for command in ("worker", "scheduler", *extra):
        # A process group of their own: Ctrl-C in the terminal reaches only this process, which stops them in
        # order (stop_children); interrupted mid-import or mid-job, each would print a traceback.
        children.append(subprocess.Popen([sys.executable, manage, command], env=env, process_group=0))


def stop_children(children: list[subprocess.Popen]) -> None:
    """SIGTERM every child still running, give each 10 s to finish its job, then kill it.

    A second Ctrl-C meanwhile is ignored: the children are being stopped already.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


def ensure_first_admin() -> str | None:
    """Create an admin on an empty database; return its one-time password (shown once, kept 0600)."""
    if db.session.scalar(db.select(Agent.id).limit(1)) is not None:
        return None
    from .auth import create_agent

    password = secrets.token_urlsafe(12)
    create_agent(FIRST_ADMIN, "Administrator", password, admin=True)
    path = Path(current_app.instance_path) / "first_admin_password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


@click.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--no-worker", is_flag=True,
              help="Do not start a worker, the scheduler and the plugins' background commands (the IMAP watcher).")
@with_appcontext
def run_command(host: str, port: int, no_worker: bool):
    """Upgrade the database, then serve the app with a worker, a scheduler and the plugins' background commands.

    Werkzeug's development server: for trying the CRM on this machine. In production run gunicorn
    behind a proxy (docs/deployment.md).
    """
    app = current_app._get_current_object()
    if host in LOOPBACK_HOSTS:
        allow_cookies_over_http(app)  # http://127.0.0.1 has no TLS; nobody else can reach it
    ensure_port_free(host, port)
    children: list[subprocess.Popen] = []
    try:
        migrating.upgrade(app)
        password = ensure_first_admin()
        if not no_worker:
            ensure_redis(children)
            start_background(children, extra=background_commands(app))
        click.echo(f"\n  CRM running at http://{host}:{port}/ (for this machine; production: docs/deployment.md)")
        if password:
            click.echo(f"  Log in as {FIRST_ADMIN} with password {password}")
            click.echo("  (shown once; also in instance/first_admin_password, delete it after changing the password)")
        else:
            click.echo("  Log in with your agent account (python manage.py agents create --help).")
        click.echo()
        run_simple(host, port, app, threaded=True, use_reloader=False, request_handler=_QuietServerHeader)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how this command stops, also while it is still starting
    finally:
        if children:
            click.echo("Stopping the worker, the scheduler and the background commands ...")
        stop_children(children)
    click.echo("Stopped.")
