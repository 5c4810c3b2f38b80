"""``make demo``: the CRM with a real team mailbox to look at, in one command.

    python -m plugins.imap_inbox.demo [--host 127.0.0.1] [--port 5000]

It starts a throwaway Dovecot on loopback filled with a generated sample
mailbox (a few hundred messages, a few dozen correspondents, replies, mailing
lists, no-reply senders) plus a handful of hand-written threads, creates a fresh
CRM in ``instance/demo`` (SQLite), an admin and an agent, connects the mailbox
through the same service the "Connect via IMAP" form uses (Create users on),
and serves the app with a worker and a scheduler like ``manage.py run``. The
first sync starts at once; contacts and their timelines appear within seconds.
Ctrl-C stops everything, Dovecot included.

:func:`setup_demo` does everything but serving, for tests and for scripts.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from flask import Flask
from werkzeug.serving import run_simple

from host_app import create_app
from host_app.api import (
    AutomationRule,
    create_agent,
    db,
    ensure_port_free,
    ensure_redis,
    event_types,
    start_background,
    stop_children,
    upgrade_database,
)

from . import service
from .testing import mailgen
from .testing.dovecot import DovecotServer

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_INSTANCE = REPO_ROOT / "instance" / "demo"
MARKER = ".crm-demo"  # only a folder carrying this file is ever wiped

MAILBOX = "sales@northwind.example"
MAILBOX_NAME = "Northwind Sales"
ADMIN_EMAIL = "admin@northwind.example"
AGENT = ("sam@northwind.example", "Sam Seller")
INBOX_NAME = "Northwind sales mailbox"
# A second mailbox on the same Dovecot, left unconnected: for trying "Connect via IMAP" by hand.
SPARE_MAILBOX = "support@northwind.example"
SPARE_MAILBOX_NAME = "Northwind Support"


@dataclasses.dataclass
class Demo:
    """A running demo: the Dovecot serving the sample mailbox and the CRM app connected to it."""

    server: DovecotServer
    app: Flask
    config: dict[str, Any]
    instance_path: Path
    inbox_id: int
    admin_email: str
    admin_password: str = dataclasses.field(repr=False)
    agent_email: str
    agent_password: str = dataclasses.field(repr=False)
    base_dir: Path
    messages: int
    spare_mailbox: str = SPARE_MAILBOX
    spare_password: str = dataclasses.field(default="", repr=False)

    def stop(self) -> None:
        """Stop Dovecot and remove its temporary folder (the CRM's instance folder stays)."""
        self.server.close()
        shutil.rmtree(self.base_dir, ignore_errors=True)


# --------------------------------------------------------------------------- the sample mailbox


def _thread(owner: str, now: dt.datetime, name: str, address: str, key: str,
            steps) -> Iterator[tuple[dt.datetime, str, bytes]]:
    """One conversation: ``steps`` are (days_ago, from_us, subject, body); each message replies to the previous."""
    previous: list[str] = []
    for n, (days_ago, from_us, subject, body) in enumerate(steps):
        date = now - dt.timedelta(days=days_ago, minutes=len(steps) - n)
        message_id = f"<demo-{key}-{n}@{'northwind.example' if from_us else address.partition('@')[2]}>"
        us, them = (MAILBOX_NAME, owner), (name, address)
        raw = mailgen.make_message(
            us if from_us else them, them if from_us else us, subject, date=date, message_id=message_id,
            in_reply_to=previous[-1] if previous else None, references=previous or None, body=body,
        )
        previous.append(message_id)
        yield date, ("Sent" if from_us else "INBOX"), raw


def handwritten_threads(owner: str, now: dt.datetime) -> list[tuple[dt.datetime, str, bytes]]:
    """A few conversations with nice names and subjects (non-ASCII too), recent enough for automations.

    Returns ``(date, folder, raw)``, oldest first.
    """
    threads = [
        ("Zoë Müller", "zoe.mueller@alpenglas.example", "alpenglas", [
            (9, True, "Angebot für 500 Weingläser", "Hallo Frau Müller,\n\nanbei unser Angebot.\n\nGrüße\nSam\n"),
            (8, False, "Re: Angebot für 500 Weingläser", "Danke! Geht auch eine Lieferung bis Ende März?\n"),
            (7, True, "Re: Angebot für 500 Weingläser", "Ja, Ende März ist kein Problem.\n"),
            (2, False, "Re: Angebot für 500 Weingläser", "Perfekt, wir bestellen. Rechnung bitte an die Zentrale.\n"),
        ]),
        ("José Álvarez", "jose@vinos-rioja.example", "rioja", [
            (6, False, "¿Podemos hablar el jueves?", "Hola Sam,\n\n¿tienes un momento el jueves para el pedido?\n"),
            (5, True, "Re: ¿Podemos hablar el jueves?", "¡Claro! El jueves a las 10:00 te llamo.\n"),
        ]),
        ("佐藤 花子", "hanako.sato@sakura-tea.example", "sakura", [
            (4, True, "Sample order / サンプル注文", "Dear Ms Sato,\n\nthe samples left our warehouse today.\n"),
            (1, False, "Re: Sample order / サンプル注文", "ありがとうございます! The samples arrived, all perfect.\n"),
        ]),
        ("Amélie Dubois", "amelie@boulangerie-dubois.example", "dubois", [
            (3, True, "Devis pour la livraison hebdomadaire", "Bonjour Amélie,\n\nvoici notre devis.\n"),
        ]),
        ("Björn Andersson", "bjorn@fjord-fisk.example", "fjord", [
            (12, False, "Invoice 2024-117", "Hi, could you send invoice 2024-117 again? Thanks, Björn\n"),
            (11, True, "Re: Invoice 2024-117", "Of course, attached again.\n"),
            (10, False, "Re: Invoice 2024-117", "Got it, thanks! Tack så mycket.\n"),
        ]),
    ]
    messages = [m for name, address, key, steps in threads for m in _thread(owner, now, name, address, key, steps)]
    delivered = now - dt.timedelta(hours=5)
    messages.append((delivered, "INBOX", mailgen.make_message(
        ("Parcel Service", "no-reply@parcels.example"), owner, "Your shipment 4711 was delivered",
        date=delivered, message_id="<demo-parcel-4711@parcels.example>", headers={"Auto-Submitted": "auto-generated"},
    )))
    return sorted(messages, key=lambda m: m[0])


def sample_mailbox(owner: str, now: dt.datetime, *, n_inbox: int, n_sent: int,
                   correspondents: int) -> dict[str, list[bytes]]:
    """Generated mail of the last four months, then the hand-written threads: by folder, oldest first."""
    folders: dict[str, list[bytes]] = {"INBOX": [], "Sent": []}
    for folder, raw in mailgen.generate_mailbox(n_inbox, n_sent, owner=owner, correspondents=correspondents,
                                                seed=2024, owner_name=MAILBOX_NAME,
                                                start=now - dt.timedelta(days=120), end=now - dt.timedelta(days=14)):
        folders[folder].append(raw)
    for _, folder, raw in handwritten_threads(owner, now):
        folders[folder].append(raw)
    return folders


def spare_mailbox(now: dt.datetime, n_inbox: int = 40, n_sent: int = 15) -> dict[str, list[bytes]]:
    """The unconnected mailbox's few weeks of generated mail, by folder."""
    folders: dict[str, list[bytes]] = {"INBOX": [], "Sent": []}
    for folder, raw in mailgen.generate_mailbox(n_inbox, n_sent, owner=SPARE_MAILBOX, correspondents=15, seed=7,
                                                owner_name=SPARE_MAILBOX_NAME,
                                                start=now - dt.timedelta(days=30), end=now - dt.timedelta(days=1)):
        folders[folder].append(raw)
    return folders


# --------------------------------------------------------------------------- the CRM


def _prepare_instance(path: Path) -> None:
    """A fresh instance folder; refuses to wipe a folder the demo did not create."""
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise SystemExit(f"{path} exists and was not made by the demo; choose another --instance folder.")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("Made by `make demo`; wiped and made again on every run.\n")


def demo_config(instance_path: Path, *, database_url: str | None = None, redis_url: str | None = None,
                queue: str = "crm-demo", ca_dir: str | None = None) -> dict[str, Any]:
    """The demo's settings: its own SQLite file and RQ queue, so it never touches a real installation's data;
    ``ca_dir`` is where its Dovecot keeps the CA certificate the inbox trusts."""
    return {
        "IMAP_CA_DIR": ca_dir or "",
        "SQLALCHEMY_DATABASE_URI": database_url or f"sqlite:///{instance_path / 'crm.sqlite'}",
        "REDIS_URL": redis_url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "RQ_QUEUE": queue,
        "IMAP_SYNC_INTERVAL": 60,
        "IMAP_BLOCK_PRIVATE_HOSTS": False,  # the demo's Dovecot is on loopback, which production refuses
    }


def _write_config(instance_path: Path, config: dict[str, Any]) -> None:
    # Worker and scheduler processes build their app from this file (CRM_INSTANCE_PATH points here).
    lines = [f"{key} = {value!r}" for key, value in config.items()]
    (instance_path / "config.py").write_text("# Written by `make demo`.\n" + "\n".join(lines) + "\n")


def setup_demo(
    *,
    instance_path: Path | str = DEFAULT_INSTANCE,
    database_url: str | None = None,
    redis_url: str | None = None,
    queue: str = "crm-demo",
    n_inbox: int = 300,
    n_sent: int = 120,
    correspondents: int = 40,
    extra_config: dict[str, Any] | None = None,
) -> Demo:
    """Start Dovecot with the sample mailbox and a fresh CRM connected to it; the first sync is enqueued.

    Nothing is served: run a worker (or ``main``) to sync. Call ``Demo.stop()`` when done.
    """

    instance_path = Path(instance_path).resolve()
    _prepare_instance(instance_path)
    # Dovecot's unprivileged processes must reach its files: a world-readable temporary folder.
    base_dir = Path(tempfile.mkdtemp(prefix="crm-demo-"))
    base_dir.chmod(0o755)
    config = demo_config(instance_path, database_url=database_url, redis_url=redis_url, queue=queue,
                         ca_dir=str(base_dir))
    _write_config(instance_path, config)
    server = DovecotServer(base_dir=base_dir)
    try:
        server.start()
        mailbox_password = secrets.token_urlsafe(12)
        server.add_user(MAILBOX, mailbox_password)
        folders = sample_mailbox(MAILBOX, dt.datetime.now(dt.UTC), n_inbox=n_inbox, n_sent=n_sent,
                                 correspondents=correspondents)
        for folder, messages in folders.items():
            server.write_maildir(MAILBOX, folder, messages)
        spare_password = secrets.token_urlsafe(12)
        server.add_user(SPARE_MAILBOX, spare_password)
        for folder, messages in spare_mailbox(dt.datetime.now(dt.UTC)).items():
            server.write_maildir(SPARE_MAILBOX, folder, messages)

        app = create_app({**config, "INSTANCE_PATH": str(instance_path), **(extra_config or {})})
        upgrade_database(app)
        admin_password, agent_password = secrets.token_urlsafe(9), secrets.token_urlsafe(9)
        with app.app_context():
            create_agent(ADMIN_EMAIL, "Ada Admin", admin_password, admin=True)
            owner = create_agent(AGENT[0], AGENT[1], agent_password)
            _sample_automation()
            inbox = service.create_inbox(
                name=INBOX_NAME, host=server.host, port=server.imaps_port, security="ssl", username=MAILBOX,
                password=mailbox_password, owner_id=owner.id, ca_file=server.ca_file,
                settings={"create_users": True},  # contacts_import's Create users
            )
            inbox_id = inbox.id
            db.session.remove()
    except BaseException:
        server.close()
        shutil.rmtree(base_dir, ignore_errors=True)
        raise
    return Demo(server=server, app=app, config=config, instance_path=instance_path, inbox_id=inbox_id,
                admin_email=ADMIN_EMAIL, admin_password=admin_password, agent_email=AGENT[0],
                agent_password=agent_password, base_dir=base_dir,
                messages=sum(len(m) for m in folders.values()), spare_password=spare_password)


def _sample_automation() -> None:
    """Tag contacts who answer one of our e-mails (when the reply_condition plugin is there to say so)."""
    if "contact_replied" in event_types():
        db.session.add(AutomationRule(name="Tag contacts who replied", trigger="contact_replied",
                                      actions=[{"key": "add_tag", "params": {"tag": "replied"}}]))
        db.session.commit()


# --------------------------------------------------------------------------- serving


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:

    parser = argparse.ArgumentParser(prog="python -m plugins.imap_inbox.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--instance", default=str(DEFAULT_INSTANCE), help="instance folder (wiped on every run)")
    parser.add_argument("--messages", type=int, default=420, help="generated messages (about 70%% received)")
    args = parser.parse_args(argv)

    try:
        ensure_port_free(args.host, args.port, "make demo PORT=8000")
    except click.ClickException as exc:
        raise SystemExit(f"Error: {exc.message}") from None
    children: list[subprocess.Popen] = []
    demo: Demo | None = None
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the demo as cleanly as Ctrl-C
    try:
        ensure_redis(children)
        print("Starting Dovecot with the sample mailbox and a fresh CRM ...", flush=True)
        demo = setup_demo(instance_path=args.instance, n_inbox=args.messages * 5 // 7,
                          n_sent=args.messages - args.messages * 5 // 7)
        # Worker, scheduler and watcher as ``manage.py run`` starts them, on the demo's instance folder.
        start_background(children, env={**os.environ, "CRM_INSTANCE_PATH": str(demo.instance_path)},
                         extra=["watch"])
        print(f"""
  CRM demo running at http://{args.host}:{args.port}/

  Admin:  {demo.admin_email}  password {demo.admin_password}
  Agent:  {demo.agent_email}  password {demo.agent_password}

  The mailbox {MAILBOX} ({demo.messages} messages) is connected as "{INBOX_NAME}" and syncing now:
  Settings > Connected inboxes shows the progress; Contacts fill up within a minute.
  Try "Connect via IMAP" yourself (Settings > Connected inboxes) with a second mailbox on the same server:
    Host      {demo.server.host}        Port      {demo.server.imaps_port} (SSL/TLS)
    Username  {demo.spare_mailbox}
    Password  {demo.spare_password}
    CA file   {demo.server.ca_file}
              (the demo server's own certificate authority: paste this path into the form's CA file field)

  Data: {demo.instance_path} (made again on every run). Ctrl-C stops the demo and its mail server.
""", flush=True)
        run_simple(args.host, args.port, demo.app, threaded=True, use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        stop_children(children)
        if demo is not None:
            demo.stop()
        print("Demo stopped.")


if __name__ == "__main__":
    main()
