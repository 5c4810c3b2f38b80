"""Security, end to end with every plugin, the real Dovecot, Redis and database.

* CSRF: every route accepting POST/PUT/PATCH/DELETE (found in ``app.url_map``) refuses a request without token.
* Who may open what: every route, for anonymous visitors, agents and admins; agents never see inbox names
  or credentials.
* IMAP passwords never leak: not to logs (imapclient's protocol debug log included), HTML, JSON, CLI output,
  Redis (RQ job payloads and failures), exception reports or the database; encrypted at rest; keys rotate.
* TLS: certificates verified by default; no STARTTLS downgrade (a fake server that does not offer it).
* IMAP_BLOCK_PRIVATE_HOSTS: loopback, private and link-local addresses refused after DNS resolution and
  before any connection.
* Subjects, names and addresses from mail are escaped on every page that shows them.
"""
from __future__ import annotations

import base64
import contextlib
import ipaddress
import itertools
import json
import logging
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from markupsafe import escape
from werkzeug.routing import AnyConverter

from host_app.extensions import db
from host_app.models import AutomationBulkRun, AutomationRule, Contact
from host_app.testing import ADMIN_PASSWORD, AGENT_PASSWORD, log_in, make_agent
from plugins.imap_inbox.testing import mailgen
from plugins.mail.models import Message
from tests.support.imap_helpers import OWNER_EMAIL, OWNER_NAME, OWNER_PASSWORD, make_owner
from tests.support.mail_samples import big_attachment_message
from tests.support.redis_dump import redis_dump

PASSWORD = "Sup3r-S3cret-Pa55"
UTF8_PASSWORD = "Sup3r-S3cret-Pä55-ü"  # not ASCII: logs in with AUTHENTICATE PLAIN instead of LOGIN
WRONG_PASSWORD = "Wr0ng-Gue55-Pa55"
SECRETS = (PASSWORD, UTF8_PASSWORD, WRONG_PASSWORD)
INBOX_NAME = "SECRET-INBOX-NAME-42"
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")

_numbers = itertools.count(1)


# ---------------------------------------------------------------------------
# A populated CRM: agents, a synced inbox, contacts, a rule, a block-list entry
# ---------------------------------------------------------------------------


def new_account(dovecot, password: str) -> str:
    """A fresh Dovecot account with ``password`` (usernames never collide with conftest's)."""
    username = f"sec{next(_numbers)}-{uuid.uuid4().hex[:6]}@team.example"
    dovecot.add_user(username, password)
    return username


def fill_mailbox(dovecot, username: str, *, extra_inbox=(), extra_sent=()) -> None:
    """A short conversation with a customer, plus any extra raw messages."""
    start = datetime.now(UTC) - timedelta(days=3)
    ours = mailgen.make_message(("Team", username), ("Carla Customer", "carla@customer.example"),
                                "Your quote", date=start, message_id="<quote-1@team.example>")
    theirs = mailgen.make_message(("Carla Customer", "carla@customer.example"), username, "Re: Your quote",
                                  date=start + timedelta(hours=2), message_id="<reply-1@customer.example>",
                                  in_reply_to="<quote-1@team.example>")
    # Straight into the Maildir: no IMAP login (the harness's client cannot log in with a non-ASCII password).
    dovecot.write_maildir(username, "Sent", [ours, *extra_sent])
    dovecot.write_maildir(username, "INBOX", [theirs, *extra_inbox])


def run_worker(app) -> None:
    """Run every queued job on a real RQ worker (in this process, so logs are captured)."""
    from host_app.jobs import make_worker

    with app.app_context():
        make_worker(app, simple=True).work(burst=True)
        db.session.remove()


def build_world(app, dovecot, password: str = PASSWORD) -> dict:
    """Agents, an inbox named INBOX_NAME synced by a worker (Create users on), a contact, a rule, a block entry.

    Returns the ids that fill path parameters, plus what tests assert on.
    """
    from plugins.contacts_import.models import BlockedEntry
    from plugins.imap_inbox import service

    admin_id = make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True, name="Ada Admin")
    agent_id = make_agent(app, "agent@team.example", AGENT_PASSWORD, name="Alan Agent")
    owner_id = make_owner(app)
    username = new_account(dovecot, password)
    # Carla's scans: an e-mail with an attachment, so its page and download are in the matrix too.
    fill_mailbox(dovecot, username, extra_inbox=[big_attachment_message(b"scanned pages")])
    with app.app_context():
        inbox = service.create_inbox(name=INBOX_NAME, host=dovecot.host, port=dovecot.imaps_port, security="ssl",
                                     username=username, password=password, owner_id=owner_id, ca_file=dovecot.ca_file,
                                     settings={"create_users": True})
        inbox_id = inbox.id
    run_worker(app)
    with app.app_context():
        carla = db.session.scalar(db.select(Contact).where(Contact.email == "carla@customer.example"))
        assert carla is not None, "the sync with Create users on should have created the customer"
        rule = AutomationRule(name="Tag new contacts", trigger="contact_created",
                              actions=[{"key": "add_tag", "params": {"tag": "new"}}])
        entry = BlockedEntry(kind="domain", value="blocked.example")
        db.session.add_all([rule, entry])
        db.session.commit()
        bulk_run = AutomationBulkRun(rule_id=rule.id, origin="hand", audience="all:", audience_label="All contacts")
        db.session.add(bulk_run)
        db.session.commit()
        # Carla's scans: on her timeline, so every agent may open the e-mail and its attachment (section 2).
        message_id = db.session.scalar(db.select(Message.id).where(Message.message_id == "scans1@customer.example"))
        world = {"inbox_id": inbox_id, "contact_id": carla.id, "rule_id": rule.id, "entry_id": entry.id,
                 "run_id": bulk_run.id, "message_id": message_id, "admin_id": admin_id, "agent_id": agent_id,
                 "owner_id": owner_id, "username": username}
    return world


def path_values(app, world: dict) -> dict:
    """Real values for every path parameter name used by the routes."""
    return {
        "inbox_id": world["inbox_id"],
        "contact_id": world["contact_id"],
        "rule_id": world["rule_id"],
        "run_id": world.get("run_id", 1),  # a world without Run-now runs gets the 404 page
        "entry_id": world["entry_id"],
        "agent_id": world.get("owner_id", 1),  # not the agent or admin the tests log in as
        "message_id": world.get("message_id", 0),  # a world without mail gets the 404 page
        "section": "2",
        "name": "crm_condition_email_domain" if "crm_condition_email_domain" in app.extensions["plugins"].plugins
        else "reply_condition",
    }


def _static_file(app, endpoint: str) -> str:
    import os

    blueprint = endpoint.rpartition(".")[0]
    folder = app.static_folder if not blueprint else app.blueprints[blueprint].static_folder
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))[0]


def route_urls(app, world: dict, methods=None) -> Iterator[tuple[object, str, str]]:
    """``(rule, method, url)`` for every rule of the app, each path parameter filled with a real value.

    ``any(...)`` parameters give one URL per choice. An unknown parameter fails the test: a new route
    must be given a real value here, so that it is checked.
    """
    values = path_values(app, world)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        choices = []
        for arg in sorted(rule.arguments):
            converter = rule._converters[arg]
            if isinstance(converter, AnyConverter):
                choices.append([(arg, item) for item in sorted(converter.items)])
            elif arg == "filename":
                choices.append([(arg, _static_file(app, rule.endpoint))])
            elif arg in values:
                choices.append([(arg, values[arg])])
            else:
                pytest.fail(f"route {rule.rule}: no real value for <{arg}>; add one to path_values()")
        for combination in itertools.product(*choices):
            built = rule.build(dict(combination), append_unknown=False)
            assert built is not None, rule.rule
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                if methods is None or method in methods:
                    yield rule, method, built[1]


def audience(rule) -> str:
    """Who may use a route: 'public', 'agent' (any logged-in agent) or 'admin'."""
    if rule.endpoint == "static" or rule.endpoint.endswith(".static") or rule.rule in ("/login", "/favicon.ico"):
        return "public"
    if rule.rule.startswith(("/settings", "/automations")):
        return "admin"
    # /mail: an e-mail on a contact's timeline, for every agent as the timeline is (404 for mail off timelines).
    # /inboxes: the agent's own inboxes, read-only (an agent who owns none sees none).
    if rule.rule == "/" or rule.rule.startswith(("/contacts", "/mail", "/inboxes")) or rule.rule == "/logout":
        return "agent"
    pytest.fail(f"route {rule.rule} ({rule.endpoint}) is not classified: decide who may open it in audience()")


def database_dump(app) -> dict[str, list[tuple]]:
    """Every row of every table (sorted), to see that refused requests changed nothing."""
    with app.app_context():
        meta = sa.MetaData()
        meta.reflect(db.engine)
        dump = {}
        for table in meta.sorted_tables:
            rows = db.session.execute(sa.select(table)).all()
            dump[table.name] = sorted(tuple(map(repr, row)) for row in rows)
        db.session.remove()
        return dump


def csrf_token(client, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"', page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


# ---------------------------------------------------------------------------
# A) CSRF on every state-changing request
# ---------------------------------------------------------------------------

PLAUSIBLE_FORM = {
    "confirm": "y", "entry": "evil.example", "policy": "all", "name": "x", "email": "x@evil.example",
    "password": "whatever-1", "host": "imap.evil.example", "port": "993", "security": "ssl", "owner_id": "1",
    "tags": "x", "trigger": "manual", "match": "all", "op": "save",
}


def test_every_state_changing_route_refuses_requests_without_a_csrf_token(crm_app_factory, dovecot):
    app = crm_app_factory(WTF_CSRF_ENABLED=True)
    world = build_world(app, dovecot)
    client = app.test_client()

    refused = client.post("/login", data={"email": "admin@team.example", "password": ADMIN_PASSWORD})
    assert refused.status_code == 400 and "CSRF token is missing" in refused.get_data(as_text=True)
    token = csrf_token(client)
    logged_in = client.post("/login", data={"email": "admin@team.example", "password": ADMIN_PASSWORD,
                                            "csrf_token": token})
    assert logged_in.status_code == 302

    before = database_dump(app)
    checked = set()
    for rule, method, url in route_urls(app, world, methods=STATE_CHANGING):
        response = client.open(url, method=method, data=PLAUSIBLE_FORM)
        assert response.status_code == 400, f"{method} {url} answered {response.status_code} without a CSRF token"
        assert "CSRF token is missing" in response.get_data(as_text=True), f"{method} {url}"
        # A token of another session is no better than none.
        other = client.open(url, method=method, data={**PLAUSIBLE_FORM, "csrf_token": "IjAxMjM0NTY3ODki.bad.token"})
        assert other.status_code == 400, f"{method} {url} accepted a forged token"
        checked.add(rule.endpoint)
    assert database_dump(app) == before, "a request without a CSRF token changed the database"
    assert client.get("/contacts/").status_code == 200, "POST /logout without a token must not log out"

    # Every state-changing endpoint we know of was among those enumerated.
    assert {
        "auth.login", "auth.logout", "contacts.contact_new", "contacts.contact_edit", "settings.plugin_toggle",
        "automations.rule_edit", "automations.rule_delete", "automations.run_now", "imap_inbox.inbox_new",
        "imap_inbox.inbox_edit",
        "imap_inbox.inbox_sync", "imap_inbox.inbox_toggle", "imap_inbox.inbox_delete",
        "contacts_import.set_policy", "contacts_import.create_users", "contacts_import.block_add",
        "contacts_import.block_remove", "settings.agent_action",
    } <= checked

    # The same request with the session's token goes through (the 400s above were the CSRF check).
    token = csrf_token(client, "/settings/contacts-import/")
    accepted = client.post("/settings/contacts-import/block", data={"entry": "spam.example", "csrf_token": token})
    assert accepted.status_code == 302
    with app.app_context():
        from plugins.contacts_import.models import BlockedEntry

        assert db.session.scalar(db.select(BlockedEntry).where(BlockedEntry.value == "spam.example")) is not None


# ---------------------------------------------------------------------------
# A) Access matrix over every route
# ---------------------------------------------------------------------------


def _is_login_redirect(response) -> bool:
    return response.status_code == 302 and response.headers["Location"].split("?")[0].endswith("/login")


def _destructive_last(item) -> tuple:
    rule, method, url = item
    destructive = any(word in rule.endpoint for word in ("delete", "remove", "toggle", "logout"))
    return (destructive, url, method)


def test_access_matrix_over_every_route(app, dovecot):
    world = build_world(app, dovecot)
    anonymous = app.test_client()
    agent = log_in(app.test_client(), "agent@team.example", AGENT_PASSWORD)
    admin = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
    routes = list(route_urls(app, world))
    assert {audience(rule) for rule, _, _ in routes} == {"public", "agent", "admin"}
    before = database_dump(app)

    # Anonymous visitors: everything but the login page, static files and the icon sends them to /login.
    for rule, method, url in routes:
        response = anonymous.open(url, method=method, data={"confirm": "y"})
        if audience(rule) == "public":
            if method == "GET":
                assert response.status_code == 200, f"anonymous {method} {url}"
        else:
            assert _is_login_redirect(response), f"anonymous {method} {url}: {response.status_code}"

    # Agents: settings, inboxes, plugins, automations, contacts import are admin-only (403), even to POST.
    agent_pages: dict[str, str] = {}
    for rule, method, url in routes:
        if audience(rule) != "admin":
            continue
        response = agent.open(url, method=method, data={"confirm": "y", "entry": "x.example", "policy": "all"})
        assert response.status_code == 403, f"agent {method} {url}: {response.status_code}"
        agent_pages[f"{method} {url}"] = response.get_data(as_text=True)
    assert database_dump(app) == before, "a refused request changed the database"

    # Agents use the contacts pages.
    for rule, method, url in routes:
        if audience(rule) != "agent" or method != "GET":
            continue
        response = agent.get(url)
        expected = 302 if rule.rule == "/" else 200
        assert response.status_code == expected, f"agent GET {url}: {response.status_code}"
        agent_pages[f"GET {url}"] = response.get_data(as_text=True)
    for rule, method, url in sorted(routes, key=_destructive_last):
        if audience(rule) == "agent" and method != "GET" and rule.endpoint != "auth.logout":
            response = agent.open(url, method=method, data={})
            assert response.status_code < 500 and response.status_code != 403, f"agent {method} {url}"
            agent_pages[f"{method} {url}"] = response.get_data(as_text=True)

    # Agents never see the inbox's name or credentials; the timeline names the owner agent instead.
    timeline = agent_pages[f"GET /contacts/{world['contact_id']}"]
    assert "Re: Your quote" in timeline and "Your quote" in timeline
    assert f'<span class="source">{OWNER_NAME}</span>' in timeline
    # The inbox's address is for every reader (issue 15): on the timeline's inbox filter and the e-mail's
    # page. Here the login name is that address, so it may show there and nowhere else.
    message_page = agent_pages[f"GET /mail/messages/{world['message_id']}"]
    assert world["username"] in timeline and world["username"] in message_page
    shows_the_address = {f"GET /contacts/{world['contact_id']}", f"GET /mail/messages/{world['message_id']}"}
    for where, page in agent_pages.items():
        for secret in (INBOX_NAME, PASSWORD) if where in shows_the_address else (INBOX_NAME, PASSWORD,
                                                                                world["username"]):
            assert secret not in page, f"agent sees {secret!r} on {where}"

    # The inbox's owner sees its address and status on Your inboxes, still neither its name nor its password.
    owner_page = log_in(app.test_client(), OWNER_EMAIL, OWNER_PASSWORD).get("/inboxes/").get_data(as_text=True)
    assert world["username"] in owner_page and ">OK<" in owner_page
    assert INBOX_NAME not in owner_page and PASSWORD not in owner_page

    # Admins open every page, and no POST is refused to them.
    for rule, method, url in routes:
        if method != "GET":
            continue
        response = admin.get(url)
        expected = 302 if rule.rule == "/" else 200
        assert response.status_code == expected, f"admin GET {url}: {response.status_code}"
    assert INBOX_NAME in admin.get("/settings/inboxes/").get_data(as_text=True)
    for rule, method, url in sorted(routes, key=_destructive_last):
        if method == "GET" or rule.endpoint == "auth.logout":
            continue
        response = admin.open(url, method=method, data={})
        assert response.status_code < 500, f"admin {method} {url}: {response.status_code}"
        assert response.status_code != 403 and not _is_login_redirect(response), f"admin {method} {url}"

    # Logging out works for anyone logged in, and then the pages are closed again.
    for client in (agent, admin):
        assert _is_login_redirect(client.post("/logout"))
        assert _is_login_redirect(client.get("/contacts/"))


# ---------------------------------------------------------------------------
# A) IMAP passwords never leak
# ---------------------------------------------------------------------------


def secret_forms(secret: str) -> list[bytes]:
    """The password as bytes, and every base64 (standard and URL-safe) run that encoding it would contain."""
    raw = secret.encode("utf-8")
    forms = [raw]
    for offset in range(3):
        part = raw[offset:]
        part = part[: len(part) - len(part) % 3]
        if len(part) >= 9:
            forms += [base64.b64encode(part), base64.urlsafe_b64encode(part)]
    return forms


def leaks(blob: bytes | str, secrets=SECRETS) -> list[str]:
    """Which secrets (in any form of secret_forms) ``blob`` contains."""
    data = blob.encode("utf-8", "replace") if isinstance(blob, str) else bytes(blob)
    return [s for s in secrets if any(form in data for form in secret_forms(s))]


def database_rows(app) -> dict[str, list[dict]]:
    with app.app_context():
        meta = sa.MetaData()
        meta.reflect(db.engine)
        rows = {t.name: [dict(r._mapping) for r in db.session.execute(sa.select(t))] for t in meta.sorted_tables}
        db.session.remove()
        return rows


def _as_bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "replace")


def echoing_login(self, username, password):
    """A server that repeats the LOGIN arguments in its refusal (some do): the text must be scrubbed."""
    from imapclient.exceptions import LoginError

    raise LoginError(f"b'[AUTHENTICATIONFAILED] LOGIN {username} {password} rejected'")


def test_imap_passwords_never_leak(crm_app_factory, dovecot, redis_url, caplog, capfd, monkeypatch):
    import imapclient

    from plugins.imap_inbox import service, sync
    from plugins.imap_inbox.crypto import configured_keys
    from plugins.imap_inbox.models import ImapInbox

    caplog.set_level(logging.DEBUG)
    for name in ("imapclient", "imapclient.imaplib", "imapclient.imapclient", "rq", "rq.worker", "werkzeug",
                 "host_app", "plugins", "sqlalchemy.engine"):
        caplog.set_level(logging.DEBUG, logger=name)
    app = crm_app_factory()
    owner_id = make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True, name="Ada Admin")
    admin = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
    runner = app.test_cli_runner()
    artifacts: dict[str, bytes | str] = {}

    def keep(name: str, value) -> None:
        artifacts[f"{len(artifacts):03} {name}"] = value

    form_user, cli_user, utf8_user = (new_account(dovecot, p) for p in (PASSWORD, PASSWORD, UTF8_PASSWORD))
    for user in (form_user, cli_user, utf8_user):
        fill_mailbox(dovecot, user)

    def form(user: str, password: str, name: str) -> dict:
        return {"name": name, "provider": "other", "host": dovecot.host, "username": user, "password": password,
                "port": str(dovecot.imaps_port), "security": "ssl", "ca_file": dovecot.ca_file,
                "owner_id": str(owner_id)}

    # Connect via the form: a wrong password first, then the right ones (ASCII and not).
    wrong = admin.post("/settings/inboxes/new", data=form(form_user, WRONG_PASSWORD, "Form inbox"))
    assert wrong.status_code == 200 and "rejected the user name or password" in wrong.get_data(as_text=True)
    keep("form: wrong password", wrong.get_data())
    for user, password, name in ((form_user, PASSWORD, "Form inbox"), (utf8_user, UTF8_PASSWORD, "UTF-8 inbox")):
        response = admin.post("/settings/inboxes/new", data=form(user, password, name))
        assert response.status_code == 302, response.get_data(as_text=True)
        keep(f"form: connect {name}", response.get_data())
        keep(f"form: list after {name}", admin.get(response.headers["Location"]).get_data())

    # Connect via the CLI: a wrong password, then the right one.
    def cli_connect(name: str, user: str) -> list[str]:
        return ["inboxes", "connect", "--name", name, "--host", dovecot.host, "--port", str(dovecot.imaps_port),
                "--username", user, "--password-stdin", "--owner", "admin@team.example", "--ca-file", dovecot.ca_file]

    cli_args = cli_connect("CLI inbox", cli_user)
    result = runner.invoke(args=cli_args, input=WRONG_PASSWORD + "\n")
    assert result.exit_code == 1 and "auth_failed" in result.output
    keep("cli: connect wrong password", result.output)
    result = runner.invoke(args=cli_args, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    keep("cli: connect", result.output)
    with app.app_context():
        ids = {i.name: i.id for i in db.session.scalars(db.select(ImapInbox))}
        db.session.remove()
    assert set(ids) == {"Form inbox", "UTF-8 inbox", "CLI inbox"}

    # The first syncs run on a real RQ worker; one more in the foreground through the CLI.
    run_worker(app)
    with app.app_context():
        assert {i.name: i.status for i in db.session.scalars(db.select(ImapInbox))} == dict.fromkeys(ids, "ok")
        db.session.remove()
    result = runner.invoke(args=["inboxes", "sync", str(ids["CLI inbox"])])
    assert result.exit_code == 0, result.output
    keep("cli: sync", result.output)

    # Editing: a wrong new password is refused; re-entering the right one works.
    edit = {**form(form_user, WRONG_PASSWORD, "Form inbox")}
    response = admin.post(f"/settings/inboxes/{ids['Form inbox']}/edit", data=edit)
    assert response.status_code == 200 and "rejected" in response.get_data(as_text=True)
    keep("form: edit wrong password", response.get_data())
    response = admin.post(f"/settings/inboxes/{ids['Form inbox']}/edit", data={**edit, "password": PASSWORD})
    assert response.status_code == 302
    keep("form: edit right password", response.get_data())

    # A server that echoes the password in its refusal: via the form, the CLI and a worker's sync.
    with monkeypatch.context() as patch:
        patch.setattr(imapclient.IMAPClient, "login", echoing_login)
        response = admin.post("/settings/inboxes/new", data=form(new_account(dovecot, PASSWORD), PASSWORD, "Echo"))
        assert response.status_code == 200 and "***" in response.get_data(as_text=True)
        keep("form: echoing server", response.get_data())
        result = runner.invoke(args=cli_connect("Echo CLI", new_account(dovecot, PASSWORD)), input=PASSWORD + "\n")
        assert result.exit_code == 1 and "***" in result.output
        keep("cli: echoing server", result.output)
        with app.app_context():
            service.enqueue_sync(ids["CLI inbox"])
        run_worker(app)
    with app.app_context():
        echoed = db.session.get(ImapInbox, ids["CLI inbox"])
        assert echoed.status == "needs_attention" and "***" in echoed.error
        service.update_inbox(echoed, password=PASSWORD, check=True)  # back to normal
        db.session.remove()

    # A stored password that became wrong: the worker's sync needs attention.
    with app.app_context():
        service.update_inbox(db.session.get(ImapInbox, ids["Form inbox"]), password=WRONG_PASSWORD, check=False)
        db.session.remove()
    run_worker(app)
    with app.app_context():
        assert db.session.get(ImapInbox, ids["Form inbox"]).status == "needs_attention"
        service.update_inbox(db.session.get(ImapInbox, ids["Form inbox"]), password=PASSWORD, check=False)
        db.session.remove()
    run_worker(app)

    # A job that fails after logging in (a bug): RQ keeps the failure with its traceback.
    def broken_sync(self, *args):
        raise RuntimeError(f"forced failure while syncing inbox {self.inbox_id}")

    with monkeypatch.context() as patch:
        patch.setattr(sync.InboxSync, "sync", broken_sync)
        with app.app_context():
            job_id = service.enqueue_sync(ids["UTF-8 inbox"])
            assert job_id
        run_worker(app)
    with app.app_context():
        from rq.job import Job
        from rq.registry import FailedJobRegistry

        from host_app.jobs import queue, redis_connection

        failed = FailedJobRegistry(queue=queue()).get_job_ids()
        assert job_id in failed
        job = Job.fetch(job_id, connection=redis_connection())
        failure = job.latest_result()
        assert failure is not None and "forced failure" in failure.exc_string
        keep("rq: failed job exc_string", failure.exc_string)
        keep("rq: failed job description", str(job.description) + repr(job.args) + repr(job.kwargs))
        db.session.remove()

    # Every page an admin can open, the status JSON, the CLI listings.
    with app.app_context():
        from plugins.contacts_import.models import BlockedEntry

        carla = Contact(email="carla@customer.example", name="Carla Customer", owner_id=owner_id)
        rule = AutomationRule(name="r", trigger="manual", actions=[{"key": "add_tag", "params": {"tag": "t"}}])
        entry = BlockedEntry(kind="domain", value="blocked.example")
        db.session.add_all([carla, rule, entry])
        db.session.commit()
        bulk_run = AutomationBulkRun(rule_id=rule.id, origin="hand", audience="all:", audience_label="All contacts")
        db.session.add(bulk_run)
        db.session.commit()
        world = {"inbox_id": ids["Form inbox"], "contact_id": carla.id, "rule_id": rule.id, "entry_id": entry.id,
                 "run_id": bulk_run.id,
                 "message_id": db.session.scalar(db.select(Message.id).order_by(Message.id).limit(1)) or 0}
        db.session.remove()
    for _, _, url in route_urls(app, world, methods={"GET"}):
        response = admin.get(url)
        assert response.status_code < 500, url
        keep(f"page {url}", response.get_data())
    status = admin.get("/settings/inboxes/status.json")
    assert status.status_code == 200 and len(status.get_json()) == 3
    keep("status.json", status.get_data())
    for args in (["inboxes", "list", "--json"], ["inboxes", "list"], ["contacts", "list", "--json"],
                 ["contacts", "timeline", "carla@customer.example", "--json"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 0, result.output
        keep("cli: " + " ".join(args), result.output)
    assert {row["name"] for row in json.loads(runner.invoke(args=["inboxes", "list", "--json"]).output)} == set(ids)

    # Redis: every key and value of the test database (RQ job data decompressed).
    dump = redis_dump(redis_url)
    assert any(key.startswith("rq:job:") for key in dump), "expected RQ jobs in Redis"
    job_data = [v for key, values in dump.items() if key.startswith("rq:job:") for v in values]
    assert any(b"sync_inbox" in v for v in job_data), "RQ job data should have been decompressed"
    for key, values in dump.items():
        for value in values:
            keep(f"redis {key}", value)

    # The database: no plaintext anywhere; the password column is ciphertext that decrypts with the key.
    rows = database_rows(app)
    for table, table_rows in rows.items():
        for row in table_rows:
            for column, value in row.items():
                if value is not None:
                    keep(f"db {table}.{column}", _as_bytes(value))
    from cryptography.fernet import Fernet

    with app.app_context():
        fernet = Fernet(configured_keys()[0])
        names = {row["id"]: row["name"] for row in rows["mail_inbox"]}
        decrypted = {names[row["id"]]: fernet.decrypt(bytes(row["password_encrypted"])).decode()
                     for row in rows["imap_inbox"]}
    assert decrypted == {"Form inbox": PASSWORD, "UTF-8 inbox": UTF8_PASSWORD, "CLI inbox": PASSWORD}

    # The logs (imapclient's protocol lines included) and whatever reached stdout/stderr.
    # imapclient's debug records (its protocol log) were captured, so a LOGIN line would have been seen.
    assert any(r.name.startswith("imapclient") and r.levelno == logging.DEBUG and "Logged in as" in r.getMessage()
               for r in caplog.records), "imapclient's debug log was not captured"
    log_text = caplog.text + "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records
    )
    keep("logs", log_text)
    out, err = capfd.readouterr()
    keep("stdout", out)
    keep("stderr", err)

    found = {name: leaked for name, value in artifacts.items() if (leaked := leaks(value))}
    assert found == {}, f"IMAP passwords leaked into: {sorted(found)}"


def test_passwords_are_encrypted_at_rest_and_keys_rotate(crm_app_factory, dovecot, tmp_path):
    from cryptography.fernet import Fernet

    from plugins.imap_inbox import service
    from plugins.imap_inbox.account import settings_for
    from plugins.imap_inbox.connection import check_login
    from plugins.imap_inbox.crypto import EncryptionKeyError, decrypt_password
    from plugins.imap_inbox.models import ImapInbox

    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old_app = crm_app_factory(IMAP_ENCRYPTION_KEYS=[old_key])
    owner_id = make_owner(old_app)
    username = new_account(dovecot, PASSWORD)
    fill_mailbox(dovecot, username)
    with old_app.app_context():
        inbox_id = service.create_inbox(name="Rotating", host=dovecot.host, port=dovecot.imaps_port,
                                        security="ssl", username=username, password=PASSWORD, owner_id=owner_id,
                                        ca_file=dovecot.ca_file).id
        stored = bytes(db.session.get(ImapInbox, inbox_id).password_encrypted)
        db.session.remove()
    assert not leaks(stored) and Fernet(old_key).decrypt(stored).decode() == PASSWORD

    # Only the new key, before rotating: nothing decrypts, and rotate-key refuses without changing anything.
    new_only = crm_app_factory(IMAP_ENCRYPTION_KEYS=new_key)
    result = new_only.test_cli_runner().invoke(args=["inboxes", "rotate-key"])
    assert result.exit_code == 1 and "cannot be decrypted" in result.output and new_key not in result.output
    with new_only.app_context():
        with pytest.raises(EncryptionKeyError):
            decrypt_password(db.session.get(ImapInbox, inbox_id).password_encrypted)
        assert bytes(db.session.get(ImapInbox, inbox_id).password_encrypted) == stored
        db.session.remove()

    # New key first, old one kept: rotate-key re-encrypts with the new key.
    both = crm_app_factory(IMAP_ENCRYPTION_KEYS=[new_key, old_key])
    result = both.test_cli_runner().invoke(args=["inboxes", "rotate-key"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"reencrypted": 1}

    # Then with only the new key the password decrypts, the login works and a sync succeeds.
    with new_only.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        rotated = bytes(inbox.password_encrypted)
        assert rotated != stored and not leaks(rotated)
        assert decrypt_password(rotated) == PASSWORD
        check_login(settings_for(inbox))
        from plugins.imap_inbox.jobs import sync_inbox

        assert sync_inbox(inbox_id)["status"] == "ok"
        db.session.remove()
    # ... and the old key alone no longer opens it.
    with old_app.app_context():
        with pytest.raises(EncryptionKeyError):
            decrypt_password(db.session.get(ImapInbox, inbox_id).password_encrypted)
        db.session.remove()


def test_a_broken_encryption_key_is_reported_without_showing_it(crm_app_factory, dovecot, caplog):
    from plugins.imap_inbox import service
    from plugins.imap_inbox.jobs import sync_inbox

    good = crm_app_factory()
    owner_id = make_owner(good)
    with good.app_context():
        inbox_id = service.create_inbox(name="Keyed", host=dovecot.host, port=dovecot.imaps_port, security="ssl",
                                        username=new_account(dovecot, PASSWORD), password=PASSWORD,
                                        owner_id=owner_id, ca_file=dovecot.ca_file).id
        db.session.remove()
    broken_key = "Not-A-Fernet-Key-But-Still-A-Secret-0123456789"
    broken = crm_app_factory(IMAP_ENCRYPTION_KEYS=broken_key)
    result = broken.test_cli_runner().invoke(args=["inboxes", "rotate-key"])
    assert result.exit_code == 1 and "#1 is not a valid Fernet key" in result.output
    with broken.app_context():
        summary = sync_inbox(inbox_id)
        assert summary["status"] == "needs_attention" and "not a valid Fernet key" in summary["error"]
        db.session.remove()
    for text in (result.output, json.dumps(summary), caplog.text):
        assert broken_key not in text and not leaks(text)


def test_generated_key_file_is_private(app):
    import os
    import stat

    from plugins.imap_inbox.crypto import KEY_FILE, encrypt_password

    with app.app_context():
        token = encrypt_password(PASSWORD)
    assert not leaks(token)
    path = os.path.join(app.instance_path, KEY_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# ---------------------------------------------------------------------------
# A) TLS: verified certificates, no STARTTLS downgrade
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["ssl", "starttls"])
@pytest.mark.parametrize("ca", ["none", "wrong"])
def test_certificates_are_verified_by_default(app, dovecot, security, ca):
    from plugins.imap_inbox import service
    from plugins.imap_inbox.connection import ConnectionSettings, ImapConnectError, check_login
    from plugins.imap_inbox.models import ImapInbox

    username = new_account(dovecot, PASSWORD)
    port = dovecot.imaps_port if security == "ssl" else dovecot.imap_port
    ca_file = None if ca == "none" else dovecot.wrong_ca_file
    settings = ConnectionSettings(host=dovecot.host, port=port, security=security, username=username,
                                  password=PASSWORD, ca_file=ca_file, timeout=10)
    with pytest.raises(ImapConnectError) as caught:
        check_login(settings)
    assert caught.value.kind == "certificate_untrusted" and caught.value.permanent
    assert "certificate" in caught.value.message.lower() and PASSWORD not in caught.value.message

    owner_id = make_owner(app)
    with app.app_context():
        with pytest.raises(ImapConnectError) as caught:
            service.create_inbox(name="Untrusted", host=dovecot.host, port=port, security=security,
                                 username=username, password=PASSWORD, owner_id=owner_id, ca_file=ca_file)
        assert caught.value.kind == "certificate_untrusted"
        assert db.session.scalars(db.select(ImapInbox)).all() == []
        db.session.remove()


def test_a_sync_without_the_private_ca_stops_with_an_untrusted_certificate(app, dovecot):
    from plugins.imap_inbox import service
    from plugins.imap_inbox.jobs import sync_inbox
    from plugins.imap_inbox.models import ImapInbox

    owner_id = make_owner(app)
    username = new_account(dovecot, PASSWORD)
    with app.app_context():
        inbox = service.create_inbox(name="Trusted first", host=dovecot.host, port=dovecot.imaps_port,
                                     security="ssl", username=username, password=PASSWORD, owner_id=owner_id,
                                     ca_file=dovecot.ca_file)
        # The CA is gone: the system store decides.
        service.update_inbox(inbox, ca_file=None, password=PASSWORD, check=False)
        summary = sync_inbox(inbox.id)
        assert summary["status"] == "needs_attention" and summary["error_kind"] == "certificate_untrusted"
        assert db.session.get(ImapInbox, inbox.id).status == "needs_attention"
        db.session.remove()


class FakeImapServer:
    """A tiny IMAP greeter on loopback that records every line it receives.

    It never offers STARTTLS (``starttls="absent"``), or offers it and then refuses the command
    (``starttls="refused"``). It would happily accept a plaintext LOGIN, which is the point: the client
    must never send one.
    """

    def __init__(self, *, capability_in_greeting: bool = False, starttls: str = "absent"):
        self.capability_in_greeting = capability_in_greeting
        self.starttls = starttls
        self.received: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def capabilities(self) -> bytes:
        caps = b"IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN AUTH=LOGIN"
        return caps + (b" STARTTLS" if self.starttls == "refused" else b"")

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(10)
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        code = b"[CAPABILITY " + self.capabilities + b"] " if self.capability_in_greeting else b""
        conn.sendall(b"* OK " + code + b"Fake IMAP ready\r\n")
        buffer = b""
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                self.received.append(line)
                tag, _, rest = line.partition(b" ")
                command = rest.split(b" ", 1)[0].upper()
                if command == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY " + self.capabilities + b"\r\n" + tag + b" OK done\r\n")
                elif command == b"STARTTLS":
                    conn.sendall(tag + b" NO STARTTLS is not available right now\r\n")
                elif command == b"LOGOUT":
                    conn.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                    return
                elif command == b"AUTHENTICATE":
                    conn.sendall(b"+ \r\n")
                else:  # LOGIN and anything else: yes (a server that would take a plaintext password)
                    conn.sendall(tag + b" OK done\r\n")

    def saw_credentials(self, password: str) -> bool:
        everything = b"\n".join(self.received)
        return (any(re.search(rb"^\S+ (LOGIN|AUTHENTICATE)\b", line, re.I) for line in self.received)
                or bool(leaks(everything, (password,))))

    def close(self) -> None:
        self._stop.set()
        # shutdown() wakes the accept() that _serve blocks in; close() alone does not (on Linux), and the
        # join would wait out its whole timeout after every test.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def fake_imap():
    servers: list[FakeImapServer] = []

    def make(**kwargs) -> FakeImapServer:
        servers.append(FakeImapServer(**kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.mark.parametrize("capability_in_greeting", [False, True])
@pytest.mark.parametrize("password", [PASSWORD, UTF8_PASSWORD])
def test_starttls_is_never_skipped_when_the_server_does_not_offer_it(fake_imap, capability_in_greeting, password):
    from plugins.imap_inbox.connection import ConnectionSettings, ImapConnectError, connect

    server = fake_imap(capability_in_greeting=capability_in_greeting)
    with pytest.raises(ImapConnectError) as caught:
        connect(ConnectionSettings(host="127.0.0.1", port=server.port, security="starttls",
                                   username="someone@team.example", password=password, timeout=10))
    assert caught.value.kind == "starttls_unavailable" and caught.value.permanent
    assert "STARTTLS" in caught.value.message and "unencrypted" in caught.value.hint
    assert server.connections == 1 and server.received, "the client should have talked to the fake server"
    assert not server.saw_credentials(password), server.received


def test_a_refused_starttls_command_never_falls_back_to_plaintext(fake_imap):
    from plugins.imap_inbox.connection import ConnectionSettings, ImapConnectError, connect

    server = fake_imap(starttls="refused")
    with pytest.raises(ImapConnectError):
        connect(ConnectionSettings(host="127.0.0.1", port=server.port, security="starttls",
                                   username="someone@team.example", password=PASSWORD, timeout=10))
    assert any(b"STARTTLS" in line.upper() for line in server.received)
    assert not server.saw_credentials(PASSWORD), server.received


def test_starttls_downgrade_is_refused_in_the_form_and_the_sync(app, admin_client, admin, fake_imap):
    from plugins.imap_inbox import service
    from plugins.imap_inbox.jobs import sync_inbox
    from plugins.imap_inbox.models import ImapInbox

    server = fake_imap()
    response = admin_client.post("/settings/inboxes/new", data={
        "name": "Downgraded", "provider": "other", "host": "127.0.0.1", "port": str(server.port),
        "security": "starttls", "username": "someone@team.example", "password": PASSWORD, "owner_id": str(admin),
    })
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "does not offer STARTTLS" in page and PASSWORD not in page
    with app.app_context():
        assert db.session.scalars(db.select(ImapInbox)).all() == []
        # Saved without the check (as the CLI's --no-check does): the sync refuses just the same.
        inbox = service.create_inbox(name="Downgraded", host="127.0.0.1", port=server.port, security="starttls",
                                     username="someone@team.example", password=PASSWORD, owner_id=admin,
                                     check=False)
        summary = sync_inbox(inbox.id)
        assert summary["status"] == "needs_attention" and summary["error_kind"] == "starttls_unavailable"
        db.session.remove()
    assert server.connections == 2
    assert not server.saw_credentials(PASSWORD), server.received


# ---------------------------------------------------------------------------
# A) IMAP_BLOCK_PRIVATE_HOSTS
# ---------------------------------------------------------------------------


class ConnectRecorder:
    """Listens on 127.0.0.1 and ::1 (same port) and counts accepted connections."""

    def __init__(self):
        self.accepted = 0
        self._stop = threading.Event()
        self.v4 = socket.create_server(("127.0.0.1", 0))
        self.port = self.v4.getsockname()[1]
        self.sockets = [self.v4]
        with contextlib.suppress(OSError):
            self.sockets.append(socket.create_server(("::1", self.port), family=socket.AF_INET6))
        for sock in self.sockets:
            sock.settimeout(0.2)
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock):
        while True:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                if self._stop.is_set():
                    return
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self._stop.set()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def connect_attempts(monkeypatch) -> list:
    """Every outgoing socket connection, recorded; any to a non-loopback address is refused before it happens."""
    attempts: list = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create_connection = socket.create_connection

    def _check(address):
        host = address[0] if isinstance(address, tuple) else address
        attempts.append(address)
        try:
            loopback = ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise OSError(f"test guard: no traffic to {host}")

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check(address)
        return real_connect_ex(self, address)

    def create_connection(address, *args, **kwargs):
        _check(address)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return attempts


@pytest.fixture
def recorder():
    listener = ConnectRecorder()
    yield listener
    listener.close()


PRIVATE_HOSTS = ["127.0.0.1", "localhost", "10.0.0.1", "169.254.1.1", "::1", "127.1", "0.0.0.0",
                 "::ffff:127.0.0.1", "192.168.1.1", "172.16.0.1", "100.64.0.1", "fc00::1",
                 # IPv6 transition forms of loopback and private IPv4 addresses: NAT64, 6to4, IPv4-compatible.
                 "64:ff9b::7f00:1", "64:ff9b::a00:1", "2002:7f00:1::1", "::127.0.0.1", "::10.0.0.1",
                 "2001:0:4136:e378:8000:63bf:80ff:fffe"]


@pytest.mark.parametrize("host", PRIVATE_HOSTS)
def test_private_hosts_are_refused_before_any_connection(crm_app_factory, recorder, connect_attempts, host):
    from plugins.imap_inbox.connection import ConnectionSettings, ImapConnectError, check_login

    app = crm_app_factory(IMAP_BLOCK_PRIVATE_HOSTS=True)
    with app.app_context():
        with pytest.raises(ImapConnectError) as caught:
            check_login(ConnectionSettings(host=host, port=recorder.port, username="u@team.example",
                                           password=PASSWORD, timeout=5))
    error = caught.value
    assert error.kind == "private_host_blocked" and error.permanent
    assert host in error.message and "private or local network address" in error.message
    assert "IMAP_BLOCK_PRIVATE_HOSTS" in error.hint and PASSWORD not in error.message
    assert not [a for a in connect_attempts if a[1] == recorder.port], connect_attempts
    assert not [a for a in connect_attempts if not ipaddress.ip_address(str(a[0]).split("%")[0]).is_loopback]
    assert recorder.accepted == 0


def test_names_resolving_to_a_private_address_are_refused(crm_app_factory, recorder, connect_attempts,
                                                            monkeypatch):
    """The check is on the resolved addresses: one private address among public ones is enough."""
    from plugins.imap_inbox.connection import ConnectionSettings, ImapConnectError, check_login

    real_getaddrinfo = socket.getaddrinfo
    answers = {"rebound.example": ["10.0.0.1"], "mixed.example": ["93.184.216.34", "169.254.1.1"]}

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    app = crm_app_factory(IMAP_BLOCK_PRIVATE_HOSTS=True)
    with app.app_context():
        for host, private in (("rebound.example", "10.0.0.1"), ("mixed.example", "169.254.1.1")):
            with pytest.raises(ImapConnectError) as caught:
                check_login(ConnectionSettings(host=host, port=recorder.port, username="u@team.example",
                                               password=PASSWORD, timeout=5))
            # The refusal names what was typed, never what it resolved to.
            assert caught.value.kind == "private_host_blocked" and private not in caught.value.message
            assert host in caught.value.message
    assert connect_attempts == []


def test_private_hosts_in_the_form_and_at_sync_time(crm_app_factory, dovecot, connect_attempts):
    from plugins.imap_inbox import service
    from plugins.imap_inbox.jobs import sync_inbox
    from plugins.imap_inbox.models import ImapInbox

    # Saved while private hosts were allowed ...
    allowed = crm_app_factory(IMAP_BLOCK_PRIVATE_HOSTS=False)
    owner_id = make_agent(allowed, "admin@team.example", ADMIN_PASSWORD, admin=True, name="Ada Admin")
    username = new_account(dovecot, PASSWORD)
    with allowed.app_context():
        inbox_id = service.create_inbox(name="Local", host="127.0.0.1", port=dovecot.imaps_port, security="ssl",
                                        username=username, password=PASSWORD, owner_id=owner_id,
                                        ca_file=dovecot.ca_file).id
        db.session.remove()
    assert any(a[1] == dovecot.imaps_port for a in connect_attempts)

    # ... then refused at connect time once they are blocked: no connection to Dovecot at all.
    blocked = crm_app_factory(IMAP_BLOCK_PRIVATE_HOSTS=True)
    connect_attempts.clear()
    with blocked.app_context():
        summary = sync_inbox(inbox_id)
        assert summary["status"] == "needs_attention" and summary["error_kind"] == "private_host_blocked"
        inbox = db.session.get(ImapInbox, inbox_id)
        assert "private or local network address" in inbox.error
        db.session.remove()
    client = log_in(blocked.test_client(), "admin@team.example", ADMIN_PASSWORD)
    for host in ("10.0.0.1", "169.254.1.1", "localhost"):
        response = client.post("/settings/inboxes/new", data={
            "name": "Blocked", "provider": "other", "host": host, "port": str(dovecot.imaps_port),
            "security": "ssl", "username": new_account(dovecot, PASSWORD), "password": PASSWORD,
            "ca_file": dovecot.ca_file, "owner_id": str(owner_id),
        })
        page = response.get_data(as_text=True)
        assert response.status_code == 200 and "private or local network address" in page, host
    with blocked.app_context():
        assert db.session.scalar(db.select(sa.func.count(ImapInbox.id))) == 1
        db.session.remove()
    assert [a for a in connect_attempts if a[1] == dovecot.imaps_port] == []
    assert not [a for a in connect_attempts if not ipaddress.ip_address(str(a[0]).split("%")[0]).is_loopback]


def test_private_hosts_are_blocked_by_default_and_allowed_when_switched_off(crm_app_factory, dovecot):
    """Production configuration has no IMAP_BLOCK_PRIVATE_HOSTS: blocked. The suite sets it off explicitly."""
    from plugins.imap_inbox.connection import ConnectionSettings, ImapConnectError, check_login

    username = new_account(dovecot, PASSWORD)
    settings = ConnectionSettings(host="127.0.0.1", port=dovecot.imaps_port, username=username,
                                  password=PASSWORD, ca_file=dovecot.ca_file, timeout=10)
    production = crm_app_factory()
    del production.config["IMAP_BLOCK_PRIVATE_HOSTS"]  # what the tests' configuration adds
    with production.app_context():
        with pytest.raises(ImapConnectError) as caught:
            check_login(settings)
        assert caught.value.kind == "private_host_blocked"
    switched_off = crm_app_factory(IMAP_BLOCK_PRIVATE_HOSTS=False)
    with switched_off.app_context():
        for host in ("127.0.0.1", "localhost"):
            check_login(ConnectionSettings(host=host, port=dovecot.imaps_port, username=username,
                                           password=PASSWORD, ca_file=dovecot.ca_file, timeout=10))


@pytest.mark.parametrize("value, blocked", [
    ("False", False), ("false", False), ("0", False), ("no", False), ("off", False), ("", False), (False, False),
    ("True", True), ("true", True), ("1", True), ("yes", True), ("on", True), (True, True), (1, True),
])
def test_block_private_hosts_setting_reads_words_from_the_environment(crm_app_factory, dovecot, value, blocked):
    """CRM_IMAP_BLOCK_PRIVATE_HOSTS=False arrives as the string "False": it must mean off, as the hint says."""
    from plugins.imap_inbox.connection import ConnectionSettings, ImapConnectError, check_login

    username = new_account(dovecot, PASSWORD)
    app = crm_app_factory(IMAP_BLOCK_PRIVATE_HOSTS=value)
    settings = ConnectionSettings(host="127.0.0.1", port=dovecot.imaps_port, username=username, password=PASSWORD,
                                  ca_file=dovecot.ca_file, timeout=10)
    with app.app_context():
        if blocked:
            with pytest.raises(ImapConnectError, match="private or local network address"):
                check_login(settings)
        else:
            check_login(settings)


# ---------------------------------------------------------------------------
# A) Markup from mail is escaped everywhere it is shown
# ---------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
QUOTED_LOCAL_PART_ADDRESS = '"<svg/onload=alert(1)>"@xss.example'
ATOM_LOCAL_PART_ADDRESS = "o'brien&co'x=1{y}@xss.example"  # ' and & are significant in HTML too
RAW_MARKERS = ("<script>alert", "<img src=x", "<svg/onload", "<b>bold", "o'brien&co")


def test_markup_from_mail_is_escaped_on_every_page(app, admin_client, admin, dovecot):
    from plugins.imap_inbox import service
    from plugins.imap_inbox.jobs import sync_inbox

    username = new_account(dovecot, PASSWORD)
    when = datetime.now(UTC) - timedelta(days=2)
    subject = f"Offer {SCRIPT} {IMG}"
    sender_name = f"Mallory {SCRIPT}"
    recipient_name = f"Trudy {IMG}"
    inbound = mailgen.make_message((sender_name, "mallory@xss.example"), username, subject, date=when,
                                   message_id="<xss-1@xss.example>", body=f"Hi {SCRIPT} <b>bold</b>\n")
    inbound_svg = mailgen.make_message(("Svg Sender", QUOTED_LOCAL_PART_ADDRESS), username, f"From svg {IMG}",
                                       date=when + timedelta(hours=1), message_id="<xss-2@xss.example>")
    inbound_atom = mailgen.make_message(("Atom Sender", ATOM_LOCAL_PART_ADDRESS), username, f"From atom {SCRIPT}",
                                        date=when + timedelta(hours=1), message_id="<xss-4@xss.example>")
    sent = mailgen.make_message(("Team", username), [(recipient_name, "trudy@xss.example"),
                                                     ("", QUOTED_LOCAL_PART_ADDRESS), ("", ATOM_LOCAL_PART_ADDRESS)],
                                f"Re: {subject}", date=when + timedelta(hours=2),
                                message_id="<xss-3@team.example>", in_reply_to="<xss-1@xss.example>")
    fill_mailbox(dovecot, username, extra_inbox=[inbound, inbound_svg, inbound_atom], extra_sent=[sent])

    with app.app_context():
        inbox = service.create_inbox(name=f"Inbox {SCRIPT}", host=dovecot.host, port=dovecot.imaps_port,
                                     security="ssl", username=username, password=PASSWORD, owner_id=admin,
                                     ca_file=dovecot.ca_file, extra_folders=[f"Folder {IMG}"])
        inbox_id = inbox.id
        summary = sync_inbox(inbox_id)
        assert summary["status"] == "ok", summary
        db.session.add(AutomationRule(name=f"Rule {SCRIPT}", trigger="contact_created",
                                      actions=[{"key": "add_tag", "params": {"tag": f"tag {IMG}"}}]))
        db.session.commit()
        db.session.remove()

    pages: dict[str, str] = {}
    # Before Create users is on, the contacts import shows a sample of who would become a contact.
    pages["contacts import sample"] = admin_client.get("/settings/contacts-import/").get_data(as_text=True)
    assert 'class="list sample"' in pages["contacts import sample"]
    response = admin_client.post(f"/settings/contacts-import/inboxes/{inbox_id}/create-users/on")
    assert response.status_code == 302
    run_worker(app)

    with app.app_context():
        contacts = {c.email: (c.id, c.name) for c in db.session.scalars(db.select(Contact))}
        db.session.remove()
    assert {"mallory@xss.example", "trudy@xss.example", ATOM_LOCAL_PART_ADDRESS} <= set(contacts), contacts
    pages["contact list"] = admin_client.get("/contacts/").get_data(as_text=True)
    for email, (contact_id, _) in contacts.items():
        pages[f"contact {email}"] = admin_client.get(f"/contacts/{contact_id}").get_data(as_text=True)
        pages[f"contact edit {email}"] = admin_client.get(f"/contacts/{contact_id}/edit").get_data(as_text=True)
    pages["inboxes list"] = admin_client.get("/settings/inboxes/").get_data(as_text=True)
    pages["inbox edit"] = admin_client.get(f"/settings/inboxes/{inbox_id}/edit").get_data(as_text=True)
    pages["inbox delete"] = admin_client.get(f"/settings/inboxes/{inbox_id}/delete").get_data(as_text=True)
    pages["contacts import"] = admin_client.get("/settings/contacts-import/").get_data(as_text=True)
    pages["automation run log"] = admin_client.get("/automations/runs").get_data(as_text=True)
    pages["automations"] = admin_client.get("/automations/").get_data(as_text=True)

    for name, page in pages.items():
        for marker in RAW_MARKERS:
            assert marker not in page, f"unescaped {marker!r} on the {name} page"

    def shown(page_name: str, *values: str) -> None:
        for value in values:
            assert str(escape(value)) in pages[page_name], f"{value!r} is not shown (escaped) on {page_name}"

    mallory, trudy = contacts["mallory@xss.example"][1], contacts["trudy@xss.example"][1]
    assert "<script>" in mallory and '"><img' in trudy, "the names from mail should be kept as text"
    shown("contacts import sample", mallory, trudy, ATOM_LOCAL_PART_ADDRESS)
    shown("contact list", mallory, trudy, ATOM_LOCAL_PART_ADDRESS)
    shown("contact mallory@xss.example", mallory, subject)
    shown(f"contact {ATOM_LOCAL_PART_ADDRESS}", ATOM_LOCAL_PART_ADDRESS, f"From atom {SCRIPT}", f"Re: {subject}")
    shown("contact trudy@xss.example", trudy, f"Re: {subject}")
    shown("inboxes list", f"Inbox {SCRIPT}", f"Folder {IMG}")
    shown("automation run log", f"Rule {SCRIPT}", ATOM_LOCAL_PART_ADDRESS, f"tag {IMG}")
    if QUOTED_LOCAL_PART_ADDRESS in contacts:
        shown("contact list", QUOTED_LOCAL_PART_ADDRESS)
        shown(f"contact {QUOTED_LOCAL_PART_ADDRESS}", QUOTED_LOCAL_PART_ADDRESS, f"From svg {IMG}")
