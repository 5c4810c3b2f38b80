"""Settings > Connected inboxes, through the Flask test client against the real Dovecot, Redis and database.

One browser test (Chromium via Playwright) checks the two scripts: presets fill the
form, and the list's progress bar follows the status JSON without a reload.
"""
from __future__ import annotations

import html
import json
import os
import re
import socket
import threading

import pytest
import sqlalchemy as sa
from redis import Redis
from rq import Queue

from host_app.extensions import db
from host_app.models import Agent
from host_app.testing import ADMIN_PASSWORD, make_agent, run_jobs
from plugins.contacts_import.mailbox_setting import create_users_on
from tests.support.redis_dump import redis_plaintext

BASE = "/settings/inboxes"
STATUS_KEYS = {
    "id", "status", "progress_done", "progress_total", "error", "error_hint",
    "last_synced_at", "next_sync_at", "message_count", "watch",
}

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def form_data(mailbox, owner: int, **overrides) -> dict:
    data = {
        "name": "Support desk",
        "provider": "other",
        "host": mailbox.host,
        "username": mailbox.username,
        "password": mailbox.password,
        "port": str(mailbox.port),
        "security": "ssl",
        "ca_file": mailbox.ca_file,
        "owner_id": str(owner),
        "extra_folders": "",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def inboxes(app):
    from plugins.imap_inbox.models import ImapInbox

    with app.app_context():
        rows = db.session.scalars(db.select(ImapInbox).order_by(ImapInbox.id)).all()
        db.session.expunge_all()
        return rows


def one_inbox(app):
    rows = inboxes(app)
    assert len(rows) == 1
    return rows[0]


def create_users_is_on(app, inbox_id: int) -> bool:
    """contacts_import's setting, saved through the form's fields from other plugins."""
    with app.app_context():
        return create_users_on(inbox_id)


def field_block(page: str, field_id: str) -> str:
    """The HTML of one form field's wrapper (label, input, hints, errors)."""
    match = re.search(rf'<div class="field[^"]*" id="field-{field_id}">(.*?)</div>', page, re.S)
    assert match, f"no field {field_id}"
    return match.group(0)


def input_value(page: str, field_id: str) -> str | None:
    match = re.search(rf'<input[^>]*\bid="{field_id}"[^>]*>', page)
    assert match, f"no input {field_id}"
    value = re.search(r'\bvalue="([^"]*)"', match.group(0))
    return html.unescape(value.group(1)) if value else None


def create_via_service(app, mailbox, owner_id: int, **overrides):
    """An inbox created the way the form does it (login checked), for tests about other pages."""
    from plugins.imap_inbox import service

    fields = dict(
        name="Sales", host=mailbox.host, port=mailbox.port, security="ssl", username=mailbox.username,
        password=mailbox.password, owner_id=owner_id, ca_file=mailbox.ca_file,
    )
    fields.update(overrides)
    with app.app_context():
        inbox = service.create_inbox(**fields)
        return inbox.id


def set_inbox(app, inbox_id: int, **values) -> None:
    from plugins.imap_inbox.models import ImapInbox

    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        for key, value in values.items():
            setattr(inbox, key, value)
        db.session.commit()


def message(n: int, to: str) -> bytes:
    return (
        f"From: Carol Client <carol@client.example>\r\nTo: {to}\r\n"
        f"Subject: Question {n}\r\nMessage-ID: <q{n}@client.example>\r\n"
        f"Date: Mon, 0{n} Jan 2024 10:00:00 +0000\r\n\r\nHello {n}\r\n"
    ).encode()


@pytest.fixture
def owner_id(admin) -> int:
    return admin


# ---------------------------------------------------------------------------
# The "Connect via IMAP" form
# ---------------------------------------------------------------------------


def test_form_renders_every_field_in_order_with_presets(app, admin_client, owner_id):
    make_agent(app, "gone@team.example", "password-gone-1", name="Gina Gone")
    with app.app_context():
        gone = db.session.scalar(db.select(Agent).where(Agent.email == "gone@team.example"))
        gone.active = False
        db.session.commit()

    page = admin_client.get(f"{BASE}/new").text

    # Create users is contacts_import's: a checkbox inside its label (tests/contacts_import).
    labels = re.findall(r'<label for="(\w+)"', page) + re.findall(r'<label class="check"><input[^>]*id="(\w+)"', page)
    order = ["name", "provider", "host", "username", "password", "port", "security", "ca_file", "owner_id",
             "create_users", "extra_folders"]
    positions = [page.index(f'id="{name}"') for name in order]
    assert positions == sorted(positions), "fields are not in the documented order"
    assert set(order) <= set(labels), "every field has a label"
    assert ">Password or app password</label>" in page
    assert 'type="password"' in field_block(page, "password")
    assert "For admins only; agents never see it." in page
    assert "Usually the e-mail address." in page
    assert ("Contacts will be created from the people in this mailbox (senders and recipients), "
            "skipping no-reply addresses, mailing lists and your own team.") in page
    assert input_value(page, "port") == "993"
    assert re.findall(r'<option[^>]*value="(\w+)"', field_block(page, "security")) == ["ssl", "starttls"]
    owners = field_block(page, "owner_id")
    assert "Ada Admin" in owners and "Gina Gone" not in owners
    assert re.search(r'<button class="primary" type="submit">Create IMAP</button>', page)

    presets = json.loads(re.search(r'<script type="application/json" id="imap-presets">(.*?)</script>',
                                   page, re.S).group(1))
    by_key = {p["key"]: p for p in presets}
    assert [p["label"] for p in presets][:8] == [
        "Gmail", "Outlook / Microsoft 365", "Yahoo", "iCloud", "Zoho Mail", "Fastmail", "GMX", "AOL"]
    assert by_key["gmail"]["host"] == "imap.gmail.com" and by_key["gmail"]["port"] == 993
    assert "Forwarding and POP/IMAP" in by_key["gmail"]["hint"] and "app password" in by_key["gmail"]["hint"]
    assert by_key["outlook"]["host"] == "outlook.office365.com"
    assert "@icloud.com" in by_key["icloud"]["hint"]
    assert {by_key[k]["host"] for k in ("zoho", "fastmail", "gmx", "aol")} == {
        "imap.zoho.com", "imap.fastmail.com", "imap.gmx.net", "imap.aol.com"}
    assert all(p["security"] in ("ssl", "starttls") for p in presets)
    assert "other" in by_key
    options = re.findall(r'<option[^>]*value="(\w+)"', field_block(page, "provider"))
    assert options == [p["key"] for p in presets]


def test_wrong_password_comes_back_in_plain_words_and_is_never_echoed(app, admin_client, mailbox, owner_id):
    wrong = "Wrong-Pass-7731"
    response = admin_client.post(f"{BASE}/new", data=form_data(
        mailbox, owner_id, password=wrong, name="Support <desk>", extra_folders="Archive, Support"))

    assert response.status_code == 200
    page = response.text
    assert wrong not in page
    assert mailbox.password not in page
    assert 'id="connect-error"' in page
    assert 'class="field has-error" id="field-password"' in page
    assert input_value(page, "password") in (None, "")
    assert input_value(page, "name") == "Support <desk>"
    assert input_value(page, "username") == mailbox.username
    assert input_value(page, "host") == mailbox.host
    assert input_value(page, "port") == str(mailbox.port)
    assert input_value(page, "ca_file") == mailbox.ca_file
    assert input_value(page, "extra_folders") == "Archive, Support"
    assert "Traceback" not in page
    assert inboxes(app) == []


def test_unknown_host_is_reported_on_the_host_field(app, admin_client, mailbox, owner_id):
    response = admin_client.post(f"{BASE}/new", data=form_data(mailbox, owner_id, host="no-such-host.invalid"))

    assert response.status_code == 200
    assert 'id="connect-error"' in response.text
    assert 'class="field has-error" id="field-host"' in response.text
    assert mailbox.password not in response.text
    assert inboxes(app) == []


def test_untrusted_certificate_is_explained(app, admin_client, mailbox, dovecot, owner_id):
    response = admin_client.post(f"{BASE}/new", data=form_data(mailbox, owner_id, ca_file=dovecot.wrong_ca_file))

    assert response.status_code == 200
    page = response.text
    box = connect_error_box(page)
    assert "not signed by a certificate authority the CRM trusts" in box
    assert "exactly the one your provider gives" in box and "in the CA directory (CRM_IMAP_CA_DIR)" in box
    assert "upload the PEM file" in box
    assert 'class="field has-error" id="field-ca_file"' in page
    assert 'class="field has-error" id="field-host"' in page
    assert 'class="field has-error" id="field-port"' not in page
    assert mailbox.password not in page
    assert inboxes(app) == []


def connect_error_box(page: str) -> str:
    match = re.search(r'<div class="form-problem" role="alert" id="connect-error">(.*?)</div>', page, re.S)
    assert match, "no connection problem shown"
    return html.unescape(match.group(1))


def test_ssl_tls_on_a_port_without_tls_is_reported_on_port_and_security(app, admin_client, mailbox, dovecot,
                                                                        owner_id):
    response = admin_client.post(f"{BASE}/new", data=form_data(mailbox, owner_id, port=str(dovecot.imap_port)))

    assert response.status_code == 200
    page = response.text
    box = connect_error_box(page)
    assert f"No IMAP server answered with SSL/TLS on {mailbox.host} port {dovecot.imap_port}." in box
    assert "SSL/TLS is usually port 993, STARTTLS port 143" in box
    assert "certificate" not in box.lower()
    for field in ("port", "security"):
        assert "No IMAP server answered" in field_block(page, field)
    for other in ("host", "ca_file"):
        assert 'has-error' not in field_block(page, other)
    assert inboxes(app) == []


def test_an_unusable_ca_file_is_reported_on_the_ca_file_field(app, admin_client, mailbox, owner_id, tmp_path):
    # tmp_path is inside the suite's CA directory (host_app.testing): the file is judged, not its place.
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    response = admin_client.post(f"{BASE}/new", data=form_data(mailbox, owner_id, ca_file=str(bad)))

    page = response.text
    assert "This CA file cannot be used" in html.unescape(field_block(page, "ca_file"))
    assert 'class="field has-error" id="field-host"' not in page
    assert inboxes(app) == []


def test_the_ca_file_field_asks_for_a_path_in_the_ca_directory_or_an_upload(admin_client, owner_id):
    page = html.unescape(admin_client.get(f"{BASE}/new").text)
    block = field_block(page, "ca_file")
    assert "the full path of that authority's PEM file in the CA directory (CRM_IMAP_CA_DIR)" in block
    assert 'type="file"' in field_block(page, "ca_upload")


def test_a_server_that_never_answers_fails_the_form_after_the_check_timeout(app, admin_client, mailbox, owner_id):
    # A real socket that accepts connections (the kernel's backlog) and never says a word.
    listener = socket.create_server(("127.0.0.1", 0), backlog=4)
    port = listener.getsockname()[1]
    # Were the sync's timeout used, this test would wait a minute and the message would say so.
    app.config.update(IMAP_CHECK_TIMEOUT=0.5, IMAP_TIMEOUT=60)
    try:
        response = admin_client.post(f"{BASE}/new", data=form_data(mailbox, owner_id, host="127.0.0.1",
                                                                   port=str(port)))
    finally:
        listener.close()

    assert response.status_code == 200
    page = response.text
    assert f"127.0.0.1:{port} did not answer within 0.5 seconds." in connect_error_box(page)
    assert 'class="field has-error" id="field-host"' in page
    assert 'class="field has-error" id="field-port"' in page
    assert inboxes(app) == []


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"host": "imaps://imap.example.com"}, "host", "without imap://"),
        ({"host": "imap example.com"}, "host", "spaces"),
        ({"host": "imap.example.com:993"}, "host", "Port field"),
        ({"host": ""}, "host", "server name"),
        ({"port": "70000"}, "port", "1 to 65535"),
        ({"port": "0"}, "port", "1 to 65535"),
        ({"port": "abc"}, "port", "1 to 65535"),
        ({"username": ""}, "username", "username"),
        ({"password": ""}, "password", "password"),
        ({"security": "plain"}, "security", "SSL/TLS or STARTTLS"),
        ({"owner_id": ""}, "owner_id", "agent"),
        ({"ca_file": "relative/ca.pem"}, "ca_file", "full path"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file", "cannot be used"),
        ({"name": ""}, "name", "name"),
    ],
)
def test_invalid_input_is_refused_before_connecting(app, admin_client, mailbox, owner_id, overrides, field, words):
    response = admin_client.post(f"{BASE}/new", data=form_data(mailbox, owner_id, **overrides))

    assert response.status_code == 200
    block = field_block(response.text, field)
    assert "has-error" in block
    assert words.lower() in html.unescape(block).lower()
    assert 'id="connect-error"' not in response.text  # refused before any login attempt
    assert mailbox.password not in response.text
    assert inboxes(app) == []


def test_preset_fills_the_server_without_javascript(admin_client, mailbox, owner_id):
    # No password: validation stops before any connection, and the form shows what the preset filled in.
    response = admin_client.post(f"{BASE}/new", data=form_data(
        mailbox, owner_id, provider="gmail", host="", port="", security="starttls", password=""))

    page = response.text
    assert input_value(page, "host") == "imap.gmail.com"
    assert input_value(page, "port") == "993"
    assert re.search(r'<option selected value="ssl">', field_block(page, "security"))
    assert "Forwarding and POP/IMAP" in page  # the provider's hint is shown
    assert "has-error" not in field_block(page, "host")


def test_successful_connect_saves_encrypted_and_enqueues_the_first_sync(app, admin_client, mailbox, owner_id):
    response = admin_client.post(f"{BASE}/new", data=form_data(
        mailbox, owner_id, create_users="y", extra_folders="Archive, Archive ,Support"))

    assert response.status_code == 302
    assert response.location.endswith(f"{BASE}/")
    inbox = one_inbox(app)
    assert inbox.name == "Support desk"
    assert inbox.owner_id == owner_id
    assert create_users_is_on(app, inbox.id)
    assert inbox.extra_folders == ["Archive", "Support"]
    assert (inbox.host, inbox.port, inbox.security, inbox.username) == (
        mailbox.host, mailbox.port, "ssl", mailbox.username)

    # Encrypted at rest: the clear password is in no column of the raw row.
    with app.app_context():
        row = db.session.execute(sa.text("SELECT * FROM imap_inbox")).mappings().one()
        raw = b"".join(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row.values())
    assert mailbox.password.encode() not in raw
    assert row["password_encrypted"]

    # The first sync is on the queue, and neither its arguments nor anything else in Redis holds the password.
    with app.app_context():
        jobs = Queue(app.config["RQ_QUEUE"], connection=Redis.from_url(app.config["REDIS_URL"])).jobs
    assert jobs, "the first sync was not enqueued"
    for job in jobs:
        assert mailbox.password not in repr(job.args) + repr(job.kwargs) + (job.description or "")
    assert inbox.id in [arg for job in jobs for arg in job.args]
    assert mailbox.password.encode() not in redis_plaintext(app.config["REDIS_URL"])

    page = admin_client.get(response.location).text
    assert "Support desk" in page and mailbox.password not in page


# ---------------------------------------------------------------------------
# The list and its status JSON
# ---------------------------------------------------------------------------


def test_list_shows_progress_and_problems_in_plain_words(app, admin_client, mailbox, owner_id):
    from plugins.mail import models as mail_models

    inbox_id = create_via_service(app, mailbox, owner_id, name="<b>Sales</b>")
    set_inbox(app, inbox_id, status=mail_models.SYNCING, progress_done=1234, progress_total=5000, message_count=1234)

    page = admin_client.get(f"{BASE}/").text
    assert "&lt;b&gt;Sales&lt;/b&gt;" in page and "<b>Sales</b>" not in page
    assert re.search(r'<progress max="5000"\s+value="1234"', page)
    assert "1,234 / 5,000" in page
    assert 'data-status-url="/settings/inboxes/status.json"' in page
    assert "inbox_list.js" in page
    assert mailbox.password not in page

    set_inbox(app, inbox_id, status=mail_models.NEEDS_ATTENTION, error="The server refused the password.",
              error_hint="Create a new app password.")
    page = admin_client.get(f"{BASE}/").text
    assert "Needs attention" in page
    assert "The server refused the password." in page and "Create a new app password." in page
    assert re.search(r'data-role="progress" hidden', page)
    assert "1 inbox needs attention</strong>" in page
    edit_page = admin_client.get(f"{BASE}/{inbox_id}/edit").text
    assert "This inbox needs attention:" in edit_page and "The server refused the password." in edit_page

    set_inbox(app, inbox_id, status=mail_models.ERROR, error="The server did not answer.", error_hint=None)
    page = admin_client.get(f"{BASE}/").text
    assert "Temporary error" in page and "The server did not answer." in page
    assert re.search(r'<p class="hint" data-role="retry">Retrying automatically', page)


def test_status_json_carries_progress_but_no_secrets(app, admin_client, mailbox, owner_id):
    from plugins.mail import models as mail_models

    inbox_id = create_via_service(app, mailbox, owner_id, name="Secret Project")
    set_inbox(app, inbox_id, status=mail_models.SYNCING, progress_done=10, progress_total=40)

    response = admin_client.get(f"{BASE}/status.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    statuses = response.get_json()
    assert len(statuses) == 1
    status = statuses[0]
    assert set(status) == STATUS_KEYS
    assert (status["id"], status["status"], status["progress_done"], status["progress_total"]) == (
        inbox_id, "syncing", 10, 40)
    body = response.get_data(as_text=True)
    for secret in (mailbox.password, mailbox.username, "Secret Project", "password"):
        assert secret not in body


def test_the_list_says_how_new_mail_arrives_live_polling_or_hourly(app, admin_client, mailbox, owner_id, dovecot):
    """What a watcher wrote to Redis counts only while that watcher heartbeats."""
    import time

    from plugins.imap_inbox.watcher import watch_status
    from plugins.imap_inbox.watcher.leases import Leases

    live = create_via_service(app, mailbox, owner_id, name="Pushed")
    dovecot.add_user("polled@team.example", "polled-password-1")
    polled = create_via_service(app, mailbox, owner_id, name="Polled", username="polled@team.example",
                                password="polled-password-1")
    page = admin_client.get(f"{BASE}/").get_data(as_text=True)
    assert page.count("Checked every hour") == 2
    assert "no watcher is running (manage.py watch)" in page

    with app.app_context():
        space = watch_status.namespace()
        redis = Redis.from_url(app.config["REDIS_URL"])
        leases = Leases(redis, space, "test-watcher")
        leases.heartbeat()
        watch_status.write(redis, space, "test-watcher", {
            live: {"mode": "live", "last_event": time.time() - 120},
            polled: {"mode": "polling", "reason": "no_idle", "poll_seconds": 300, "last_event": None}})
    page = admin_client.get(f"{BASE}/").get_data(as_text=True)
    assert "<strong data-role=\"watch-label\">Live</strong>" in page
    assert "last change" in page and "2 min ago" in page
    assert "Polling every 5 minutes" in page and "the server does not support IDLE" in page
    assert "Checked every hour" not in page
    leases.heartbeat()  # as a running watcher does every second: a slow page above must not make it look gone
    watch = {s["id"]: s["watch"] for s in admin_client.get(f"{BASE}/status.json").get_json()}
    assert (watch[live]["mode"], watch[polled]["mode"]) == ("live", "polling")

    leases.leave()  # the watcher is gone: what it wrote no longer counts
    page = admin_client.get(f"{BASE}/").get_data(as_text=True)
    assert page.count("Checked every hour") == 2 and "watch-label\">Live<" not in page


# ---------------------------------------------------------------------------
# Edit, sync now, disable/enable, delete
# ---------------------------------------------------------------------------


def test_edit_with_blank_password_keeps_the_stored_one(app, admin_client, mailbox, owner_id):
    inbox_id = create_via_service(app, mailbox, owner_id)
    stored = one_inbox(app).password_encrypted

    page = admin_client.get(f"{BASE}/{inbox_id}/edit").text
    assert input_value(page, "name") == "Sales"
    assert input_value(page, "password") in (None, "")
    assert mailbox.password not in page
    assert "Leave blank to keep the stored password." in page
    assert re.search(r'<button class="primary" type="submit">Save</button>', page)

    response = admin_client.post(f"{BASE}/{inbox_id}/edit", data=form_data(
        mailbox, owner_id, name="Sales team", password="", extra_folders="Archive"))
    assert response.status_code == 302
    inbox = one_inbox(app)
    assert inbox.name == "Sales team"
    assert inbox.extra_folders == ["Archive"]
    assert bytes(inbox.password_encrypted) == bytes(stored)


def test_edit_with_a_wrong_new_password_is_refused_and_changes_nothing(app, admin_client, mailbox, owner_id):
    inbox_id = create_via_service(app, mailbox, owner_id)
    stored = one_inbox(app).password_encrypted

    response = admin_client.post(f"{BASE}/{inbox_id}/edit", data=form_data(
        mailbox, owner_id, name="Renamed", password="Not-The-Password-99"))

    assert response.status_code == 200
    assert 'class="field has-error" id="field-password"' in response.text
    assert "Not-The-Password-99" not in response.text
    inbox = one_inbox(app)
    assert inbox.name == "Sales"
    assert bytes(inbox.password_encrypted) == bytes(stored)


def test_edit_without_connection_changes_does_not_log_in_again(app, admin_client, mailbox, owner_id):
    inbox_id = create_via_service(app, mailbox, owner_id)
    # A server that does not exist: any login attempt would fail the save.
    set_inbox(app, inbox_id, host="no-such-host.invalid")

    response = admin_client.post(f"{BASE}/{inbox_id}/edit", data=form_data(
        mailbox, owner_id, host="no-such-host.invalid", name="Renamed", password="", create_users="y"))

    assert response.status_code == 302
    inbox = one_inbox(app)
    assert (inbox.name, create_users_is_on(app, inbox.id)) == ("Renamed", True)

    # Changing the server does log in again (with the password typed again), and the failure is shown,
    # nothing saved.
    response = admin_client.post(f"{BASE}/{inbox_id}/edit", data=form_data(
        mailbox, owner_id, host="other-host.invalid", name="Renamed again"))
    assert response.status_code == 200
    assert 'class="field has-error" id="field-host"' in response.text
    assert one_inbox(app).name == "Renamed"


def test_edit_to_another_username_moves_the_inbox_address_with_it(app, admin_client, mailbox, dovecot, owner_id):
    inbox_id = create_via_service(app, mailbox, owner_id)
    assert one_inbox(app).email == mailbox.username
    renamed = f"moved-{mailbox.username}"
    dovecot.add_user(renamed, mailbox.password)

    response = admin_client.post(f"{BASE}/{inbox_id}/edit", data=form_data(
        mailbox, owner_id, name="Sales", username=renamed))  # a new username: the password is typed again

    assert response.status_code == 302
    inbox = one_inbox(app)
    assert (inbox.username, inbox.email) == (renamed, renamed)


def test_sync_now_and_disable_enable(app, admin_client, mailbox, owner_id):
    inbox_id = create_via_service(app, mailbox, owner_id)
    run_jobs(app)  # the first sync, so "Sync now" has something new to queue
    queue = Queue(app.config["RQ_QUEUE"], connection=Redis.from_url(app.config["REDIS_URL"]))
    assert queue.count == 0

    response = admin_client.post(f"{BASE}/{inbox_id}/sync", follow_redirects=True)
    assert response.status_code == 200
    assert "queued" in response.text
    assert queue.count == 1
    assert all(mailbox.password not in repr(job.args) for job in queue.jobs)

    response = admin_client.post(f"{BASE}/{inbox_id}/disable", follow_redirects=True)
    assert "disabled" in response.text
    inbox = one_inbox(app)
    assert inbox.enabled is False and inbox.status == "disabled"
    assert re.search(r'<button type="submit" aria-label="Enable: Sales">Enable</button>', response.text)

    response = admin_client.post(f"{BASE}/{inbox_id}/sync", follow_redirects=True)
    assert "enable it to sync" in response.text

    response = admin_client.post(f"{BASE}/{inbox_id}/enable", follow_redirects=True)
    assert "enabled" in response.text
    assert one_inbox(app).enabled is True


@pytest.fixture
def inbox_of_two(app, mailbox, owner_id) -> int:
    """An inbox whose two messages are synced (on a real worker); its id."""
    mailbox.append("INBOX", message(1, mailbox.username))
    mailbox.append("INBOX", message(2, mailbox.username))
    inbox_id = create_via_service(app, mailbox, owner_id)
    run_jobs(app)
    return inbox_id


def test_delete_needs_confirmation_and_removes_the_stored_mail(app, admin_client, inbox_of_two):
    from plugins.mail.models import Message

    inbox_id = inbox_of_two
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)
                                 .where(Message.inbox_id == inbox_id)) == 2

    page = admin_client.get(f"{BASE}/{inbox_id}/delete").text
    assert "removes the 2 e-mails" in page
    assert 'name="confirm"' in page

    response = admin_client.post(f"{BASE}/{inbox_id}/delete", data={})
    assert response.status_code == 200
    assert "Tick the box to confirm the delete." in response.text
    assert len(inboxes(app)) == 1

    response = admin_client.post(f"{BASE}/{inbox_id}/delete", data={"confirm": "y"})
    assert response.status_code == 302
    assert inboxes(app) == []
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


def test_reading_a_mailbox_again_asks_first_then_the_queued_sync_does_it(app, admin_client, inbox_of_two):
    from plugins.imap_inbox.models import ImapInbox
    from plugins.mail.models import Message

    inbox_id = inbox_of_two
    with app.app_context():
        first_ids = set(db.session.scalars(sa.select(Message.id)))

    edit = admin_client.get(f"{BASE}/{inbox_id}/edit").text
    assert f"{BASE}/{inbox_id}/resync" in edit
    page = admin_client.get(f"{BASE}/{inbox_id}/resync").text
    assert "forgets the 2 e-mails" in page and 'name="confirm"' in page

    response = admin_client.post(f"{BASE}/{inbox_id}/resync", data={})
    assert response.status_code == 200 and "Tick the box to confirm." in response.text
    with app.app_context():
        assert not db.session.get(ImapInbox, inbox_id).resync_requested

    response = admin_client.post(f"{BASE}/{inbox_id}/resync", data={"confirm": "y"})
    assert response.status_code == 302
    assert "will be read again from the start" in admin_client.get(BASE + "/").text
    with app.app_context():
        assert db.session.get(ImapInbox, inbox_id).resync_requested
    run_jobs(app)
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        assert not inbox.resync_requested and inbox.message_count == 2
        again = set(db.session.scalars(sa.select(Message.id)))
    assert len(again) == 2 and not again & first_ids  # read again, not kept


def test_unknown_inbox_is_404(admin_client):
    assert admin_client.get(f"{BASE}/999/edit").status_code == 404
    assert admin_client.post(f"{BASE}/999/sync").status_code == 404
    assert admin_client.post(f"{BASE}/999/delete", data={"confirm": "y"}).status_code == 404
    assert admin_client.post(f"{BASE}/999/resync", data={"confirm": "y"}).status_code == 404


# ---------------------------------------------------------------------------
# Who may do what
# ---------------------------------------------------------------------------

PAGES = [("get", ""), ("get", "/status.json"), ("get", "/new"), ("post", "/new"), ("get", "/{id}/edit"),
         ("post", "/{id}/edit"), ("post", "/{id}/sync"), ("post", "/{id}/enable"), ("post", "/{id}/disable"),
         ("get", "/{id}/delete"), ("post", "/{id}/delete")]


def test_agents_get_403_and_anonymous_visitors_the_login_page(app, client, agent_client, mailbox, admin):
    inbox_id = create_via_service(app, mailbox, admin)
    for method, path in PAGES:
        url = BASE + path.format(id=inbox_id) + ("/" if path == "" else "")
        data = {"confirm": "y"} if method == "post" else None
        assert getattr(agent_client, method)(url, data=data).status_code == 403, url
        anonymous = getattr(client, method)(url, data=data)
        assert anonymous.status_code == 302, url
        assert "/login" in anonymous.location, url
    assert len(inboxes(app)) == 1


def test_posts_without_a_csrf_token_are_refused(crm_app_factory, mailbox):
    app = crm_app_factory(WTF_CSRF_ENABLED=True)
    owner = make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True, name="Ada Admin")
    client = app.test_client()
    login_page = client.get("/login").text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login_page).group(1)
    assert client.post("/login", data={"email": "admin@team.example", "password": ADMIN_PASSWORD,
                                       "csrf_token": token}).status_code == 302

    assert client.post(f"{BASE}/new", data=form_data(mailbox, owner)).status_code == 400
    assert inboxes(app) == []

    page = client.get(f"{BASE}/new").text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = client.post(f"{BASE}/new", data=form_data(mailbox, owner, csrf_token=token))
    assert response.status_code == 302
    inbox_id = one_inbox(app).id

    for path in (f"/{inbox_id}/sync", f"/{inbox_id}/disable", f"/{inbox_id}/delete"):
        assert client.post(BASE + path, data={"confirm": "y"}).status_code == 400, path
    assert one_inbox(app).enabled is True


# ---------------------------------------------------------------------------
# The scripts, in a real browser
# ---------------------------------------------------------------------------


@pytest.fixture
def live_server(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def browser_page():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                    args=["--headless", "--no-sandbox"])
        page = browser.new_page()
        page.set_default_timeout(15000)
        js_errors: list[str] = []
        page.on("pageerror", lambda error: js_errors.append(str(error)))
        yield page
        browser.close()
    assert not js_errors, f"uncaught JavaScript errors: {js_errors}"


def test_presets_and_live_progress_in_a_browser(app, admin, mailbox, live_server, browser_page):
    from plugins.mail import models as mail_models

    page = browser_page
    page.goto(f"{live_server}/login")
    page.fill("#email", "admin@team.example")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")

    # Presets: choosing a provider fills the server fields and shows its hint.
    page.goto(f"{live_server}{BASE}/new")
    page.select_option("#provider", "gmail")
    assert page.input_value("#host") == "imap.gmail.com"
    assert page.input_value("#port") == "993"
    assert page.is_visible("#provider-hint")
    assert "app password" in page.text_content("#provider-hint [data-role=text]")
    page.select_option("#security", "starttls")
    assert page.input_value("#port") == "143"
    page.select_option("#provider", "other")
    assert page.input_value("#host") == ""

    # Live progress: the row follows the database without a reload.
    inbox_id = create_via_service(app, mailbox, admin)
    set_inbox(app, inbox_id, status=mail_models.SYNCING, progress_done=1, progress_total=5000)
    page.goto(f"{live_server}{BASE}/")
    page.evaluate("window.notReloaded = true")
    row = f"#inbox-{inbox_id}"
    assert page.text_content(f"{row} [data-role=progress-text]").strip() == "1 / 5,000 e-mails"

    set_inbox(app, inbox_id, progress_done=1234, message_count=1234)
    page.wait_for_function(
        "sel => document.querySelector(sel).textContent === '1,234 / 5,000 e-mails'",
        arg=f"{row} [data-role=progress-text]")
    assert page.get_attribute(f"{row} progress", "value") == "1234"
    assert page.text_content(f"{row} [data-role=message-count]") == "1,234"

    set_inbox(app, inbox_id, status=mail_models.NEEDS_ATTENTION, error="The server refused the password.",
              error_hint="Create a new app password.")
    page.wait_for_function("sel => document.querySelector(sel).textContent === 'Needs attention'",
                           arg=f"{row} [data-role=label]")
    assert page.is_hidden(f"{row} [data-role=progress]")
    assert page.text_content(f"{row} [data-role=error]") == "The server refused the password."
    assert page.is_visible(f"{row} [data-role=hint]")
    assert page.evaluate("window.notReloaded") is True
