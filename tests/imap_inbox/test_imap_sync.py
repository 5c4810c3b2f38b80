"""The sync engine against a real Dovecot: initial, incremental, expunge, UIDVALIDITY, read-only, resume."""
from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import threading
import time

import pytest
import sqlalchemy as sa

from host_app.extensions import db
from plugins.imap_inbox.testing import mailgen
from plugins.imap_inbox.testing.dovecot import DovecotServer
from tests.support.imap_helpers import (
    addresses,
    connect_inbox,
    make_owner,
    message,
    server_snapshot,
    stored,
    sync,
)

FORBIDDEN = {"STORE", "EXPUNGE", "COPY", "MOVE", "APPEND", "SELECT", "DELETE", "CREATE", "RENAME", "CLOSE",
             "SUBSCRIBE", "UNSUBSCRIBE"}


@pytest.fixture
def imap_commands(monkeypatch):
    """Every IMAP command the sync sends (``UID FETCH`` etc.), recorded on the real connection."""
    from plugins.imap_inbox import sync as sync_module

    sent: list[str] = []
    real_connect = sync_module.connect

    def spying_connect(settings):
        client = real_connect(settings)
        original = client._imap._command

        def record(name, *args):
            if name.upper() == "UID":
                changedsince = " CHANGEDSINCE" if "CHANGEDSINCE" in " ".join(map(str, args)) else ""
                sent.append(f"UID {str(args[0]).upper()}{changedsince}")
            else:
                sent.append(name.upper())
            return original(name, *args)

        client._imap._command = record
        return client

    monkeypatch.setattr(sync_module, "connect", spying_connect)
    return sent


def inbox_row(app, inbox_id):
    from plugins.imap_inbox.models import ImapInbox

    with app.app_context():
        inbox = db.session.get(ImapInbox, inbox_id)
        db.session.expunge(inbox)
        return inbox


def folder_row(app, inbox_id, name):
    from plugins.imap_inbox.models import ImapFolder

    with app.app_context():
        folder = db.session.scalar(
            db.select(ImapFolder).where(ImapFolder.inbox_id == inbox_id, ImapFolder.name == name))
        db.session.expunge(folder)
        return folder


def assert_unique(rows):
    keys = collections.Counter((r["folder"], r["uid"]) for r in rows)
    assert max(keys.values(), default=1) == 1


# --------------------------------------------------------------------------- initial sync


def test_initial_sync_stores_metadata_of_inbox_and_sent(app, mailbox, owner, imap_commands):
    mailbox.write("INBOX", [
        mailgen.make_message(("Jürgen Müller", "Juergen@Kunde.example"), [mailbox.username], "Grüße aus München",
                             date=dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.UTC), message_id="<k1@kunde.example>",
                             cc=[("Ann", "ann@kunde.example")], charset="iso-8859-1",
                             in_reply_to="<s1@team.example>", references=["<s0@team.example>", "<s1@team.example>"],
                             body="Hallo,\n\ndas Angebot passt.\n"),
        mailgen.make_message("News <news@lists.example>", [mailbox.username], "Weekly digest",
                             date=dt.datetime(2024, 3, 2, tzinfo=dt.UTC), message_id="<n1@lists.example>",
                             headers={"List-Id": "<weekly.lists.example>", "Precedence": "bulk"}),
    ])
    mailbox.write("Sent", [
        mailgen.make_message(mailbox.username, [("Jürgen", "juergen@kunde.example"), "bob@other.example"], "Angebot",
                             date=dt.datetime(2024, 2, 28, tzinfo=dt.UTC), message_id="<s1@team.example>"),
    ])
    inbox_id = connect_inbox(app, mailbox, owner)
    summary = sync(app, inbox_id)

    assert summary["status"] == "ok", summary
    assert summary["new_messages"] == 3
    assert summary["folders"]["INBOX"]["new"] == 2 and summary["folders"]["Sent"]["new"] == 1
    rows = {r["message_id"]: r for r in stored(app, inbox_id)}
    k1 = rows["k1@kunde.example"]
    assert k1["subject"] == "Grüße aus München"
    assert (k1["from_email"], k1["from_name"]) == ("juergen@kunde.example", "Jürgen Müller")
    assert k1["direction"] == "in" and k1["folder"] == "INBOX"
    assert k1["in_reply_to"] == "s1@team.example"
    assert k1["references"] == "s0@team.example s1@team.example"
    assert k1["automated"] is False and k1["parse_error"] is None
    assert k1["date"].replace(tzinfo=None) == dt.datetime(2024, 3, 1, 10, 0)
    assert k1["size"] > 0 and k1["dedup_key"] == "k1@kunde.example"
    assert "das Angebot passt" in (k1["preview"] or "")
    assert rows["n1@lists.example"]["automated"] is True
    assert rows["n1@lists.example"]["list_id"] == "<weekly.lists.example>"
    sent = rows["s1@team.example"]
    assert sent["direction"] == "out" and sent["folder"] == "Sent"
    roles = {(role, email) for pk, role, email in addresses(app, inbox_id) if pk == sent["id"]}
    assert roles == {("from", mailbox.username), ("to", "juergen@kunde.example"), ("to", "bob@other.example")}
    k1_roles = {(role, email) for pk, role, email in addresses(app, inbox_id) if pk == k1["id"]}
    assert ("cc", "ann@kunde.example") in k1_roles

    inbox = inbox_row(app, inbox_id)
    assert inbox.status == "ok" and inbox.message_count == 3
    assert inbox.progress_done == inbox.progress_total == 3
    assert inbox.last_synced_at is not None and inbox.next_sync_at is not None
    assert "EXAMINE" in imap_commands and not FORBIDDEN & set(imap_commands)


def test_bcc_is_stored_for_our_emails_only(app, mailbox, owner):
    alias = "desk-alias@team.example"  # not the inbox's own address: ours only by being in Sent
    mailbox.write("INBOX", [
        # Some servers leave Bcc on delivered mail; it names nobody we wrote to.
        message(1, headers={"Bcc": "someone-else@customer.example, " + mailbox.username}),
        # Written in another mail client and filed in INBOX: ours by its From.
        message(2, sender=mailbox.username, to="ann@kunde.example", headers={"Bcc": "boss@kunde.example"}),
    ])
    mailbox.write("Sent", [
        message(3, sender=mailbox.username, to="juergen@kunde.example",
                headers={"Bcc": "Bea Boss <Bea@Kunde.example>, audit@kunde.example"}),
        message(4, sender=alias, to="zoe@kunde.example", headers={"Bcc": "zoe-boss@kunde.example"}),
    ])
    inbox_id = connect_inbox(app, mailbox, owner)
    assert sync(app, inbox_id)["status"] == "ok"

    rows = {r["uid"] if r["folder"] == "INBOX" else 10 + r["uid"]: r for r in stored(app, inbox_id)}
    incoming, ours_in_inbox, sent, sent_by_alias = rows[1], rows[2], rows[11], rows[12]

    def roles(row):
        return {(role, email) for pk, role, email in addresses(app, inbox_id) if pk == row["id"]}

    assert incoming["direction"] == "in" and incoming["parse_error"] is None
    assert roles(incoming) == {("from", "carla@customer.example"), ("to", "team@team.example")}
    assert ours_in_inbox["direction"] == "out"
    assert ("bcc", "boss@kunde.example") in roles(ours_in_inbox)
    assert roles(sent) == {("from", mailbox.username), ("to", "juergen@kunde.example"),
                           ("bcc", "bea@kunde.example"), ("bcc", "audit@kunde.example")}
    assert sent_by_alias["direction"] == "out" and ("bcc", "zoe-boss@kunde.example") in roles(sent_by_alias)

    # Sent losing its role makes the alias's e-mail incoming: its Bcc rows go, the inbox's own stay.
    from plugins.mail import store

    sent_folder = folder_row(app, inbox_id, "Sent")
    with app.app_context():
        store.set_direction(sent_folder.id, None, {mailbox.username})
        db.session.commit()
    assert {r["uid"]: r["direction"] for r in stored(app, inbox_id, "Sent")} == {1: "out", 2: "in"}
    assert not [r for r in roles(sent_by_alias) if r[0] == "bcc"]
    assert ("bcc", "bea@kunde.example") in roles(sent)


def test_sync_never_changes_the_mailbox(app, mailbox, owner, imap_commands):
    for n in range(1, 7):
        mailbox.append("INBOX", message(n), flags=["\\Seen"] if n % 2 else [])
    mailbox.append("INBOX", message(7), flags=["\\Flagged", "\\Answered"])
    mailbox.append("Sent", message(8, sender=mailbox.username), flags=["\\Seen"])
    before = server_snapshot(mailbox)
    inbox_id = connect_inbox(app, mailbox, owner)
    assert sync(app, inbox_id)["status"] == "ok"
    mailbox.append("INBOX", message(9))  # an incremental run too
    before_second = server_snapshot(mailbox)
    assert sync(app, inbox_id)["new_messages"] == 1

    assert server_snapshot(mailbox)["Sent"] == before["Sent"]
    assert server_snapshot(mailbox) == before_second
    assert before["INBOX"][0][b"UNSEEN"] == 4
    assert not FORBIDDEN & set(imap_commands), imap_commands
    fetches = [c for c in imap_commands if c.startswith("UID FETCH")]
    assert fetches
    flags = {r["uid"]: r["flags"] for r in stored(app, inbox_id, "INBOX")}
    assert flags[7] == "\\Answered \\Flagged" and flags[1] == "\\Seen" and flags[2] == ""


# --------------------------------------------------------------------------- incremental sync


def test_unchanged_mailbox_needs_no_examine_and_no_fetch(app, mailbox, owner, imap_commands):
    mailbox.write("INBOX", [message(n) for n in range(1, 4)])
    inbox_id = connect_inbox(app, mailbox, owner)
    sync(app, inbox_id)
    imap_commands.clear()
    summary = sync(app, inbox_id)
    assert summary["status"] == "ok" and summary["new_messages"] == 0
    assert summary["folders"]["INBOX"]["unchanged"] and summary["folders"]["Sent"]["unchanged"]
    assert "EXAMINE" not in imap_commands and "SELECT" not in imap_commands
    assert not [c for c in imap_commands if c.startswith("UID")], imap_commands
    assert imap_commands.count("STATUS") == 2
    # The folders synced before are asked first: Dovecot answers a STATUS after a LIST far slower.
    assert imap_commands.index("LIST") > max(i for i, c in enumerate(imap_commands) if c == "STATUS")


def test_new_mail_is_fetched_alone(app, mailbox, owner, imap_commands):
    mailbox.write("INBOX", [message(n) for n in range(1, 6)])
    inbox_id = connect_inbox(app, mailbox, owner)
    sync(app, inbox_id)
    first = {r["uid"]: r["id"] for r in stored(app, inbox_id)}
    mailbox.append("INBOX", message(6))
    mailbox.append("Sent", message(7, sender=mailbox.username, to="carla@customer.example"))
    imap_commands.clear()
    summary = sync(app, inbox_id)
    assert summary["new_messages"] == 2
    assert summary["folders"]["INBOX"]["new"] == 1 and summary["folders"]["Sent"]["new"] == 1
    rows = stored(app, inbox_id)
    assert len(rows) == 7
    assert_unique(rows)
    assert {r["uid"]: r["id"] for r in rows if r["folder"] == "INBOX" and r["uid"] in first} == first
    assert "UID SEARCH" in imap_commands
    assert imap_commands.count("UID FETCH") == 2  # one per folder with new mail, nothing refetched


def test_expunged_messages_are_removed(app, mailbox, dovecot, owner):
    mailbox.write("INBOX", [message(n) for n in range(1, 8)])
    inbox_id = connect_inbox(app, mailbox, owner)
    sync(app, inbox_id)
    dovecot.expunge(mailbox.username, "INBOX", [2, 5])
    mailbox.append("INBOX", message(8))  # same count as before + new: still noticed
    mailbox.append("INBOX", message(9))
    dovecot.expunge(mailbox.username, "INBOX", [3])
    summary = sync(app, inbox_id)
    assert summary["removed_messages"] == 3 and summary["new_messages"] == 2
    uids = [r["uid"] for r in stored(app, inbox_id, "INBOX")]
    assert uids == [1, 4, 6, 7, 8, 9]
    assert addresses(app, inbox_id) and all(
        pk in {r["id"] for r in stored(app, inbox_id)} for pk, _, _ in addresses(app, inbox_id))
    assert inbox_row(app, inbox_id).message_count == 6


def test_flag_changes_are_picked_up_with_condstore(app, mailbox, owner):
    mailbox.write("INBOX", [message(n) for n in range(1, 4)])
    inbox_id = connect_inbox(app, mailbox, owner)
    sync(app, inbox_id)
    with mailbox.client() as imap:  # another mail program reads and flags mail
        imap.select_folder("INBOX")
        imap.add_flags([1], [b"\\Seen"])
        imap.add_flags([3], [b"\\Flagged"])
    summary = sync(app, inbox_id)
    assert summary["updated_messages"] == 2 and summary["new_messages"] == 0
    flags = {r["uid"]: r["flags"] for r in stored(app, inbox_id, "INBOX")}
    assert flags == {1: "\\Seen", 2: "", 3: "\\Flagged"}


def test_uidvalidity_change_rematches_by_message_id(app, mailbox, dovecot, owner):
    originals = [message(n, sender=mailbox.username, message_id=f"<s{n}@team.example>") for n in range(1, 6)]
    mailbox.write("Sent", originals)
    mailbox.write("Sent", [mailgen.make_message(mailbox.username, "x@customer.example", "no id here",
                                                date=dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
                                                message_id="")])
    inbox_id = connect_inbox(app, mailbox, owner)
    sync(app, inbox_id)
    before = {r["dedup_key"]: r for r in stored(app, inbox_id, "Sent")}
    assert len(before) == 6
    old_validity = folder_row(app, inbox_id, "Sent").uidvalidity

    new_validity = dovecot.recreate_folder(mailbox.username, "Sent")
    # The folder comes back with 4 of the 5 messages (new UIDs, other order), the id-less one, and a new one.
    for raw in [originals[4], originals[0], originals[2], originals[3]]:
        mailbox.append("Sent", raw)
    mailbox.append("Sent", mailgen.make_message(mailbox.username, "x@customer.example", "no id here",
                                                date=dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
                                                message_id=""))
    mailbox.append("Sent", message(9, sender=mailbox.username, message_id="<s9@team.example>"))
    summary = sync(app, inbox_id)

    assert summary["status"] == "ok"
    assert summary["folders"]["Sent"]["uidvalidity_changed"] is True
    assert summary["folders"]["Sent"]["new"] == 1 and summary["folders"]["Sent"]["removed"] == 1
    assert summary["folders"]["Sent"]["updated"] == 5
    after = {r["dedup_key"]: r for r in stored(app, inbox_id, "Sent")}
    assert_unique(stored(app, inbox_id))
    assert set(after) == (set(before) - {"s2@team.example"}) | {"s9@team.example"}
    for key in set(before) & set(after):
        assert after[key]["id"] == before[key]["id"]  # updated in place, addresses kept
    assert sorted(r["uid"] for r in after.values()) == [1, 2, 3, 4, 5, 6]
    assert after["s5@team.example"]["uid"] == 1
    folder = folder_row(app, inbox_id, "Sent")
    assert folder.uidvalidity == new_validity != old_validity and folder.initial_done
    assert sync(app, inbox_id)["folders"]["Sent"]["unchanged"]


# --------------------------------------------------------------------------- folders


def test_extra_folders_and_a_missing_one(app, mailbox, dovecot, owner):
    dovecot.create_folder(mailbox.username, "Projects/Acme")
    mailbox.write("Projects/Acme", [message(n) for n in range(1, 3)])
    inbox_id = connect_inbox(app, mailbox, owner, extra_folders=["projects/acme", "Nope"])
    summary = sync(app, inbox_id)
    assert summary["status"] == "ok"
    assert summary["folders"]["Projects/Acme"]["new"] == 2
    assert summary["folders"]["Projects/Acme"]["role"] == "other"
    assert summary["missing_folders"] == ["Nope"]
    inbox = inbox_row(app, inbox_id)
    assert "Nope" in inbox.error  # a warning for the admin; the sync itself is fine
    from plugins.imap_inbox import service
    from plugins.imap_inbox.models import ImapInbox

    with app.app_context():
        service.update_inbox(db.session.get(ImapInbox, inbox_id), extra_folders=[], check=False)
    summary = sync(app, inbox_id)
    assert summary["folders"]["Projects/Acme"]["removed"] == 2
    assert {r["folder"] for r in stored(app, inbox_id)} == set()


def test_a_synced_folder_deleted_on_the_server_is_reported_missing(app, mailbox, dovecot, owner):
    dovecot.create_folder(mailbox.username, "Projects/Gone")
    mailbox.write("Projects/Gone", [message(n) for n in range(1, 3)])
    mailbox.write("INBOX", [message(n) for n in range(1, 3)])
    inbox_id = connect_inbox(app, mailbox, owner, extra_folders=["Projects/Gone"])
    assert sync(app, inbox_id)["folders"]["Projects/Gone"]["new"] == 2
    client = dovecot.client(mailbox.username)
    try:
        client.delete_folder("Projects/Gone")
    finally:
        client.logout()
    summary = sync(app, inbox_id)  # its STATUS is refused: no crash, and the LIST decides
    assert summary["status"] == "ok"
    assert summary["missing_folders"] == ["Projects/Gone"]
    assert summary["folders"]["Projects/Gone"]["removed"] == 2
    assert {r["folder"] for r in stored(app, inbox_id)} == {"INBOX"}


@pytest.fixture(scope="module")
def localized_server():
    """A server whose Sent folder has a German name and no \\Sent flag."""
    with DovecotServer(sent_folder="Gesendete Objekte", sent_special_use=False) as server:
        yield server


def test_sent_folder_found_by_localized_name(app, localized_server, owner):
    from tests.support.mailbox import Mailbox

    localized_server.add_user("de@team.example", "pw-de-1")
    mailbox = Mailbox(localized_server, "de@team.example", "pw-de-1")
    mailbox.write("Gesendete Objekte", [message(1, sender="de@team.example")])
    mailbox.write("INBOX", [message(2, sender="de@team.example")])  # sent to ourselves: out as well
    inbox_id = connect_inbox(app, mailbox, owner)
    summary = sync(app, inbox_id)
    assert summary["sent_folder_found"] is True
    rows = stored(app, inbox_id)
    assert {(r["folder"], r["direction"]) for r in rows} == {("Gesendete Objekte", "out"), ("INBOX", "out")}


# --------------------------------------------------------------------------- real-world mail


def test_malformed_corpus_syncs_without_a_crash(app, mailbox, owner):
    corpus = mailgen.malformed_corpus()
    mailbox.write("INBOX", [raw for _, raw in corpus])
    inbox_id = connect_inbox(app, mailbox, owner)
    summary = sync(app, inbox_id)
    assert summary["status"] == "ok", summary
    rows = stored(app, inbox_id, "INBOX")
    assert len(rows) == len(corpus)  # every message stored (flagged when broken), none lost
    by_uid = {r["uid"]: r for r in rows}
    names = {uid: name for uid, (name, _) in enumerate(corpus, start=1)}
    flagged = {names[uid] for uid, r in by_uid.items() if r["parse_error"]}
    assert summary["flagged_messages"] == len(flagged)
    assert {"empty_message", "invalid_date_text", "from_no_domain", "unknown_charset_encoded_word"} <= flagged
    assert "headers_only_with_blank_line" not in flagged
    named = {names[uid]: r for uid, r in by_uid.items()}
    # Dovecot hands a NUL in a header over as byte 0x80; either way no NUL reaches the database.
    assert named["nul_byte_in_subject"]["subject"] in ("nulinside", "nul€inside")
    assert named["raw_8bit_utf8_subject"]["subject"] == "Grüße aus Köln – 東京"
    assert named["unknown_charset_encoded_word"]["subject"] == "café"
    assert named["invalid_date_text"]["date"] is not None
    assert named["missing_message_id"]["dedup_key"].startswith("sha1:")
    assert named["from_unbalanced_quote"]["from_email"] == "john@example.com"
    assert len(named["very_long_references_one_line"]["references"].split()) == 200
    for r in rows:
        assert r["date"] is not None and r["dedup_key"]


# --------------------------------------------------------------------------- failures and resuming


@contextlib.contextmanager
def inbox_on_a_server_of_its_own(app, owner: int, count: int):
    """A Dovecot that a test may stop and start, its INBOX holding ``count`` messages, connected as an inbox;
    yields ``(server, inbox_id)``."""
    from tests.support.mailbox import Mailbox

    with DovecotServer() as server:
        server.add_user("big@team.example", "pw-big-1")
        mailbox = Mailbox(server, "big@team.example", "pw-big-1")
        mailbox.write("INBOX", [message(n) for n in range(1, count + 1)])
        yield server, connect_inbox(app, mailbox, owner)


def test_connection_dropped_mid_sync_resumes_without_duplicates(crm_app_factory, owner_factory):
    # A commit per batch (no groups, see folder_sync.py "Commits"), so the server is stopped after the second.
    app = crm_app_factory(IMAP_FETCH_BATCH=100, IMAP_COMMIT_EVERY=100)
    owner = owner_factory(app)
    with inbox_on_a_server_of_its_own(app, owner, 450) as (server, inbox_id):

        def stop_after_two_batches(done, total):
            if done >= 200 and server.running:
                server.stop()

        first = sync(app, inbox_id, on_progress=stop_after_two_batches)
        assert first["status"] == "failed", first
        assert first["error_kind"] in ("server_error", "connection_refused")
        partial = stored(app, inbox_id, "INBOX")
        # Whole batches only (the next FETCH may already have been answered when the server went away).
        assert len(partial) in (200, 300)
        low = 451 - len(partial)
        assert [r["uid"] for r in partial] == list(range(low, 451))  # newest first
        assert folder_row(app, inbox_id, "INBOX").low_uid == low
        inbox = inbox_row(app, inbox_id)
        assert inbox.status == "error" and inbox.failures == 1 and inbox.progress_done == len(partial)

        server.start()
        second = sync(app, inbox_id)
        assert second["status"] == "ok", second
        assert second["new_messages"] == 450 - len(partial)  # nothing fetched twice
        rows = stored(app, inbox_id, "INBOX")
        assert [r["uid"] for r in rows] == list(range(1, 451))
        assert_unique(rows)
        assert inbox_row(app, inbox_id).failures == 0


def test_a_server_lost_mid_group_keeps_what_was_read_and_counts_it_once(crm_app_factory, owner_factory):
    """Batches committed in groups (folder_sync.py "Commits"), and the server goes away: what was read is
    committed before the sync tries to reconnect, the run counts exactly what it stored, the next run the rest."""
    app = crm_app_factory(IMAP_FETCH_BATCH=100, IMAP_COMMIT_EVERY=300)
    owner = owner_factory(app)
    with inbox_on_a_server_of_its_own(app, owner, 1000) as (server, inbox_id):
        reported = []

        def stop_at_the_first_commit(done, total):
            reported.append(done)
            if done and server.running:
                server.stop()

        first = sync(app, inbox_id, on_progress=stop_at_the_first_commit)
        assert first["status"] == "failed", first
        committed = [done for done in reported if done]
        assert committed and committed[0] in (100, 200, 300), reported  # whole batches, at most one group
        partial = stored(app, inbox_id, "INBOX")
        # Read before the server went away: a batch or two more, committed before the sync reconnected.
        assert len(partial) % 100 == 0 and committed[0] <= len(partial) < 1000
        assert first["new_messages"] == len(partial)
        assert inbox_row(app, inbox_id).progress_done == len(partial)

        server.start()
        second = sync(app, inbox_id)
        assert second["status"] == "ok" and second["new_messages"] == 1000 - len(partial), second
        rows = stored(app, inbox_id, "INBOX")
        assert [r["uid"] for r in rows] == list(range(1, 1001))
        assert_unique(rows)


def test_a_pending_fetch_tells_when_its_answer_is_arriving(app, mailbox, owner):
    """What decides whether batches wait for one commit: bytes of the next answer already on the socket."""
    from plugins.imap_inbox.account import settings_for
    from plugins.imap_inbox.connection import close, connect
    from plugins.imap_inbox.fetch import PendingFetch
    from plugins.imap_inbox.models import ImapInbox

    mailbox.write("INBOX", [message(n) for n in range(1, 4)])
    inbox_id = connect_inbox(app, mailbox, owner)
    with app.app_context():
        client = connect(settings_for(db.session.get(ImapInbox, inbox_id)))
        try:
            client.select_folder("INBOX", readonly=True)
            pending = PendingFetch(client, [1, 2, 3])
            deadline = time.monotonic() + 10
            while not pending.answer_arriving():
                assert time.monotonic() < deadline, "the server's answer never showed on the socket"
                time.sleep(0.01)
            assert sorted(pending.result()) == [1, 2, 3]
            assert not pending.answer_arriving()  # all of it read; nothing else was asked
        finally:
            close(client)


@contextlib.contextmanager
def server_with_an_unreadable_message(app, owner_id: int, count: int, unreadable_uid: int):
    """A Dovecot of its own whose INBOX holds ``count`` messages, the one with ``unreadable_uid`` unreadable
    by the server (file mode 0); yields ``(server, mailbox, inbox_id, path of that message's file)``."""
    import glob
    import os

    from tests.support.mailbox import Mailbox

    with DovecotServer() as server:
        server.add_user("poison@team.example", "pw-poison-1")
        mailbox = Mailbox(server, "poison@team.example", "pw-poison-1")
        mailbox.write("INBOX", [message(n) for n in range(1, count + 1)])
        server.warm(mailbox.username)
        path = sorted(glob.glob(os.path.join(server.maildir(mailbox.username), "cur", "*")))[unreadable_uid - 1]
        os.chmod(path, 0)
        yield server, mailbox, connect_inbox(app, mailbox, owner_id), path


def test_a_message_the_server_cannot_read_does_not_stop_the_sync(crm_app_factory, owner_factory):
    """Dovecot answers a FETCH of an unreadable message file with BYE; the sync isolates it and goes on."""
    app = crm_app_factory(IMAP_FETCH_BATCH=100)
    with server_with_an_unreadable_message(app, owner_factory(app), 250, 137) as (_, _, inbox_id, _):
        # Twice it is skipped (a flaky link could have been to blame) while everything else is stored ...
        for strike in (1, 2):
            summary = sync(app, inbox_id)
            assert summary["status"] == "ok", summary
            assert summary["folders"]["INBOX"]["skipped"] == [137]
            assert sorted(r["uid"] for r in stored(app, inbox_id, "INBOX")) == [u for u in range(1, 251) if u != 137]
            assert folder_row(app, inbox_id, "INBOX").unreadable == {"137": strike}
        # ... the third time it is stored as unreadable, flagged, and no longer retried.
        summary = sync(app, inbox_id)
        assert summary["status"] == "ok" and summary["new_messages"] == 1 and summary["flagged_messages"] == 1
        rows = {r["uid"]: r for r in stored(app, inbox_id, "INBOX")}
        assert sorted(rows) == list(range(1, 251))
        assert "could not give this message" in rows[137]["parse_error"]
        assert all(r["parse_error"] is None for uid, r in rows.items() if uid != 137)
        assert folder_row(app, inbox_id, "INBOX").unreadable is None
        assert sync(app, inbox_id)["folders"]["INBOX"]["unchanged"]  # counted as stored: no endless retries


def test_a_message_skipped_once_is_stored_normally_when_it_reads_again(crm_app_factory, owner_factory):
    import os

    app = crm_app_factory(IMAP_FETCH_BATCH=100)
    with server_with_an_unreadable_message(app, owner_factory(app), 30, 10) as (server, mailbox, inbox_id, path):
        assert sync(app, inbox_id)["folders"]["INBOX"]["skipped"] == [10]
        os.chmod(path, 0o600)  # readable again (e.g. the storage recovered) ...
        server.expunge(mailbox.username, "INBOX", [3])  # ... and one expunge makes the count add up again
        summary = sync(app, inbox_id)
        assert summary["removed_messages"] == 1
        assert summary["new_messages"] == 1 and summary["flagged_messages"] == 0
        assert sorted(r["uid"] for r in stored(app, inbox_id, "INBOX")) == [u for u in range(1, 31) if u != 3]
        assert folder_row(app, inbox_id, "INBOX").unreadable is None


@pytest.fixture
def owner_factory():
    return make_owner


def test_server_down_is_retried_with_backoff(app, owner):
    from plugins.imap_inbox.jobs import schedule_due_syncs

    with DovecotServer() as server:
        server.add_user("flaky@team.example", "pw-flaky-1")
        from tests.support.mailbox import Mailbox

        mailbox = Mailbox(server, "flaky@team.example", "pw-flaky-1")
        mailbox.write("INBOX", [message(1)])
        inbox_id = connect_inbox(app, mailbox, owner)
        server.stop()
        delays = []
        for _ in range(2):
            before = dt.datetime.now(dt.UTC)
            summary = sync(app, inbox_id)
            assert summary["status"] == "failed" and summary["error_kind"] == "connection_refused"
            inbox = inbox_row(app, inbox_id)
            assert inbox.status == "error" and "No IMAP server answered" in inbox.error
            retry_at = inbox.next_sync_at.replace(tzinfo=dt.UTC)
            delays.append((retry_at - before).total_seconds())
        assert 55 <= delays[0] <= 65 and 115 <= delays[1] <= 125  # 1 minute, then 2
        with app.app_context():
            assert schedule_due_syncs()["enqueued"] == []  # not due yet
        server.start()
        assert sync(app, inbox_id)["status"] == "ok"
        inbox = inbox_row(app, inbox_id)
        assert inbox.failures == 0 and inbox.error is None and inbox.message_count == 1


def test_wrong_password_needs_attention_until_the_credentials_change(app, mailbox, dovecot, owner, caplog):
    from plugins.imap_inbox import service
    from plugins.imap_inbox.jobs import schedule_due_syncs, sync_job_id
    from plugins.imap_inbox.models import ImapInbox

    caplog.set_level(logging.DEBUG)
    mailbox.write("INBOX", [message(1)])
    inbox_id = connect_inbox(app, mailbox, owner)
    new_password = "Changed-Pass-777"
    dovecot.add_user(mailbox.username, new_password)  # the password was changed at the provider
    summary = sync(app, inbox_id)
    assert summary["status"] == "needs_attention"
    assert summary["error_kind"] == "auth_failed"
    inbox = inbox_row(app, inbox_id)
    assert inbox.status == "needs_attention" and inbox.next_sync_at is None
    assert "rejected the user name or password" in inbox.error
    assert mailbox.password not in inbox.error + (inbox.error_hint or "")
    with app.app_context():
        db.session.execute(sa.update(ImapInbox).where(ImapInbox.id == inbox_id)
                           .values(next_sync_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
        db.session.commit()
        assert schedule_due_syncs()["enqueued"] == []  # no automatic retries

        service.update_inbox(db.session.get(ImapInbox, inbox_id), password=new_password)
        inbox = db.session.get(ImapInbox, inbox_id)
        assert inbox.status == "queued" and inbox.error is None
        from host_app.jobs import queue

        assert sync_job_id(inbox_id) in queue().job_ids
    assert sync(app, inbox_id)["status"] == "ok"
    for secret in (mailbox.password, new_password):
        assert secret not in caplog.text


def test_two_workers_racing_for_one_inbox_sync_it_once(app, mailbox, owner):
    mailbox.write("INBOX", [message(n) for n in range(1, 4)])
    inbox_id = connect_inbox(app, mailbox, owner)
    inside = threading.Event()
    release = threading.Event()
    results = {}

    def hold(done, total):
        inside.set()
        release.wait(30)

    def first():
        results["first"] = sync(app, inbox_id, on_progress=hold)

    worker = threading.Thread(target=first)
    worker.start()
    assert inside.wait(30)
    results["second"] = sync(app, inbox_id)
    release.set()
    worker.join(60)
    assert results["second"] == {"inbox_id": inbox_id, "status": "already_running"}
    assert results["first"]["status"] == "ok" and results["first"]["new_messages"] == 3
    assert len(stored(app, inbox_id)) == 3
    assert sync(app, inbox_id)["status"] == "ok"  # the lock is free again


def test_deleting_the_inbox_mid_sync_stops_it_cleanly(crm_app_factory, mailbox, owner_factory):
    from plugins.imap_inbox import service

    app = crm_app_factory(IMAP_FETCH_BATCH=2)
    owner = owner_factory(app)
    mailbox.write("INBOX", [message(n) for n in range(1, 7)])
    inbox_id = connect_inbox(app, mailbox, owner)

    def delete_after_first_batch(done, total):
        if done >= 2:  # an admin deletes the inbox from the web app meanwhile
            def delete():
                with app.app_context():
                    service.delete_inbox(inbox_id)
            other = threading.Thread(target=delete)
            other.start()
            other.join(30)

    summary = sync(app, inbox_id, on_progress=delete_after_first_batch)
    assert summary["status"] == "deleted"
    assert stored(app, inbox_id) == []


def test_disabled_inbox_is_not_synced(app, mailbox, owner):
    from plugins.imap_inbox import service
    from plugins.imap_inbox.models import ImapInbox

    inbox_id = connect_inbox(app, mailbox, owner)
    with app.app_context():
        service.set_enabled(db.session.get(ImapInbox, inbox_id), False)
    assert sync(app, inbox_id)["status"] == "disabled"
    assert inbox_row(app, inbox_id).status == "disabled"


# --------------------------------------------------------------------------- rows built beside the sync


def test_rows_built_in_the_helper_process_equal_rows_built_in_process(crm_app_factory, mailbox, caplog):
    from plugins.imap_inbox import service
    from tests.support.sync_dump import canonical_dump

    corpus = [raw for _, raw in mailgen.malformed_corpus()]
    generated = list(mailgen.generate_mailbox(300, 30, owner=mailbox.username, correspondents=60, seed=7))
    mailbox.write("INBOX", corpus + [raw for folder, raw in generated if folder == "INBOX"])
    mailbox.write("Sent", [raw for folder, raw in generated if folder == "Sent"])
    helper = crm_app_factory(IMAP_FETCH_BATCH=40, IMAP_LARGE_SYNC_FROM=1)
    in_process = crm_app_factory(IMAP_FETCH_BATCH=40, IMAP_LARGE_SYNC_FROM=10**9)
    owner_id = make_owner(helper)
    with caplog.at_level(logging.DEBUG, logger="plugins.imap_inbox.folder_sync"):
        first = connect_inbox(helper, mailbox, owner_id)
        assert sync(helper, first)["status"] == "ok"
        assert "in a helper process" in caplog.text
        with helper.app_context():
            built_beside = canonical_dump(first)
            service.delete_inbox(first)
        caplog.clear()
        second = connect_inbox(in_process, mailbox, owner_id)
        assert sync(in_process, second)["status"] == "ok"
        assert "in a helper process" not in caplog.text
    with in_process.app_context():
        built_here = canonical_dump(second)
    assert sum(map(len, built_here.values())) == len(corpus) + len(generated)
    assert built_beside == built_here


def test_a_dead_helper_process_costs_no_rows():
    import datetime as dt
    import os
    import signal

    from plugins.imap_inbox.fetch import FetchedMessage
    from plugins.imap_inbox.rows import RowBuilder, build_batch
    from plugins.mail.rows import RowContext

    context = RowContext(inbox_id=1, folder_id=2, folder_role="inbox", own_addresses=frozenset({"team@x.example"}),
                         now=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    batch = {uid: FetchedMessage(uid=uid, header=message(uid).split(b"\r\n\r\n")[0] + b"\r\n\r\n", size=100)
             for uid in range(1, 30)}
    with RowBuilder(parallel=True, dialect="sqlite") as builder:
        assert builder.parallel
        assert builder.submit(context, batch).result() == build_batch(context, batch.values(), "sqlite")
        for process in list(builder._pool._processes.values()):
            os.kill(process.pid, signal.SIGKILL)
            process.join(5)
        built = builder.submit(context, batch).result()  # the helper is gone: built here instead
        assert not builder.parallel
    assert built == build_batch(context, batch.values(), "sqlite")
    assert built.prepared.uids == [message.uid for message in built.mail] == sorted(batch, reverse=True)


def test_a_fetched_message_crosses_to_the_helper_whole():
    import dataclasses
    import pickle

    from plugins.imap_inbox.fetch import FetchedMessage

    defaults = FetchedMessage(uid=1)
    unusual = FetchedMessage(uid=7, flags="\\Seen", internal_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), size=42,
                             header=b"Subject: x\r\n\r\n", preview="hello", text=b"body", complete=False)
    # Every field differs from its default, so a field left out of FetchedMessage.__reduce__ shows.
    assert all(getattr(unusual, f.name) != getattr(defaults, f.name) for f in dataclasses.fields(FetchedMessage))
    assert pickle.loads(pickle.dumps(unusual)) == unusual
