"""Connected inboxes: each row's buttons and links say which inbox they act on ("Sync now: Sales desk")."""
from __future__ import annotations

from host_app.extensions import db
from plugins.imap_inbox.models import ImapInbox
from tests.support.html_tree import Page, row_controls_not_naming_their_row
from tests.support.imap_helpers import connect_inbox
from tests.support.mailbox import Mailbox


def test_every_row_control_names_its_inbox(app, admin_client, admin, mailbox, dovecot):
    support = Mailbox(dovecot, f"support-{mailbox.username}", "pw-support-secret")  # an account of its own
    dovecot.add_user(support.username, support.password)
    first = connect_inbox(app, mailbox, admin, name="Sales desk")
    second = connect_inbox(app, support, admin, name="Support")
    with app.app_context():
        # The second one as a signed-in (OAuth 2.0) inbox that needs attention: Reconnect and "fix the settings".
        inbox = db.session.get(ImapInbox, second)
        inbox.auth, inbox.status, inbox.error = "oauth2", "needs_attention", "Sign in again."
        db.session.get(ImapInbox, first).enabled = False
        db.session.commit()
    r = admin_client.get("/settings/inboxes/")
    assert r.status_code == 200
    page = Page(r.get_data(as_text=True))
    table = page.by_id("inbox-table")
    checked, problems = row_controls_not_naming_their_row(page, table)
    # Sales desk: Sync now, Edit, Enable, Delete…, fix the settings; Support: the same, Reconnect and Disable.
    assert problems == [] and checked == 11
    names = {page.accessible_name(e) for e in page.by_id(f"inbox-{second}").find_all(lambda e: e.tag == "button")}
    assert names == {"Sync now: Support", "Reconnect: Support", "Disable: Support"}
