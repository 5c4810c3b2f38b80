"""Issue 14, finding 9: the CA file field must not tell which files exist on the CRM server.

Only PEM files inside the configured CA directory (``IMAP_CA_DIR``) are opened, ``..`` and symlinks
leading out of it included, and every refusal of a path reads the same; or the admin uploads the
certificate, which is kept with the inbox. The CA directory here holds the test Dovecot's CA, so a
path inside it really logs in.
"""
from __future__ import annotations

import html
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from host_app.extensions import db
from plugins.imap_inbox import service
from plugins.imap_inbox.ca_certificates import MAX_PEM_BYTES
from plugins.imap_inbox.models import ImapInbox
from plugins.mail import models as mail_models
from tests.support.imap_helpers import OWNER_EMAIL, sync

BASE = "/settings/inboxes"


@pytest.fixture
def ca_dir(tmp_path, dovecot) -> Path:
    """The CA directory: the test Dovecot's CA, a file that is not a certificate, and symlinks out."""
    folder = tmp_path / "ca"
    folder.mkdir()
    shutil.copy(dovecot.ca_file, folder / "team-ca.pem")
    (folder / "notes.pem").write_text("not a certificate\n")
    (folder / "shadow.pem").symlink_to("/etc/shadow")
    (folder / "dovecot-ca.pem").symlink_to(dovecot.ca_file)  # a real certificate, but outside the directory
    (folder / "inside.pem").symlink_to(folder / "team-ca.pem")  # a symlink that stays inside is fine
    return folder


@pytest.fixture
def app(crm_app_factory, ca_dir):
    return crm_app_factory(IMAP_CA_DIR=str(ca_dir))


def form_data(mailbox, owner: int, **overrides) -> dict:
    data = {"name": "Support desk", "provider": "other", "host": mailbox.host, "username": mailbox.username,
            "password": mailbox.password, "port": str(mailbox.port), "security": "ssl", "ca_file": "",
            "owner_id": str(owner), "extra_folders": ""}
    data.update(overrides)
    return data


def field_errors(page: str, field_id: str) -> list[str]:
    match = re.search(rf'<div class="field[^"]*" id="field-{field_id}">(.*?)</div>', page, re.S)
    assert match, f"no field {field_id}"
    return [html.unescape(e) for e in re.findall(r'<p class="error" role="alert"[^>]*>(.*?)</p>', match.group(1), re.S)]


def stored_inboxes(app) -> list[ImapInbox]:
    with app.app_context():
        rows = db.session.scalars(db.select(ImapInbox).order_by(ImapInbox.id)).all()
        db.session.expunge_all()
        return rows


def probes(ca_dir: Path, dovecot) -> dict[str, str]:
    """Paths an attacker would try, each answered differently before the fix."""
    return {
        "a secret file": "/etc/shadow",
        "a readable file that is not a certificate": "/etc/passwd",
        "no file": "/nonexistent/ca.pem",
        "a directory": "/etc",
        "a real certificate outside the directory": dovecot.ca_file,
        "dot-dot out of the directory": f"{ca_dir}/../../../../etc/passwd",
        "dot-dot back into the directory": f"{ca_dir}/../{ca_dir.name}/team-ca.pem",
        "a symlink to a secret file": str(ca_dir / "shadow.pem"),
        "a symlink to a certificate outside": str(ca_dir / "dovecot-ca.pem"),
        "no file inside": str(ca_dir / "missing.pem"),
        "not a certificate inside": str(ca_dir / "notes.pem"),
        "a relative path": "team-ca.pem",
    }


def test_every_unusable_ca_file_reads_the_same_so_the_form_tells_nothing_about_the_servers_files(
        app, admin_client, admin, mailbox, dovecot, ca_dir):
    answers = {}
    for what, path in probes(ca_dir, dovecot).items():
        response = admin_client.post(f"{BASE}/new", data=form_data(mailbox, admin, ca_file=path))
        assert response.status_code == 200, what
        answers[what] = field_errors(response.text, "ca_file")
        assert 'id="connect-error"' not in response.text, f"{what}: the file was opened for a login"
    assert len({tuple(a) for a in answers.values()}) == 1, json.dumps(answers, indent=1)
    (message,) = answers["a secret file"]
    assert str(ca_dir) in message and "upload" in message
    assert "PEM certificate inside" in message and "exist" not in message and "read" not in message
    assert stored_inboxes(app) == []
    assert mailbox.password not in json.dumps(answers)


@pytest.mark.parametrize("name", ["team-ca.pem", "inside.pem"])
def test_a_ca_file_inside_the_directory_logs_in(app, admin_client, admin, mailbox, ca_dir, name):
    response = admin_client.post(f"{BASE}/new", data=form_data(mailbox, admin, ca_file=str(ca_dir / name)))
    assert response.status_code == 302, field_errors(response.text, "ca_file")
    (inbox,) = stored_inboxes(app)
    assert inbox.ca_file == str(ca_dir / name) and inbox.ca_pem is None
    assert sync(app, inbox.id)["status"] == "ok"


def test_an_uploaded_ca_certificate_is_kept_with_the_inbox_and_trusted(app, admin_client, admin, mailbox, dovecot):
    pem = Path(dovecot.ca_file).read_bytes()
    data = form_data(mailbox, admin, ca_upload=(io.BytesIO(pem), "team-ca.pem"))
    response = admin_client.post(f"{BASE}/new", data=data, content_type="multipart/form-data")
    assert response.status_code == 302, field_errors(response.text, "ca_upload")
    (inbox,) = stored_inboxes(app)
    assert inbox.ca_pem == pem.decode() and inbox.ca_file is None
    assert sync(app, inbox.id)["status"] == "ok"

    # The edit form keeps it while nothing about the CA changes, and forgets it when asked to.
    edit = admin_client.get(f"{BASE}/{inbox.id}/edit").text
    assert 'id="ca-upload-kept"' in edit and "BEGIN CERTIFICATE" not in edit
    keep = form_data(mailbox, admin, name="Renamed", password="")
    assert admin_client.post(f"{BASE}/{inbox.id}/edit", data=keep).status_code == 302
    assert stored_inboxes(app)[0].ca_pem == pem.decode()
    forget = form_data(mailbox, admin, forget_ca_upload="y", password="")
    page = admin_client.post(f"{BASE}/{inbox.id}/edit", data=forget).text
    assert "Enter the password again" in " ".join(field_errors(page, "password"))  # another trust: finding 1
    forget["password"] = mailbox.password
    page = admin_client.post(f"{BASE}/{inbox.id}/edit", data=forget).text
    assert 'id="connect-error"' in page and "not signed by a certificate authority" in page  # only the system store
    assert stored_inboxes(app)[0].ca_pem == pem.decode()


BROKEN_PEM = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("content", [b"not a certificate\n", BROKEN_PEM, b"\xff\xfe binary", None])
def test_an_upload_that_is_not_a_pem_certificate_is_refused_in_plain_words(app, admin_client, admin, mailbox,
                                                                           dovecot, content):
    if content is None:  # a real certificate padded past the size cap
        content = Path(dovecot.ca_file).read_bytes() + b"\n" * MAX_PEM_BYTES
    data = form_data(mailbox, admin, ca_upload=(io.BytesIO(content), "ca.pem"))
    response = admin_client.post(f"{BASE}/new", data=data, content_type="multipart/form-data")
    assert response.status_code == 200
    (error,) = field_errors(response.text, "ca_upload")
    assert "upload a PEM file" in error and f"{MAX_PEM_BYTES // 1024} KB" in error
    assert stored_inboxes(app) == []


def test_an_inbox_saved_with_a_ca_file_outside_the_directory_needs_attention_after_the_upgrade(
        crm_app_factory, mailbox, dovecot, ca_dir, owner):
    before = crm_app_factory(IMAP_CA_DIR="/")  # as permissive as the release before the CA directory
    with before.app_context():
        outside = service.create_inbox(name="Outside", host=mailbox.host, port=mailbox.port, security="ssl",
                                       username=mailbox.username, password=mailbox.password, owner_id=owner,
                                       ca_file=dovecot.ca_file).id
    assert sync(before, outside)["status"] == "ok"

    after = crm_app_factory(IMAP_CA_DIR=str(ca_dir))
    summary = sync(after, outside)
    assert summary["status"] != "ok"
    with after.app_context():
        inbox = db.session.get(ImapInbox, outside)
        assert inbox.status == mail_models.NEEDS_ATTENTION
        assert inbox.error.startswith("This CA file cannot be used") and str(ca_dir) in inbox.error
        assert dovecot.ca_file not in inbox.error
        # Moving the path into the directory (with the password, finding 1) makes it work again.
        service.update_inbox(inbox, ca_file=str(ca_dir / "team-ca.pem"), password=mailbox.password)
    assert sync(after, outside)["status"] == "ok"


def test_without_a_ca_directory_only_uploads_are_accepted(crm_app_factory, mailbox, dovecot, owner):
    app = crm_app_factory(IMAP_CA_DIR="")
    with app.app_context():
        with pytest.raises(service.InvalidInboxSettings) as refused:
            service.create_inbox(name="Desk", host=mailbox.host, port=mailbox.port, security="ssl",
                                 username=mailbox.username, password=mailbox.password, owner_id=owner,
                                 ca_file=dovecot.ca_file)
        assert refused.value.field == "ca_file" and "CRM_IMAP_CA_DIR" in str(refused.value)
        inbox = service.create_inbox(name="Desk", host=mailbox.host, port=mailbox.port, security="ssl",
                                     username=mailbox.username, password=mailbox.password, owner_id=owner,
                                     ca_pem=Path(dovecot.ca_file).read_bytes())
        inbox_id = inbox.id
    assert sync(app, inbox_id)["status"] == "ok"


def cli_args(mailbox, *extra):
    return ["inboxes", "connect", "--name", "Support", "--host", mailbox.host, "--port", str(mailbox.port),
            "--username", mailbox.username, "--password-stdin", "--owner", OWNER_EMAIL, *extra]


def test_the_cli_takes_a_ca_file_in_the_directory_or_a_pem_to_store(app, runner, mailbox, dovecot, ca_dir, owner):
    refused = runner.invoke(args=cli_args(mailbox, "--ca-file", "/etc/passwd"), input=mailbox.password + "\n")
    missing = runner.invoke(args=cli_args(mailbox, "--ca-file", "/nonexistent.pem"), input=mailbox.password + "\n")
    assert refused.exit_code == missing.exit_code == 1
    assert refused.stderr == missing.stderr and "This CA file cannot be used" in refused.stderr

    stored = runner.invoke(args=cli_args(mailbox, "--ca-pem", dovecot.ca_file), input=mailbox.password + "\n")
    assert stored.exit_code == 0, stored.output
    with app.app_context():
        inbox = db.session.get(ImapInbox, json.loads(stored.stdout)["id"])
        assert inbox.ca_pem == Path(dovecot.ca_file).read_text() and inbox.ca_file is None


def test_the_form_says_where_ca_files_go_and_offers_an_upload(app, admin_client, ca_dir):
    page = html.unescape(admin_client.get(f"{BASE}/new").text)
    assert 'enctype="multipart/form-data"' in page
    assert 'type="file"' in page and "Or upload the CA certificate" in page
    assert "CA directory (CRM_IMAP_CA_DIR)" in page

