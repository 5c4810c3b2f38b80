"""Connecting, changing and removing inboxes; passwords encrypted at rest with rotatable keys."""
from __future__ import annotations

import os
import stat

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from host_app import hookimpl
from host_app.extensions import db
from host_app.jobs import queue
from plugins.imap_inbox import crypto, service
from plugins.imap_inbox.account import settings_for
from plugins.imap_inbox.connection import ImapConnectError
from plugins.imap_inbox.jobs import sync_inbox, sync_job_id
from plugins.imap_inbox.models import ImapFolder, ImapInbox
from plugins.mail.models import Message, MessageAddress, SyncRun
from tests.support.imap_helpers import connect_inbox, make_owner, message


def values_for(mailbox, owner, **overrides):
    values = dict(name="Sales desk", host=mailbox.host, port=mailbox.port, security="ssl",
                  username=mailbox.username, password=mailbox.password, owner_id=owner, ca_file=mailbox.ca_file)
    values.update(overrides)
    return values


def test_create_checks_the_login_saves_encrypted_and_queues(app, mailbox, owner):
    with app.app_context():
        inbox = service.create_inbox(**values_for(mailbox, owner, extra_folders=["Projects", "projects", "INBOX"]))
        assert inbox.status == "queued"
        assert inbox.email == mailbox.username  # the user name is an address
        assert inbox.extra_folders == ["Projects"]
        assert mailbox.password.encode() not in inbox.password_encrypted
        assert crypto.decrypt_password(inbox.password_encrypted) == mailbox.password
        assert sync_job_id(inbox.id) in queue().job_ids
        status = service.inbox_status(inbox)
        assert set(status) >= {"status", "progress_done", "progress_total", "error", "error_hint", "last_synced_at",
                               "next_sync_at", "message_count"}
        assert mailbox.password not in repr(status)


def test_failed_login_saves_nothing(app, mailbox, owner):
    with app.app_context():
        with pytest.raises(ImapConnectError) as caught:
            service.create_inbox(**values_for(mailbox, owner, password="Wrong-Password-1"))
        assert caught.value.kind == "auth_failed"
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ImapInbox)) == 0
        assert queue().job_ids == []


@pytest.mark.parametrize("overrides, field", [
    ({"name": " "}, "name"),
    ({"host": ""}, "host"),
    ({"host": "imap example.com"}, "host"),
    ({"port": "x"}, "port"),
    ({"port": 70000}, "port"),
    ({"security": "none"}, "security"),
    ({"username": ""}, "username"),
    ({"password": ""}, "password"),
    ({"owner_id": 9999}, "owner_id"),
    ({"email": "not-an-address"}, "email"),
])
def test_bad_input_is_refused_in_plain_words_before_connecting(app, mailbox, owner, overrides, field):
    with app.app_context():
        with pytest.raises(service.InvalidInboxSettings) as caught:
            service.create_inbox(**values_for(mailbox, owner, check=False, **overrides))
        assert caught.value.field == field
        assert str(caught.value)[0].isupper()


def test_the_same_mailbox_cannot_be_connected_twice(app, mailbox, owner):
    connect_inbox(app, mailbox, owner)
    with app.app_context():
        with pytest.raises(service.InvalidInboxSettings, match="already connected"):
            service.create_inbox(**values_for(mailbox, owner, name="Again", username=mailbox.username.upper()))


def test_default_port_follows_security(app, mailbox, owner):
    with app.app_context():
        inbox = service.create_inbox(**values_for(mailbox, owner, port=None, check=False))
        assert inbox.port == 993
        other = service.create_inbox(**values_for(mailbox, owner, username="x@team.example", port="",
                                                  security="starttls", check=False))
        assert other.port == 143


def test_update_keeps_a_blank_password_and_checks_changed_credentials(app, mailbox, owner, dovecot):
    inbox_id = connect_inbox(app, mailbox, owner)
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        stored_before = bytes(inbox.password_encrypted)
        service.update_inbox(inbox, password="", name="Renamed")  # no login needed for a rename
        assert inbox.name == "Renamed" and bytes(inbox.password_encrypted) == stored_before
        with pytest.raises(ImapConnectError):
            service.update_inbox(inbox, password="Wrong-Password-2")
        db.session.refresh(inbox)
        assert crypto.decrypt_password(inbox.password_encrypted) == mailbox.password
        with pytest.raises(ImapConnectError) as caught:
            # A connection field: the login is tried again, with the password typed again.
            service.update_inbox(inbox, ca_file=dovecot.wrong_ca_file, password=mailbox.password)
        assert caught.value.kind == "certificate_untrusted"
        with pytest.raises(TypeError):
            service.update_inbox(inbox, password_encrypted=b"x")


def test_a_new_username_brings_the_address_that_came_from_the_old_one(app, dovecot, mailbox, owner):
    renamed = f"renamed-{mailbox.username}"  # another real account: the login is checked with it
    dovecot.add_user(renamed, mailbox.password)
    inbox_id = connect_inbox(app, mailbox, owner)
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        assert inbox.email == mailbox.username
        service.update_inbox(inbox, username=renamed, password=mailbox.password)
        assert (inbox.username, inbox.email) == (renamed, renamed)
        # Handing back the address it has is no choice of the admin's: it still follows.
        service.update_inbox(inbox, username="Third@Team.example", email=renamed, password=mailbox.password,
                             check=False)
        assert inbox.email == "third@team.example"  # normalized, as create_inbox stores it
        service.update_inbox(inbox, username="fourth@team.example", email="desk@team.example",
                             password=mailbox.password, check=False)
        assert inbox.email == "desk@team.example"  # set in the same change: it wins
        service.update_inbox(inbox, username="fifth@team.example", password=mailbox.password, check=False)
        assert inbox.email == "desk@team.example"  # an address of its own stays
        service.update_inbox(inbox, username="desk-login", email="", password=mailbox.password, check=False)
        service.update_inbox(inbox, username="sixth@team.example", password=mailbox.password, check=False)
        assert inbox.email == "sixth@team.example"  # no address yet: the new username gives one


def test_a_login_name_without_at_keeps_the_address(app, mailbox, owner):
    inbox_id = connect_inbox(app, mailbox, owner)
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        service.update_inbox(inbox, username="sales-login", password=mailbox.password, check=False)
        assert (inbox.username, inbox.email) == ("sales-login", mailbox.username)


class SettingsListener:
    """A plugin that records what imap_inbox tells the mail core's mailbox_settings_changed hook."""

    def __init__(self):
        self.payloads: list[dict] = []

    @hookimpl
    def mailbox_settings_changed(self, inbox_id, changed):
        self.payloads.append({"inbox_id": inbox_id, "changed": changed})


def test_hook_mailbox_settings_changed__names_the_saved_changes_without_values(app, mailbox, owner):
    inbox_id = connect_inbox(app, mailbox, owner)
    listener = SettingsListener()
    manager = app.extensions["plugins"]
    manager.pm.register(listener, name="test_settings_listener")
    try:
        with app.app_context():
            inbox = db.session.get(ImapInbox, inbox_id)
            service.update_inbox(inbox, name=inbox.name)  # nothing changed: nothing to say
            service.update_inbox(inbox, name="Renamed", settings={"create_users": True}, password=mailbox.password)
            service.update_inbox(inbox, enabled=False)
            service.set_enabled(inbox, True)
            service.set_enabled(inbox, True)  # already on
    finally:
        manager.pm.unregister(name="test_settings_listener")
    assert listener.payloads == [
        {"inbox_id": inbox_id, "changed": ["create_users", "name", "password"]},
        {"inbox_id": inbox_id, "changed": ["enabled"]},
        {"inbox_id": inbox_id, "changed": ["enabled"]},
    ]
    assert mailbox.password not in repr(listener.payloads)


def test_the_login_check_uses_the_short_check_timeout_and_syncs_the_long_one(crm_app_factory, mailbox):
    app = crm_app_factory(IMAP_CHECK_TIMEOUT=4, IMAP_TIMEOUT=45)
    owner_id = make_owner(app)
    inbox_id = connect_inbox(app, mailbox, owner_id)
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        assert settings_for(inbox).timeout == 45
        assert service._settings_from({"host": inbox.host, "port": inbox.port, "security": inbox.security,
                                       "username": inbox.username}, "pw").timeout == 4
    default = crm_app_factory()
    with default.app_context():
        assert default.config.get("IMAP_CHECK_TIMEOUT", service.DEFAULT_CHECK_TIMEOUT) == 10


def test_changed_host_or_user_rematches_stored_mail(app, mailbox, owner):
    mailbox.write("INBOX", [message(1)])
    inbox_id = connect_inbox(app, mailbox, owner)
    assert sync_inbox_in(app, inbox_id)["new_messages"] == 1
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        # The same server under another name.
        service.update_inbox(inbox, host="localhost", password=mailbox.password)
        assert all(folder.uidvalidity is None for folder in inbox.folders)
    summary = sync_inbox_in(app, inbox_id)
    assert summary["status"] == "ok" and summary["new_messages"] == 0 and summary["updated_messages"] == 1


def sync_inbox_in(app, inbox_id):
    with app.app_context():
        return sync_inbox(inbox_id)


def test_disable_enable_and_delete(app, mailbox, owner):
    mailbox.write("INBOX", [message(n) for n in range(1, 4)])
    inbox_id = connect_inbox(app, mailbox, owner)
    sync_inbox_in(app, inbox_id)
    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        service.set_enabled(inbox, False)
        assert inbox.status == "disabled" and inbox.next_sync_at is None
        assert sync_job_id(inbox_id) not in queue().job_ids
        service.set_enabled(inbox, True)
        assert inbox.status == "queued" and sync_job_id(inbox_id) in queue().job_ids

        assert service.delete_inbox(inbox_id) is True
        for model in (ImapInbox, ImapFolder, Message, MessageAddress, SyncRun):
            assert db.session.scalar(sa.select(sa.func.count()).select_from(model)) == 0, model
        assert sync_job_id(inbox_id) not in queue().job_ids
        assert service.delete_inbox(inbox_id) is False


def test_a_message_s_inbox_is_its_folder_s(app):
    """One foreign key on (folder_id, inbox_id): a message filed under another inbox's folder is refused."""
    import datetime as dt

    with app.app_context():
        inboxes = []
        for email in ("a@team.example", "b@team.example"):
            inbox = ImapInbox(name=email, email=email, host="imap.test", port=993, security="ssl", username=email,
                          password_encrypted=b"not-a-real-secret")
            inbox.folders = [ImapFolder(name="INBOX", role="inbox")]
            db.session.add(inbox)
            inboxes.append(inbox)
        db.session.commit()
        first, second = inboxes

        def message_in(inbox, folder):
            return Message(inbox_id=inbox.id, folder_id=folder.id, uid=1, dedup_key="x@y", direction="in",
                           subject="", from_name="", date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), size=1, flags="")

        db.session.add(message_in(first, first.folders[0]))
        db.session.commit()
        db.session.add(message_in(first, second.folders[0]))
        with pytest.raises(sa.exc.IntegrityError):
            db.session.commit()
        db.session.rollback()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1

        db.session.delete(db.session.get(ImapInbox, first.id))  # through its folders, its messages go too
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


# --------------------------------------------------------------------------- encryption keys


def test_key_is_generated_once_in_the_instance_folder_mode_0600(app):
    with app.app_context():
        token = crypto.encrypt_password("s3cret")
        path = os.path.join(app.instance_path, crypto.KEY_FILE)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        key = open(path).read().strip()
        assert Fernet(key).decrypt(token) == b"s3cret"
        assert crypto.decrypt_password(crypto.encrypt_password("again")) == "again"
        assert open(path).read().strip() == key


def test_configured_keys_and_rotation(crm_app_factory, mailbox):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app = crm_app_factory(IMAP_ENCRYPTION_KEYS=[old])
    owner = make_owner(app)
    inbox_id = connect_inbox(app, mailbox, owner)
    with app.app_context():
        token = bytes(db.session.get(ImapInbox, inbox_id).password_encrypted)
        assert Fernet(old).decrypt(token) == mailbox.password.encode()

    both = crm_app_factory(IMAP_ENCRYPTION_KEYS=f"{new}, {old}")  # a comma-separated string works too
    with both.app_context():
        assert crypto.decrypt_password(token) == mailbox.password  # the old key still decrypts
        assert crypto.rotate_keys() == 1
        rotated = bytes(db.session.get(ImapInbox, inbox_id).password_encrypted)
    assert Fernet(new).decrypt(rotated) == mailbox.password.encode()

    only_new = crm_app_factory(IMAP_ENCRYPTION_KEYS=[new])
    with only_new.app_context():
        assert crypto.decrypt_password(rotated) == mailbox.password
        assert sync_inbox(inbox_id)["status"] == "ok"


def test_unusable_keys_are_explained_without_echoing_them(crm_app_factory, mailbox):
    app = crm_app_factory(IMAP_ENCRYPTION_KEYS=["not-a-fernet-key-secret"])
    with app.app_context():
        with pytest.raises(crypto.EncryptionKeyError) as caught:
            crypto.encrypt_password("x")
        assert "#1" in str(caught.value) and "not-a-fernet-key-secret" not in str(caught.value)


def test_a_password_no_key_can_decrypt_needs_attention(crm_app_factory, mailbox):
    app = crm_app_factory(IMAP_ENCRYPTION_KEYS=[Fernet.generate_key().decode()])
    owner = make_owner(app)
    inbox_id = connect_inbox(app, mailbox, owner)
    other = crm_app_factory(IMAP_ENCRYPTION_KEYS=[Fernet.generate_key().decode()])
    with other.app_context():
        summary = sync_inbox(inbox_id)
        assert summary["status"] == "needs_attention"
        inbox = db.session.get(ImapInbox, inbox_id)
        assert "cannot be decrypted" in inbox.error and "password again" in inbox.error_hint
        with pytest.raises(crypto.EncryptionKeyError):
            crypto.rotate_keys()  # and rotating refuses rather than losing it
